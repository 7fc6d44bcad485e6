"""DSSE envelopes of signed results: Ed25519 over PAE(payloadType, payload).

The DSSE core (PAE, canonical base64, signing and verifying with the three key types) is in
harness/formats/dsse.py, shared with signed reference profiles; this module keeps the names the
results code and its verifiers have always used.
"""

from __future__ import annotations

from harness.formats.dsse import (INTOTO_PAYLOAD_TYPE, VerificationError, b64_canonical, pae, sign_envelope,
                                  verify_envelope)

_b64 = b64_canonical  # the name the tests of results have used

__all__ = ["INTOTO_PAYLOAD_TYPE", "VerificationError", "pae", "sign_envelope", "verify_envelope"]
