"""Build the S/MIME trust-anchor set from Mozilla's ``certdata.txt``.

A PEM bundle such as certifi keeps only certificates and only the TLS
roots. S/MIME needs the per-purpose trust bits (``CKA_TRUST_EMAIL_PROTECTION``)
and the ``CKA_NSS_EMAIL_DISTRUST_AFTER`` dates, which only this file has,
so we parse it directly instead of reusing a TLS bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

TRUSTED_DELEGATOR = "CKT_NSS_TRUSTED_DELEGATOR"

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_UTC_TIME_TAG = 0x17
_GENERALIZED_TIME_TAG = 0x18

Attributes = dict[str, str | bytes]


@dataclass(frozen=True)
class RootEntry:
    """One root certificate joined with its NSS trust object.

    ``sha256`` is derived from ``der`` so the two can never disagree.
    """

    label: str
    der: bytes = field(repr=False)
    email_trust: str
    server_trust: str
    email_distrust_after: datetime | None
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.der).hexdigest())


def parse_certdata(text: str) -> list[RootEntry]:
    """Parse ``certdata.txt`` into roots, in certificate order.

    Certificates and trust objects are paired by ``CKA_ISSUER`` plus
    ``CKA_SERIAL_NUMBER`` (what NSS itself keys trust on), so their order
    in the file does not matter. A certificate without a trust object
    means a truncated or hand-edited file, so it raises rather than
    guessing a trust value. Trust objects without a certificate (NSS
    uses them to distrust by issuer/serial) cannot yield an anchor and
    are ignored.
    """
    certificates: list[Attributes] = []
    trust_by_key: dict[tuple[bytes, bytes], Attributes] = {}
    for obj in _iter_objects(text):
        kind = obj.get("CKA_CLASS")
        if kind == "CKO_CERTIFICATE":
            certificates.append(obj)
        elif kind == "CKO_NSS_TRUST":
            key = _issuer_serial(obj)
            if key in trust_by_key:
                raise ValueError(f"duplicate trust object for {obj.get('CKA_LABEL')!r}")
            trust_by_key[key] = obj
    return [_join(cert, trust_by_key) for cert in certificates]


def email_anchors(entries: Iterable[RootEntry]) -> list[RootEntry]:
    """Keep roots that are S/MIME trust anchors, preserving file order.

    Only ``CKT_NSS_TRUSTED_DELEGATOR`` makes a root an anchor:
    ``CKT_NSS_MUST_VERIFY_TRUST`` means "no trust of its own" and
    ``CKT_NSS_NOT_TRUSTED`` is an explicit distrust (DigiNotar).
    """
    return [entry for entry in entries if entry.email_trust == TRUSTED_DELEGATOR]


def write_bundle(
    entries: Iterable[RootEntry],
    pem_path: str | os.PathLike[str],
    sidecar_path: str | os.PathLike[str],
    source_note: str,
) -> None:
    """Write the PEM bundle and its distrust-after JSON sidecar atomically.

    The PEM format cannot carry the distrust-after dates, so they go to
    the sidecar. The sidecar is replaced first: if we die between the two
    renames, an old PEM paired with a new sidecar is at worst stricter,
    whereas a new PEM with an old sidecar could trust a newly limited
    root without its limit.
    """
    roots = list(entries)
    _atomic_write(Path(sidecar_path), _render_sidecar(roots, source_note))
    _atomic_write(Path(pem_path), _render_pem(roots))


def format_utc(moment: datetime) -> str:
    """Render a UTC instant as ``YYYY-MM-DDTHH:MM:SSZ`` (the sidecar format)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iter_objects(text: str) -> Iterator[Attributes]:
    """Yield each object as {attribute: value}; a ``CKA_CLASS`` line starts one."""
    current: Attributes | None = None
    lines = enumerate(text.splitlines(), start=1)
    for lineno, raw in lines:
        line = raw.strip()
        if not line or line.startswith("#") or line == "BEGINDATA":
            continue
        name, _, rest = line.partition(" ")
        attr_type, _, value = rest.partition(" ")
        if name == "CKA_CLASS":
            if current is not None:
                yield current
            current = {}
        if current is None:
            raise ValueError(f"line {lineno}: attribute before any CKA_CLASS: {line!r}")
        if attr_type == "MULTILINE_OCTAL":
            current[name] = _read_octal_block(lines, name)
        elif attr_type == "UTF8":
            current[name] = _decode_utf8_literal(value)
        else:
            current[name] = value.strip()
    if current is not None:
        yield current


def _read_octal_block(lines: Iterator[tuple[int, str]], name: str) -> bytes:
    """Collect ``\\ooo`` escapes until a line ``END``, refusing anything else."""
    data = bytearray()
    for lineno, raw in lines:
        line = raw.strip()
        if line == "END":
            return bytes(data)
        if _OCTAL_ESCAPE.sub("", line):
            raise ValueError(f"line {lineno}: {name}: unexpected text in MULTILINE_OCTAL")
        data.extend(int(digits, 8) for digits in _OCTAL_ESCAPE.findall(line))
    raise ValueError(f"{name}: MULTILINE_OCTAL value has no END line")


