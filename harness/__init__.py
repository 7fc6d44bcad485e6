"""attestlab: decide whether an accelerator card can be trusted, with signed evidence."""

__version__ = "0.1.0"
