"""Capability ID → name, exactly as `lspci -vvv` (pciutils 3.9) names them.

The name is the text lspci prints after `Capabilities: [off]` (or `[off vN]`) up to the first
colon or detail, e.g. `[40] Power Management version 3` → "Power Management",
`[60] Express (v2) Endpoint, MSI 00` → "Express", `[2f0 v1] Device Serial Number a1-...` →
"Device Serial Number". Using lspci's words lets a report be checked line by line against
`lspci -vvv` output of the same device.

The tables cover every ID in the PCI-SIG Code and ID Assignment lists (standard 0x00-0x15,
extended 0x0000-0x0034). Where pciutils 3.9 has no name for an ID it prints a fallback
("Capability ID 0x15", "Extended Capability ID 0x2a"); the table holds that fallback, with the
PCI-SIG name in a comment, so that our output still matches lspci's. Verified against the
installed lspci by tests/test_pci_config.py.
"""

from __future__ import annotations

STANDARD_CAPABILITY_NAMES: dict[int, str] = {
    0x00: "Null",
    0x01: "Power Management",
    0x02: "AGP",
    0x03: "Vital Product Data",
    0x04: "Slot ID",
    0x05: "MSI",
    0x06: "CompactPCI hot-swap",
    0x07: "PCI-X",
    0x08: "HyperTransport",
    0x09: "Vendor Specific Information",
    0x0A: "Debug port",
    0x0B: "CompactPCI central resource control",
    0x0C: "Hot-plug capable",
    0x0D: "Subsystem",  # PCI-SIG: PCI Bridge Subsystem Vendor ID
    0x0E: "AGP3",  # PCI-SIG: AGP 8x
    0x0F: "Secure device",
    0x10: "Express",
    0x11: "MSI-X",
    0x12: "SATA HBA",  # PCI-SIG: Serial ATA Data/Index Configuration
    0x13: "PCI Advanced Features",
    0x14: "Enhanced Allocation (EA)",
    0x15: "Capability ID 0x15",  # PCI-SIG: Flattening Portal Bridge (unknown to lspci 3.9)
}

EXTENDED_CAPABILITY_NAMES: dict[int, str] = {
    0x0000: "Null",
    0x0001: "Advanced Error Reporting",
    0x0002: "Virtual Channel",
    0x0003: "Device Serial Number",
    0x0004: "Power Budgeting",
    0x0005: "Root Complex Link",  # PCI-SIG: Root Complex Link Declaration
    0x0006: "Root Complex Internal Link",  # PCI-SIG: ... Internal Link Control
    0x0007: "Root Complex Event Collector Endpoint Association",
    0x0008: "Multi-Function Virtual Channel",
    0x0009: "Virtual Channel",  # the VC capability when MFVC is also present
    0x000A: "Root Complex Register Block",
    0x000B: "Vendor Specific Information",  # PCI-SIG: Vendor-Specific Extended Capability
    0x000C: "Extended Capability ID 0xc",  # PCI-SIG: Configuration Access Correlation
    0x000D: "Access Control Services",
    0x000E: "Alternative Routing-ID Interpretation (ARI)",
    0x000F: "Address Translation Service (ATS)",
    0x0010: "Single Root I/O Virtualization (SR-IOV)",
    0x0011: "Multi-Root I/O Virtualization",
    0x0012: "Multicast",
    0x0013: "Page Request Interface (PRI)",
    0x0014: "Extended Capability ID 0x14",  # PCI-SIG: reserved for AMD
    0x0015: "Physical Resizable BAR",
    0x0016: "Dynamic Power Allocation",
    0x0017: "Transaction Processing Hints",
    0x0018: "Latency Tolerance Reporting",
    0x0019: "Secondary PCI Express",
    0x001A: "Protocol Multiplexing",
    0x001B: "Process Address Space ID (PASID)",
    0x001C: "LN Requester",
    0x001D: "Downstream Port Containment",
    0x001E: "L1 PM Substates",
    0x001F: "Precision Time Measurement",
    0x0020: "PCI Express over M_PHY",
    0x0021: "FRS Queueing",
    0x0022: "Readiness Time Reporting",
    0x0023: "Designated Vendor-Specific",
    0x0024: "Virtual Resizable BAR",  # PCI-SIG: VF Resizable BAR
    0x0025: "Data Link Feature",
    0x0026: "Physical Layer 16.0 GT/s",
    0x0027: "Lane Margining at the Receiver",
    0x0028: "Hierarchy ID",
    0x0029: "Native PCIe Enclosure Management",
    0x002A: "Extended Capability ID 0x2a",  # PCI-SIG: Physical Layer 32.0 GT/s
    0x002B: "Extended Capability ID 0x2b",  # PCI-SIG: Alternate Protocol
    0x002C: "Extended Capability ID 0x2c",  # PCI-SIG: System Firmware Intermediary
    0x002D: "Extended Capability ID 0x2d",  # PCI-SIG: Shadow Functions
    0x002E: "Data Object Exchange",
    0x002F: "Extended Capability ID 0x2f",  # PCI-SIG: Device 3
    0x0030: "Extended Capability ID 0x30",  # PCI-SIG: Integrity and Data Encryption
    0x0031: "Extended Capability ID 0x31",  # PCI-SIG: Physical Layer 64.0 GT/s
    0x0032: "Extended Capability ID 0x32",  # PCI-SIG: Flit Logging
    0x0033: "Extended Capability ID 0x33",  # PCI-SIG: Flit Performance Measurement
    0x0034: "Extended Capability ID 0x34",  # PCI-SIG: Flit Error Injection
}


def _c_hash_hex(value: int) -> str:
    # lspci formats unknown IDs with C's "%#02x": "0x" prefix, except that 0 prints as "00".
    return f"{value:#x}" if value else "00"


def standard_capability_name(cap_id: int) -> str:
    """lspci's name for a standard (8-bit ID) capability, or its fallback text."""
    return STANDARD_CAPABILITY_NAMES.get(cap_id, f"Capability ID {_c_hash_hex(cap_id)}")


def extended_capability_name(cap_id: int) -> str:
    """lspci's name for an extended (16-bit ID) capability, or its fallback text."""
    return EXTENDED_CAPABILITY_NAMES.get(cap_id, f"Extended Capability ID {_c_hash_hex(cap_id)}")