def _decode_utf8_literal(value: str) -> str:
    """Strip the quotes of a UTF8 value (Mozilla writes labels as raw UTF-8)."""
    value = value.strip()
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        raise ValueError(f"UTF8 value is not quoted: {value!r}")
    return value[1:-1]


def _issuer_serial(obj: Attributes) -> tuple[bytes, bytes]:
    """Return the (issuer DER, serial DER) key that ties a cert to its trust."""
    return _octal_attr(obj, "CKA_ISSUER"), _octal_attr(obj, "CKA_SERIAL_NUMBER")


def _octal_attr(obj: Attributes, name: str) -> bytes:
    """Return a MULTILINE_OCTAL attribute, failing loudly if absent or mistyped."""
    value = obj.get(name)
    if isinstance(value, bytes):
        return value
    raise ValueError(f"{obj.get('CKA_LABEL')!r}: {name} missing or not MULTILINE_OCTAL")


def _join(cert: Attributes, trust_by_key: dict[tuple[bytes, bytes], Attributes]) -> RootEntry:
    """Build a RootEntry from a certificate object and its trust object."""
    label = str(cert.get("CKA_LABEL", ""))
    trust = trust_by_key.get(_issuer_serial(cert))
    if trust is None:
        raise ValueError(f"certificate {label!r} has no matching CKO_NSS_TRUST object")
    return RootEntry(
        label=label,
        der=_octal_attr(cert, "CKA_VALUE"),
        email_trust=str(trust.get("CKA_TRUST_EMAIL_PROTECTION", "")),
        server_trust=str(trust.get("CKA_TRUST_SERVER_AUTH", "")),
        email_distrust_after=_distrust_after(cert.get("CKA_NSS_EMAIL_DISTRUST_AFTER")),
    )


def _distrust_after(value: str | bytes | None) -> datetime | None:
    """Map a ``*_DISTRUST_AFTER`` value to a UTC datetime, or None for "no limit".

    A missing attribute and ``CK_BBOOL CK_FALSE`` both mean no date.
    ``CK_TRUE`` is invalid per NSS (it needs a date) so it raises.
    """
    if value is None or value == "CK_FALSE":
        return None
    if isinstance(value, bytes):
        return _parse_asn1_time(value)
    raise ValueError(f"distrust-after must be CK_FALSE or a time, got {value!r}")


def _parse_asn1_time(value: bytes) -> datetime:
    """Parse UTCTime/GeneralizedTime, given as full DER TLV or as bare content.

    Mozilla's file stores the bare 13-byte UTCTime content (NSS decodes it
    without a tag); a full TLV is accepted too so either encoding works.
    """
    is_tlv = len(value) >= 2 and value[1] == len(value) - 2
    if is_tlv and value[0] in (_UTC_TIME_TAG, _GENERALIZED_TIME_TAG):
        value = value[2:]
    text = value.decode("ascii")
    formats = {13: "%y%m%d%H%M%SZ", 15: "%Y%m%d%H%M%SZ"}
    if len(text) not in formats:
        raise ValueError(f"unsupported ASN.1 time {text!r}")
    parsed = datetime.strptime(text, formats[len(text)])
    if len(text) == 13 and parsed.year >= 2050:
        parsed = parsed.replace(year=parsed.year - 100)  # RFC 5280 UTCTime window
    return parsed.replace(tzinfo=UTC)


def _render_pem(roots: list[RootEntry]) -> str:
    """Render the bundle: a label comment (and any distrust date) above each cert."""
    blocks = []
    for root in roots:
        header = f"# {root.label}\n"
        if root.email_distrust_after is not None:
            header += f"# email-distrust-after: {format_utc(root.email_distrust_after)}\n"
        # Plain base64 of the DER: parsing is not needed, and cryptography
        # deprecates serial-0 roots that Mozilla still trusts (e.g. Go Daddy
        # Class 2), so a parse here would one day break the build.
        pem = ssl.DER_cert_to_PEM_cert(root.der)
        blocks.append(header + pem)
    return "\n".join(blocks)


def _render_sidecar(roots: list[RootEntry], source_note: str) -> str:
    """Render the sidecar JSON, keyed by SHA-256 of the DER for exact lookup."""
    dated = {
        root.sha256: {
            "label": root.label,
            "date": format_utc(root.email_distrust_after),
        }
        for root in roots
        if root.email_distrust_after is not None
    }
    document = {
        "source": source_note,
        "roots": len(roots),
        "email_distrust_after": dated,
    }
    return json.dumps(document, indent=2) + "\n"


def _atomic_write(path: Path, content: str) -> None:
    """Replace ``path`` via temp file + rename so readers never see a partial file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp's 0600 is wrong for a public CA bundle
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
