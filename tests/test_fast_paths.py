"""The hot path's shortcuts give the answers of the readings they stand in for.

Issue 11's cost work replaced slow readings of the same bytes by faster ones: email's feed
parser and ``get_param``, two regular expressions of the MIME splitter, base64 cleaning,
dkimpy's relaxed canonicalisation, asn1crypto's reading of a CMS signature, strftime per log
line and a rename check per log line. Each test puts the shortcut and the reading it replaces
on the same input (real messages, and inputs Hypothesis builds or mutates) and requires the
same answer. The CMS shortcut may decline (None), and then asn1crypto's reading decides, so it
must never accept what that reading rejects, nor accept with a different result.

Caches keyed by what recurs (certificates, DKIM keys, validated paths) must never skip a check
that depends on the message: a tampered copy of a message judged a moment before, with every
cache warm, is still rejected.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from dataclasses import replace
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from dkim.canonicalization import Relaxed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_collector import logsetup, rawcms, smime
from smime_collector import message as mime
from smime_collector.dkimcheck import _RelaxedHeaders, relaxed_body
from smime_collector.logsetup import TEXT_FORMAT, OneLineFormatter
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome
from tests.corpus import sparky_rows
from tests.paths import PKITS, SPARKY, THUNDERBIRD

SAME = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BOB = SPARKY / "signed-from-bob.eml"
BOB_ROW = next(row for row in sparky_rows() if row.name == BOB.name)


def _pieces(*atoms: bytes, most: int = 14) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(atoms), max_size=most).map(b"".join)


# -- MIME --------------------------------------------------------------------------------------

HEADER_ATOMS = (
    b"From ", b"From", b"Subject", b":", b" ", b"\t", b"x", b"\r\n", b"\r\n ", b"\r\n\t",
    b"\xc3\xa9", b"=?", b"a:b", b"\x00", b"\x0b", b"\x85", b"\r\n\r\n", b" :", b"\x7f", b"~:",
    b"\r", b"\n", b"Content-Type: text/plain; charset=utf-8",
)  # fmt: skip


def _as_email_reads_it(block: bytes) -> tuple[object, ...]:
    msg = BytesHeaderParser(policy=mime._POLICY).parsebytes(block)
    return _view(msg)


def _view(msg) -> tuple[object, ...]:
    return (
        list(msg.raw_items()),
        msg.get_unixfrom(),
        msg.get_payload(),
        [(type(d), str(d)) for d in msg.defects],
    )


@SAME
@given(_pieces(*HEADER_ATOMS), st.sampled_from([b"\r\n", b"", b"\n"]))
def test_header_blocks_are_read_as_the_feed_parser_reads_them(block: bytes, end: bytes) -> None:
    block += end
    assert _view(mime.parse_headers(block)) == _as_email_reads_it(block)


def test_the_real_header_blocks_are_read_as_the_feed_parser_reads_them() -> None:
    raw = mime.to_crlf(BOB.read_bytes())
    top = mime.parse_message(raw).top
    for entity in top.walk():
        block = raw[entity.start : entity.body_start - 2] + b"\r\n"
        assert _view(entity.headers) == _as_email_reads_it(block)
        assert list(entity.headers.raw_items())


PARAM_ATOMS = (
    "multipart/signed", "; ", ";", "boundary=", "Boundary=", '"', "abc", "--==x", "protocol=",
    '"application/pkcs7-signature"', "name*=", "utf-8''%C3%A9", "name*0=", "name*1=", " ", "=",
    "\\", "filename=", "a b", "\r\n ", "\xe9", "(comment)",
)  # fmt: skip


@SAME
@given(
    st.lists(st.sampled_from(PARAM_ATOMS), max_size=10).map("".join),
    st.sampled_from(["Content-Type", "content-type", "Content-Disposition"]),
    st.booleans(),
)
def test_header_parameters_are_those_get_param_finds(value: str, name: str, twice: bool) -> None:
    block = f"{name}: {value}\r\n".encode()
    if twice:
        block += f"{name}: other; boundary=second\r\n".encode()
    headers = mime.parse_headers(block + b"\r\n")
    for header in ("content-type", "content-disposition"):
        for param in ("boundary", "protocol", "name", "filename", "BOUNDARY"):
            expected = headers.get_param(param, header=header)
            assert mime.header_param(headers, param, header) == expected


@SAME
@given(_pieces(b"\r", b"\n", b"\r\n", b"x", b"\r\r\n", b"\n\r", most=20))
def test_line_ends_become_crlf_as_the_regular_expression_made_them(raw: bytes) -> None:
    assert mime.to_crlf(raw) == re.sub(rb"\r?\n", b"\r\n", raw)


@SAME
@given(
    _pieces(b"-", b"--", b"B", b"Bx", b" ", b"\t", b"\r\n", b"\r", b"\n", b"x", most=16),
    st.sampled_from([b"B", b"Bx", b"B-", b"-"]),
    st.data(),
)
def test_delimiters_are_those_the_regular_expression_found(
    buf: bytes, boundary: bytes, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(buf)))
    end = data.draw(st.integers(start, len(buf)))
    pattern = re.compile(rb"--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|\Z)")
    expected = [(m.start(), bool(m.group(1)), m.end()) for m in pattern.finditer(buf, start, end)]
    assert list(mime._delimiters(buf, b"--" + boundary, start, end)) == expected


def _cleaned_base64(body: bytes) -> bytes | None:
    """The decoding before the shortcut: drop what is not base64, pad, decode."""
    data = re.sub(rb"[^A-Za-z0-9+/=]", b"", body)
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


@SAME
@given(_pieces(b"QUJD", b"QQ", b"=", b"==", b"\r\n", b" ", b"-", b"!", b"+/", b"A", most=12))
def test_base64_bodies_decode_as_the_cleaned_copy_did(body: bytes) -> None:
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    entity = mime.Entity.parse(raw)
    expected = _cleaned_base64(body)
    if expected is None:
        with pytest.raises(mime.MalformedMessage):
            entity.decoded()
    else:
        assert entity.decoded() == expected


# -- DKIM --------------------------------------------------------------------------------------

WHITESPACE_ATOMS = (b" ", b"\t", b"\r\n", b"x", b"\r", b"\n", b"  ", b"\r\n ", b"ab", b"\x0b")


@SAME
@given(_pieces(*WHITESPACE_ATOMS))
def test_relaxed_bodies_are_dkimpys(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@SAME
@given(_pieces(b"A", b"b", b" ", b"\t", most=4).filter(bool), _pieces(*WHITESPACE_ATOMS))
def test_relaxed_header_fields_are_dkimpys(name: bytes, value: bytes) -> None:
    fields = [(name, value)]
    assert _RelaxedHeaders.canonicalize_headers(fields) == Relaxed.canonicalize_headers(fields)


# -- CMS ---------------------------------------------------------------------------------------


def _signed_part(raw: bytes) -> smime.SignedPart | None:
    parsed = mime.parse_message(raw)
    if not isinstance(parsed, mime.ParsedMessage):
        return None
    part = smime.find_signature(parsed.top)
    return part if isinstance(part, smime.SignedPart) else None


def _signers(signed: smime.SignedData) -> list[tuple[object, ...]]:
    return [
        (s.cert, s.digest, s.signature_algorithm, s.encryption_preference) for s in signed.signers
    ]


def _agree(part: smime.SignedPart) -> bool:
    """True when the plain reading answered (and gave asn1crypto's answer), False when it
    declined; a different answer fails the test."""
    fast = smime._verify_plain(part)
    if fast is None:
        return False
    slow = smime.verify_with_asn1crypto(part)
    assert isinstance(slow, smime.SignedData) and not slow.failures
    assert (fast.certificates, fast.der_of, fast.crls) == (
        slow.certificates,
        slow.der_of,
        slow.crls,
    )
    assert _signers(fast) == _signers(slow)
    return True


# PKITS has negative serial numbers on purpose; smime.py silences this warning for the service,
# pytest records warnings anew for each test.
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_every_corpus_signature_is_read_as_asn1crypto_reads_it() -> None:
    answered = declined_valid = 0
    for folder in (SPARKY, THUNDERBIRD, PKITS):
        for path in sorted(folder.rglob("*.eml")):
            part = _signed_part(path.read_bytes())
            if part is None or part.kind != "detached":
                continue
            if _agree(part):
                answered += 1
            elif isinstance(ok := smime.verify_with_asn1crypto(part), smime.SignedData):
                declined_valid += bool(ok.signers and not ok.failures)
    # Every detached signature mail clients sent (Thunderbird, Gmail) takes the plain path.
    assert answered > 60 and declined_valid == 0


@settings(SAME, max_examples=400)
@given(st.data())
def test_mutated_signatures_are_read_as_asn1crypto_reads_them(data: st.DataObject) -> None:
    part = _signed_part(BOB.read_bytes())
    assert part is not None and _agree(part)
    der = bytearray(part.cms_der)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(der) - 1))
        action = data.draw(st.sampled_from(["set", "flip", "drop", "insert"]))
        if action == "set":
            der[at] = data.draw(st.integers(0, 255))
        elif action == "flip":
            der[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "drop":
            del der[at]
        else:
            der.insert(at, data.draw(st.integers(0, 255)))
    _agree(replace(part, cms_der=bytes(der)))


def _bob_collector(make_settings, **overrides: str) -> Collector:
    at = BOB_ROW.verify_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Collector.build(make_settings(verify_time=at, **overrides))


def _alter_signed_content(raw: bytes) -> bytes:
    """Bob's message with one letter of the signed part changed (its text body is empty, so
    a header of the signed part: covered by the S/MIME signature and, as part of the
    message body, by DKIM)."""
    assert raw.count(b"Content-Language: en-GB") == 1
    return raw.replace(b"Content-Language: en-GB", b"Content-Language: en-gB")


def test_warm_caches_never_spare_a_tampered_copy_its_checks(make_settings) -> None:
    collector = _bob_collector(make_settings)
    raw = BOB.read_bytes()
    assert collector.read_smime_email(raw).outcome is Outcome.STORED
    assert collector.read_smime_email(raw).outcome is Outcome.UNCHANGED
    verdict = collector.read_smime_email(_alter_signed_content(raw))
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "dkim-invalid")
    assert "body hash does not match" in verdict.detail
    assert collector.read_smime_email(raw).outcome is Outcome.UNCHANGED


def test_warm_caches_never_spare_a_tampered_signature_its_checks(make_settings) -> None:
    collector = _bob_collector(make_settings, dkim="off")
    raw = mime.to_crlf(BOB.read_bytes())
    assert collector.read_smime_email(raw).outcome is Outcome.STORED
    top = mime.parse_message(raw).top
    signature = top.parts()[1]
    verdict = collector.read_smime_email(_alter_signed_content(raw))
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "bad-signature")
    assert "messageDigest does not match" in verdict.detail
    der = bytearray(signature.decoded())
    value = rawcms.plain_signed_data(bytes(der)).signers[0].signature
    der[bytes(der).index(value) + len(value) // 2] ^= 0x01  # inside the RSA signature value
    body = base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")
    forged = raw[: signature.body_start] + body + raw[signature.end :]
    verdict = collector.read_smime_email(forged)
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "bad-signature")
    assert "does not verify with the signer's key" in verdict.detail
    assert collector.read_smime_email(raw).outcome is Outcome.UNCHANGED


# -- logs --------------------------------------------------------------------------------------


def test_a_unit_of_work_finishes_in_the_renamed_log_and_the_next_opens_the_new(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "webapp.log"
    sink = logsetup.attach("fastpaths", log_file)
    log = logging.getLogger("smime_collector.tests.fastpaths")
    try:
        with sink.context():
            log.info("| first line of the unit")
            os.rename(log_file, tmp_path / "webapp.log.1")
            log.info("| second line of the unit")
        with sink.context():
            log.info("| line of the next unit")
        os.rename(log_file, tmp_path / "webapp.log.2")
        log.info("| line outside any unit")
    finally:
        sink.close()
    assert "second line of the unit" in (tmp_path / "webapp.log.1").read_text()
    assert "line of the next unit" in (tmp_path / "webapp.log.2").read_text()
    assert "line outside any unit" in log_file.read_text()
    every = "".join(p.read_text() for p in tmp_path.glob("webapp.log*"))
    assert every.count("| ") == 4


@SAME
@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False), st.integers(0, 3))
def test_time_stamps_are_as_logging_formats_them(created: float, repeat: int) -> None:
    ours, stdlib = OneLineFormatter(TEXT_FORMAT), logging.Formatter(TEXT_FORMAT)
    for step in range(repeat + 1):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created = created + step * 0.4
        record.msecs = int((record.created - int(record.created)) * 1000) + 0.0
        assert ours.formatTime(record) == stdlib.formatTime(record)
