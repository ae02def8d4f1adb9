"""The shipped S/MIME anchor bundle must match Mozilla's certdata.txt exactly.

Counts and selections are re-derived here from the file itself with plain
regexes (not the library), so a stale bundle or a parser bug both fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from smime_collector.certdata import (
    RootEntry,
    email_anchors,
    parse_certdata,
    write_bundle,
)
from smime_collector.resources import SHIPPED_BUNDLE, SHIPPED_DISTRUST
from tests.paths import CERTDATA, REPO

PEM = SHIPPED_BUNDLE
SIDECAR = SHIPPED_DISTRUST
TOOL = REPO / "tools" / "certdata2pem.py"
DELEGATOR = "CKT_NSS_TRUSTED_DELEGATOR"

_TRUST_BLOCK = re.compile(
    r"^CKA_CLASS CK_OBJECT_CLASS CKO_NSS_TRUST\n(.*?)(?=^CKA_CLASS |\Z)",
    re.MULTILINE | re.DOTALL,
)
_LABEL = re.compile(r'^CKA_LABEL UTF8 "(.*)"$', re.MULTILINE)
_TRUST_VALUE = re.compile(r"^(CKA_TRUST_\w+) CK_TRUST (\w+)$", re.MULTILINE)
_PEM_BLOCK = re.compile(
    r"^# ([^\n]*)\n(?:#[^\n]*\n)*"
    r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----",
    re.MULTILINE | re.DOTALL,
)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def certdata_text() -> str:
    return CERTDATA.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def entries(certdata_text: str) -> list[RootEntry]:
    return parse_certdata(certdata_text)


@pytest.fixture(scope="module")
def by_label(entries: list[RootEntry]) -> dict[str, RootEntry]:
    return {entry.label: entry for entry in entries}


@pytest.fixture(scope="module")
def trust_by_label(certdata_text: str) -> dict[str, dict[str, str]]:
    """Trust bits per label, read by regex only (independent of the parser)."""
    table: dict[str, dict[str, str]] = {}
    for block in _TRUST_BLOCK.findall(certdata_text):
        label = _LABEL.search(block).group(1)
        assert label not in table, f"labels should be unique: {label}"
        table[label] = dict(_TRUST_VALUE.findall(block))
    return table


@pytest.fixture(scope="module")
def shipped() -> list[tuple[str, bytes]]:
    """(label comment, DER) for each certificate of the shipped PEM bundle."""
    text = PEM.read_text(encoding="utf-8")
    blocks = [(label, base64.b64decode(body)) for label, body in _PEM_BLOCK.findall(text)]
    assert len(blocks) == text.count("-----BEGIN CERTIFICATE-----")
    return blocks


@pytest.fixture(scope="module")
def shipped_sha256(shipped: list[tuple[str, bytes]]) -> list[str]:
    return [hashlib.sha256(der).hexdigest() for _, der in shipped]


@pytest.fixture(scope="module")
def sidecar() -> dict:
    return json.loads(SIDECAR.read_text(encoding="utf-8"))


def _common_name(der: bytes) -> str:
    # cryptography warns on the serial-0 roots Mozilla still ships (Go Daddy
    # Class 2 etc.); that is the CA's problem, not this test's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _labels_where(table: dict[str, dict[str, str]], **bits: bool) -> list[str]:
    """Labels whose DELEGATOR status per purpose matches, e.g. email=False."""
    attr = {
        "server": "CKA_TRUST_SERVER_AUTH",
        "email": "CKA_TRUST_EMAIL_PROTECTION",
        "code": "CKA_TRUST_CODE_SIGNING",
    }
    return [
        label
        for label, trust in table.items()
        if all((trust[attr[k]] == DELEGATOR) == want for k, want in bits.items())
    ]


# ------------------------------------------------- the shipped bundle vs the file


def test_bundle_has_exactly_the_email_trusted_roots(trust_by_label, shipped, sidecar) -> None:
    expected = _labels_where(trust_by_label, email=True)
    assert expected, "certdata.txt should have email anchors"
    assert len(shipped) == len(expected) == sidecar["roots"]
    assert sorted(label for label, _ in shipped) == sorted(expected)


def test_bundle_fingerprints_equal_a_fresh_parse(entries, shipped_sha256) -> None:
    """Ordered equality: a bundle built from another certdata.txt fails here."""
    assert shipped_sha256 == [root.sha256 for root in email_anchors(entries)]


def test_parser_agrees_with_regex_on_every_trust_bit(entries, trust_by_label) -> None:
    assert len(entries) == len(trust_by_label)
    for root in entries:
        trust = trust_by_label[root.label]
        assert root.email_trust == trust["CKA_TRUST_EMAIL_PROTECTION"], root.label
        assert root.server_trust == trust["CKA_TRUST_SERVER_AUTH"], root.label


@pytest.mark.parametrize(
    "common_name",
    [
        "Sectigo Public Email Protection Root R46",
        "DigiCert SMIME RSA4096 Root G5",
        "GlobalSign Secure Mail Root R45",
    ],
)
def test_dedicated_smime_roots_are_included(shipped, common_name) -> None:
    assert common_name in {_common_name(der) for _, der in shipped}


def test_website_only_roots_are_excluded(trust_by_label, by_label, shipped_sha256):
    website_only = _labels_where(trust_by_label, server=True, email=False)
    assert website_only, "certdata.txt should have TLS-only roots"
    example = by_label[website_only[0]]
    assert example.server_trust == DELEGATOR != example.email_trust
    assert example.sha256 not in shipped_sha256
    assert not {by_label[label].sha256 for label in website_only} & set(shipped_sha256)


def test_code_signing_only_roots_are_excluded(trust_by_label, by_label, shipped_sha256) -> None:
    code_only = _labels_where(trust_by_label, code=True, server=False, email=False)
    assert code_only, "certdata.txt should have code-signing-only roots"
    assert not {by_label[label].sha256 for label in code_only} & set(shipped_sha256)


def test_diginotar_distrust_entry_is_excluded(
    trust_by_label, by_label, shipped, shipped_sha256
) -> None:
    label = "Explicitly Distrust DigiNotar Root CA"
    assert trust_by_label[label]["CKA_TRUST_EMAIL_PROTECTION"] == "CKT_NSS_NOT_TRUSTED"
    assert by_label[label].sha256 not in shipped_sha256
    assert not any("DigiNotar" in _common_name(der) for _, der in shipped)


def test_sidecar_carries_globaltrust_2020_email_distrust(
    certdata_text, by_label, entries, sidecar
) -> None:
    root = by_label["GLOBALTRUST 2020"]
    assert root.email_trust == DELEGATOR
    assert root.email_distrust_after == datetime(2024, 6, 30, tzinfo=UTC)
    expected = {root.sha256: {"label": "GLOBALTRUST 2020", "date": "2024-06-30T00:00:00Z"}}
    assert sidecar["email_distrust_after"] == expected
    dated_in_file = certdata_text.count("\nCKA_NSS_EMAIL_DISTRUST_AFTER MULTILINE_OCTAL\n")
    assert len(sidecar["email_distrust_after"]) == dated_in_file
    assert "# GLOBALTRUST 2020\n# email-distrust-after: 2024-06-30T00:00:00Z\n" in (
        PEM.read_text(encoding="utf-8")
    )


def test_source_note_names_the_input_without_paths(sidecar) -> None:
    digest = hashlib.sha256(CERTDATA.read_bytes()).hexdigest()
    assert sidecar["source"].startswith("Mozilla certdata.txt (")
    assert "NSS_BUILTINS_LIBRARY_VERSION" in sidecar["source"]
    assert digest in sidecar["source"]
    for path in (PEM, SIDECAR):
        assert str(REPO.parent) not in path.read_text(encoding="utf-8")


# ------------------------------------------------- a generated certdata snippet


def _self_signed(common_name: str, serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )


def _octal(data: bytes) -> str:
    """Encode like certdata.txt: ``\\ooo`` escapes, 16 bytes per line."""
    rows = (data[i : i + 16] for i in range(0, len(data), 16))
    return "\n".join("".join(f"\\{byte:03o}" for byte in row) for row in rows)


def _octal_attr(name: str, data: bytes) -> str:
    return f"{name} MULTILINE_OCTAL\n{_octal(data)}\nEND\n"


def _der_integer(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return bytes([0x02, len(body)]) + body


def _cert_object(label: str, cert: x509.Certificate, distrust: str) -> str:
    return (
        f'#\n# Certificate "{label}"\n#\n'
        "CKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\n"
        "CKA_TOKEN CK_BBOOL CK_TRUE\n"
        f'CKA_LABEL UTF8 "{label}"\n'
        "CKA_CERTIFICATE_TYPE CK_CERTIFICATE_TYPE CKC_X_509\n"
        + _octal_attr("CKA_SUBJECT", cert.subject.public_bytes())
        + _octal_attr("CKA_ISSUER", cert.issuer.public_bytes())
        + _octal_attr("CKA_SERIAL_NUMBER", _der_integer(cert.serial_number))
        + _octal_attr("CKA_VALUE", cert.public_bytes(Encoding.DER))
        + distrust
        + "\n"
    )


def _trust_object(label: str, cert: x509.Certificate, server: str, email: str) -> str:
    return (
        f'# Trust for "{label}"\n'
        "CKA_CLASS CK_OBJECT_CLASS CKO_NSS_TRUST\n"
        "CKA_TOKEN CK_BBOOL CK_TRUE\n"
        f'CKA_LABEL UTF8 "{label}"\n'
        + _octal_attr("CKA_ISSUER", cert.issuer.public_bytes())
        + _octal_attr("CKA_SERIAL_NUMBER", _der_integer(cert.serial_number))
        + f"CKA_TRUST_SERVER_AUTH CK_TRUST {server}\n"
        f"CKA_TRUST_EMAIL_PROTECTION CK_TRUST {email}\n"
        "CKA_TRUST_CODE_SIGNING CK_TRUST CKT_NSS_MUST_VERIFY_TRUST\n"
        "CKA_TRUST_STEP_UP_APPROVED CK_BBOOL CK_FALSE\n\n"
    )


HEADER = (
    "# generated by tests/test_certdata.py\nBEGINDATA\n"
    "CKA_CLASS CK_OBJECT_CLASS CKO_NSS_BUILTIN_ROOT_LIST\n"
    'CKA_LABEL UTF8 "Snippet Roots"\n\n'
)
UTC_TIME_2025 = bytes([0x17, 13]) + b"250101120000Z"  # DER UTCTime, tag + length
FALSE_BOTH = (
    "CKA_NSS_SERVER_DISTRUST_AFTER CK_BBOOL CK_FALSE\n"
    "CKA_NSS_EMAIL_DISTRUST_AFTER CK_BBOOL CK_FALSE\n"
)


@pytest.fixture(scope="module")
def snippet_certs() -> dict[str, x509.Certificate]:
    # One serial for all three: only issuer + serial together tell them apart.
    return {name: _self_signed(f"Snippet {name}", 0x1001) for name in ("A", "B", "C")}


def _snippet(certs: dict[str, x509.Certificate], email_distrust: bytes) -> str:
    """A: email anchor with a dated distrust; B: TLS only; C: explicitly distrusted.

    Trust objects come in the order C, A, B and carry neutral labels, so
    pairing by position or by label would give wrong results.
    """
    a_distrust = "CKA_NSS_SERVER_DISTRUST_AFTER CK_BBOOL CK_FALSE\n" + _octal_attr(
        "CKA_NSS_EMAIL_DISTRUST_AFTER", email_distrust
    )
    return (
        HEADER
        + _cert_object("Email Anchor", certs["A"], a_distrust)
        + _cert_object("Server Only", certs["B"], FALSE_BOTH)
        + _cert_object("Distrusted", certs["C"], "")  # no *_DISTRUST_AFTER at all
        + _trust_object("trust 1", certs["C"], "CKT_NSS_NOT_TRUSTED", "CKT_NSS_NOT_TRUSTED")
        + _trust_object("trust 2", certs["A"], "CKT_NSS_MUST_VERIFY_TRUST", DELEGATOR)
        + _trust_object("trust 3", certs["B"], DELEGATOR, "CKT_NSS_MUST_VERIFY_TRUST")
    )


def test_snippet_parses_and_pairs_by_issuer_and_serial(snippet_certs) -> None:
    text = _snippet(snippet_certs, UTC_TIME_2025)
    value = re.search(r"CKA_VALUE MULTILINE_OCTAL\n(.*?)\nEND", text, re.DOTALL)
    assert value.group(1).count("\n") > 10  # the DER spans many 16-byte lines
    anchor, server_only, distrusted = parse_certdata(text)

    assert [anchor.label, server_only.label, distrusted.label] == [
        "Email Anchor",
        "Server Only",
        "Distrusted",
    ]
    assert anchor.der == snippet_certs["A"].public_bytes(Encoding.DER)
    assert anchor.sha256 == hashlib.sha256(anchor.der).hexdigest()
    assert (anchor.email_trust, anchor.server_trust) == (
        DELEGATOR,
        "CKT_NSS_MUST_VERIFY_TRUST",
    )
    assert (server_only.email_trust, server_only.server_trust) == (
        "CKT_NSS_MUST_VERIFY_TRUST",
        DELEGATOR,
    )
    assert distrusted.email_trust == "CKT_NSS_NOT_TRUSTED"
    assert anchor.email_distrust_after == datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert server_only.email_distrust_after is None  # CK_BBOOL CK_FALSE
    assert distrusted.email_distrust_after is None  # attribute missing


def test_snippet_email_anchors_skip_must_verify_and_not_trusted(snippet_certs):
    entries = parse_certdata(_snippet(snippet_certs, UTC_TIME_2025))
    assert [root.label for root in email_anchors(entries)] == ["Email Anchor"]


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (UTC_TIME_2025, datetime(2025, 1, 1, 12, tzinfo=UTC)),
        (b"240630000000Z", datetime(2024, 6, 30, tzinfo=UTC)),  # bare, as Mozilla
        (bytes([0x18, 15]) + b"20250101120000Z", datetime(2025, 1, 1, 12, tzinfo=UTC)),
        (b"500101000000Z", datetime(1950, 1, 1, tzinfo=UTC)),  # RFC 5280 window
    ],
)
def test_distrust_after_time_encodings(snippet_certs, encoded, expected) -> None:
    entries = parse_certdata(_snippet(snippet_certs, encoded))
    assert entries[0].email_distrust_after == expected


def test_write_bundle_output_shape(snippet_certs, tmp_path: Path) -> None:
    entries = parse_certdata(_snippet(snippet_certs, UTC_TIME_2025))
    anchors = email_anchors(entries)
    pem, side = tmp_path / "b.pem", tmp_path / "b.json"
    write_bundle(anchors, pem, side, "note")

    text = pem.read_text(encoding="utf-8")
    assert text.startswith(
        "# Email Anchor\n# email-distrust-after: 2025-01-01T12:00:00Z\n"
        "-----BEGIN CERTIFICATE-----\n"
    )
    assert x509.load_pem_x509_certificates(pem.read_bytes()) == [snippet_certs["A"]]
    assert json.loads(side.read_text(encoding="utf-8")) == {
        "source": "note",
        "roots": 1,
        "email_distrust_after": {
            anchors[0].sha256: {"label": "Email Anchor", "date": "2025-01-01T12:00:00Z"}
        },
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.pem"]


def test_unpaired_certificate_is_an_error(snippet_certs) -> None:
    text = HEADER + _cert_object("Lonely", snippet_certs["A"], "")
    with pytest.raises(ValueError, match="no matching CKO_NSS_TRUST"):
        parse_certdata(text)


def test_unterminated_octal_is_an_error() -> None:
    text = HEADER + "CKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\nCKA_VALUE MULTILINE_OCTAL\n\\060"
    with pytest.raises(ValueError, match="no END"):
        parse_certdata(text)


# ------------------------------------------------------------------ the CLI


def _readme_builtins_version() -> str:
    """certdata.txt does not state the CKBI version; its README does."""
    readme = (CERTDATA.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r'NSS_BUILTINS_LIBRARY_VERSION "([^"]+)"', readme)
    assert match, "shared/trust/README.md should state NSS_BUILTINS_LIBRARY_VERSION"
    return match.group(1)


@pytest.mark.parametrize("explicit_input", [True, False], ids=["certdata-arg", "default"])
def test_cli_regenerates_identical_files(tmp_path: Path, explicit_input: bool) -> None:
    """Run from a foreign cwd: defaults must resolve against the repo, not cwd."""
    args = [sys.executable, str(TOOL)]
    if explicit_input:
        args.append(str(CERTDATA))
    args += ["--out", "out.pem", "--sidecar", "out.json"]
    args += ["--builtins-version", _readme_builtins_version()]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=True)

    shipped = json.loads(SIDECAR.read_text(encoding="utf-8"))
    dated = len(shipped["email_distrust_after"])
    summary = f"{shipped['roots']} email trust anchors, {dated} with email distrust-after"
    assert done.stdout == summary + "\n"
    assert (tmp_path / "out.pem").read_bytes() == PEM.read_bytes()
    assert (tmp_path / "out.json").read_bytes() == SIDECAR.read_bytes()


def test_cli_help(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(TOOL), "-h"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--sidecar" in done.stdout
