"""NVIDIA GPU attestation reports: parse and verify what NVML's report says and who signed it.

`nvmlDeviceGetConfComputeGpuAttestationReport` returns the SPDM 1.1 GET_MEASUREMENTS request
NVML sent (with the caller's 32-byte nonce) followed by the GPU's MEASUREMENTS response
(`harness.formats.spdm`), signed with ECDSA P-384/SHA-384 (96 bytes, r‖s) by the key of the leaf
of the GPU's certificate chain (`nvmlDeviceGetConfComputeGpuCertificate`, PEM, leaf first).

`verify_report` checks, in this order, and raises `AttestationError` naming the first failure:

1. the bytes are one well-formed request/response exchange (every length checked);
2. the request carries the nonce the caller chose (a replayed report carries an old one);
3. the chain leads to the pinned device root at the time given (`harness.formats.x509chain`:
   the GPU's own copy of its root is replaced by the pinned one, as NVIDIA's verifier does);
4. the signature over request ‖ response-without-signature verifies with the leaf's P-384 key;
5. the opaque data is a well-formed list of NVIDIA's fields, read only once authenticated;
6. the firmware id in the opaque data (FWID) is one the leaf certificate was issued for: the
   GSP firmware derives the leaf per firmware and writes its SHA-384 FWID into the certificate's
   TCG DICE TcbInfo extension (2.23.133.5.4.1), so a report from other firmware carries another id.

What this proves: a GPU holding a key that NVIDIA's device CA certified produced these
measurements in answer to this nonce. What it does not prove: that the measurements are the
expected ones (compare them with RIM golden values: `harness.formats.golden`), that the key has
not been revoked since (no CRL/OCSP offline), or that the report came from the card in this slot
(bind the chain's device identity to the board separately).

Opaque data is a list of (type: u16 LE, length: u16 LE, value). The type ids are NVIDIA's
(nvtrust's local verifier names them OPAQUE_FIELD_ID_*); unknown ids are kept by number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from harness.formats import spdm
from harness.formats.golden import Golden, Mismatch, compare_measurements
from harness.formats.x509chain import ChainError, VerifiedChain, load_pem_anchor, load_pem_certificates, verify_chain

SIGNATURE_SIZE = 96  # ECDSA P-384: r and s, 48 bytes each, big-endian
MAX_REPORT = 64 * 1024
_DICE_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")
_SHA384_FWID = bytes.fromhex("0609608648016503040202") + bytes([0x04, 48])  # OID 2.16.840.1.101.3.4.2.2, OCTET STRING(48)

OPAQUE_FIELDS = {
    1: "cert_issuer_name", 2: "cert_authority_key_identifier", 3: "driver_version", 4: "gpu_info",
    5: "sku", 6: "vbios_version", 7: "manufacturer_id", 8: "tamper_detection", 9: "smc", 10: "vpr",
    11: "nvdec0_status", 12: "msrscnt", 13: "cprinfo", 14: "board_id", 15: "chip_sku", 16: "chip_sku_mod",
    17: "project", 18: "project_sku", 19: "project_sku_mod", 20: "fwid", 21: "protected_pcie_status",
    22: "switch_pdi", 23: "floorswept_ports", 24: "position_id", 25: "lock_switch_status",
    32: "gpu_link_conn", 255: "invalid",
}
_TEXT_FIELDS = {"driver_version", "sku", "chip_sku", "chip_sku_mod", "project", "project_sku", "project_sku_mod"}


class AttestationError(ValueError):
    """An attestation report that is malformed, or whose nonce, chain or signature does not verify."""


@dataclass(frozen=True)
class OpaqueData:
    fields: tuple[tuple[int, bytes], ...]   # (type id, value) in report order

    def raw(self, name: str) -> bytes | None:
        wanted = next((k for k, v in OPAQUE_FIELDS.items() if v == name), None)
        return next((value for kind, value in self.fields if kind == wanted), None)

    def text(self, name: str) -> str | None:
        """A NUL-padded ASCII field (driver version, project, SKUs) as text."""
        value = self.raw(name)
        return None if value is None else _ascii(value, name)

    @property
    def driver_version(self) -> str | None:
        return self.text("driver_version")

    @property
    def vbios_version(self) -> str | None:
        """As NVIDIA writes it, e.g. 96.00.9F.00.01 (the RIM's colloquialVersion for the VBIOS)."""
        value = self.raw("vbios_version")
        if value is None:
            return None
        # 8 bytes little-endian: the low 32 bits give the first four components, byte 4 the fifth
        low, fifth = int.from_bytes(value[:4], "little"), value[4]
        return ".".join(f"{b:02X}" for b in (*low.to_bytes(4, "big"), fifth))

    @property
    def measurement_counts(self) -> tuple[int, ...] | None:
        value = self.raw("msrscnt")
        return None if value is None else tuple(int.from_bytes(value[i:i + 4], "little")
                                                for i in range(0, len(value), 4))


@dataclass(frozen=True)
class VerifiedReport:
    exchange: spdm.MeasurementExchange
    chain: VerifiedChain
    opaque: OpaqueData

    @property
    def measurements(self) -> dict[int, bytes]:
        return {b.index: b.value for b in self.exchange.response.blocks}

    @property
    def driver_version(self) -> str | None:
        return self.opaque.driver_version

    @property
    def vbios_version(self) -> str | None:
        return self.opaque.vbios_version


def _ascii(value: bytes, name: str) -> str:
    text = value.rstrip(b"\0")
    if b"\0" in text or not all(0x20 <= c < 0x7F for c in text):
        raise AttestationError(f"opaque data: {name} is not NUL-padded printable ASCII ({value.hex()})")
    return text.decode("ascii")


def parse_opaque_data(data: bytes) -> OpaqueData:
    """NVIDIA's opaque-data fields; AttestationError on a truncated, repeated or malformed field."""
    fields: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            raise AttestationError(f"opaque data: field header at offset {at} needs 4 bytes, {len(data) - at} left")
        kind = int.from_bytes(data[at:at + 2], "little")
        size = int.from_bytes(data[at + 2:at + 4], "little")
        name = OPAQUE_FIELDS.get(kind, f"type {kind}")
        if at + 4 + size > len(data):
            raise AttestationError(f"opaque data: field {name} at offset {at} claims {size} bytes, "
                                   f"{len(data) - at - 4} left")
        if any(k == kind for k, _ in fields):
            raise AttestationError(f"opaque data: field {name} appears twice (second at offset {at})")
        value = data[at + 4:at + 4 + size]
        if name == "vbios_version" and size != 8:
            raise AttestationError(f"opaque data: vbios_version is {size} bytes, not 8")
        if name == "msrscnt" and size % 4:
            raise AttestationError(f"opaque data: msrscnt is {size} bytes, not a multiple of 4")
        if name in _TEXT_FIELDS:
            _ascii(value, name)
        fields.append((kind, value))
        at += 4 + size
    return OpaqueData(tuple(fields))


def parse_report_hex(text: str | bytes) -> bytes:
    """The report bytes from NVIDIA's hex text form (as nvtrust's sample files hold it)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise AttestationError("report hex: not ASCII text") from None
    compact = "".join(text.split())
    try:
        return bytes.fromhex(compact)
    except ValueError as e:
        raise AttestationError(f"report hex: {e}") from None


def verify_report(report: bytes, chain_pem: bytes | str, *, nonce: bytes, device_root_pem: bytes | str,
                  at: datetime) -> VerifiedReport:
    """The report, verified (module docstring, steps 1–5); AttestationError names what failed."""
    if not isinstance(report, (bytes, bytearray)):
        raise AttestationError(f"report must be bytes, got {type(report).__name__}")
    if len(report) > MAX_REPORT:
        raise AttestationError(f"report is {len(report)} bytes, more than the {MAX_REPORT} accepted")
    if not isinstance(nonce, bytes) or len(nonce) != spdm.NONCE_SIZE:
        raise AttestationError(f"the nonce asked for must be {spdm.NONCE_SIZE} bytes")
    try:
        exchange = spdm.parse_exchange(bytes(report), signature_size=SIGNATURE_SIZE)
    except spdm.SpdmError as e:
        raise AttestationError(f"report: {e}") from None
    if exchange.request.nonce != nonce:
        raise AttestationError(f"nonce: the report answers nonce {exchange.request.nonce.hex()}, "
                               f"not the one asked for ({nonce.hex()}): a replayed or foreign report")
    try:
        chain = verify_chain(load_pem_certificates(chain_pem, "device certificate chain"),
                             load_pem_anchor(device_root_pem, "device root"), at=at)
    except ChainError as e:
        raise AttestationError(f"device certificate chain: {e}") from None
    key = chain.leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError(f"device certificate chain: the leaf {chain.leaf_subject} holds no ECDSA P-384 key")
    signature = exchange.response.signature
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), exchange.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise AttestationError(f"signature: the report's signature does not verify with the key of "
                               f"{chain.leaf_subject} (the report was altered or signed by another key)") from None
    opaque = parse_opaque_data(exchange.response.opaque_data)
    _check_fwid(opaque, chain)
    return VerifiedReport(exchange, chain, opaque)


def _certified_fwids(leaf) -> list[bytes]:
    """The SHA-384 FWIDs of the leaf's DICE TcbInfo: each is the DER of OID sha384 then a 48-byte
    OCTET STRING, the FWID entry's two fields, found by that exact byte pattern."""
    try:
        ext = leaf.extensions.get_extension_for_oid(_DICE_TCB_INFO).value.value
    except (x509.ExtensionNotFound, ValueError):  # none, or extensions that do not parse
        return []
    found, at = [], ext.find(_SHA384_FWID)
    while at >= 0 and at + len(_SHA384_FWID) + 48 <= len(ext):
        found.append(ext[at + len(_SHA384_FWID):at + len(_SHA384_FWID) + 48])
        at = ext.find(_SHA384_FWID, at + 1)
    return found


def _check_fwid(opaque: OpaqueData, chain: VerifiedChain) -> None:
    certified = _certified_fwids(chain.leaf)
    fwid = opaque.raw("fwid")
    if not certified:
        return  # a leaf without TcbInfo (older firmware) binds no FWID: nothing to hold the report to
    if fwid is None:
        raise AttestationError(f"fwid: the leaf {chain.leaf_subject} certifies firmware "
                               f"{certified[0].hex()}, the report names none")
    if fwid not in certified:
        raise AttestationError(f"fwid: the report names firmware {fwid.hex()}, the leaf {chain.leaf_subject} "
                               f"was issued for {certified[0].hex()}")


def compare_with_golden(report: VerifiedReport, golden: dict[int, Golden]) -> list[Mismatch]:
    """Every measurement block against the golden table (`harness.formats.golden`)."""
    return compare_measurements(report.measurements, golden)
