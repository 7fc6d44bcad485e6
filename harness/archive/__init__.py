"""The archive of signed results: content-addressed blobs, an RFC 6962 Merkle log over the
envelopes, checkpoints signed by the lab's key, and a query index (docs/archive.md).

`store.py` is the archive (append, proofs, verify); `db.py` holds every line of SQL, so that a
second database (PostgreSQL) is one more class of the same shape; `checkpoint.py` makes and
checks signed checkpoints and the inclusion-proof file an auditor checks without the archive.
"""
