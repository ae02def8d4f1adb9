"""Properties: whatever arrives, the answer is a verdict or a 4xx, never a crash or a 500.

Hypothesis (derandomized, no example database, so every run tries the same inputs) drives

- relay JSON through Flask's test client: 200 with one logged verdict per message, or 400/401;
- Bob's real message, mutated, through ``Collector.read_smime_email`` at its verify time;
- Bob's signature, mutated (with ``dkim = off``: DKIM covers the body, so with DKIM on every
  signature mutation would stop at DKIM and never reach the CMS code);
- mail generated and signed here (``tests/pki.py``), rearranged, and random MIME trees, both
  DKIM-signed *after* the mutation so that the mutation reaches the S/MIME checks.

Each message must end in one final verdict (stored, unchanged or rejected; garbage is never
``tempfail``), logged as one whole line; only the genuine certificate is ever stored; the log
gets no traceback and no line that is not a whole record.

Also here: the safety bounds (MIME parts, nesting, certificates, signature size), and the
safety net for an exception nobody expected (logged with its traceback, ``tempfail``, 503, the
worker keeps serving).

Inputs these properties found that made a library raise where no stage expected it are kept
one by one as regression tests at the end of this file.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from smime_collector import message as mime
from smime_collector import smime
from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Delivery
from smime_collector.logsetup import attach
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict
from tests import pki
from tests.corpus import sparky_rows
from tests.dnsserver import LoopbackDNS
from tests.helpers import (
    GENERATED_MAIL,
    OUTCOME_LINE,
    TOKEN_HEADER,
    post_batch,
    relay_event,
    sha256_of_pem,
)
from webapp import create_app

CRLF = b"\r\n"
BOB = sparky_rows()[0]
BOB_TIME = BOB.verify_at.strftime("%Y-%m-%dT%H:%M:%SZ")
DOMAIN = "props.example"
SELECTOR = "properties"
ALICE = f"alice@{DOMAIN}"
FINAL = {Outcome.STORED, Outcome.UNCHANGED, Outcome.REJECTED}

#: The start of every record the log format writes; anything else on a line of its own is a
#: traceback or a line break smuggled in by the message.
RECORD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3},[\w.-]+,(DEBUG|INFO|WARNING|ERROR),[\w.:-]+,"
)
VERDICT_LINE = OUTCOME_LINE
TRACEBACK = "Traceback (most recent call last)"

PROPERTY = settings(GENERATED_MAIL, max_examples=200, deadline=None)


# -- the generated sender ----------------------------------------------------------------------


@dataclass
class Mail:
    """Alice's PKI, her DKIM key on the loopback DNS, and one valid message taken apart."""

    root: pki.Identity
    alice: pki.Identity
    dkim_key: pki.DKIMKey
    trust: Path
    content: bytes  # the signed MIME entity
    der: bytes  # detached SignedData over ``content``
    opaque_der: bytes  # SignedData encapsulating ``content``

    @property
    def genuine(self) -> dict[str, str]:
        return {ALICE: self.alice.cert.fingerprint(hashes.SHA256()).hex()}

    def signature_part(self, der: bytes | None = None) -> bytes:
        return (
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
            + b64_lines(der or self.der)
        )

    def signed_entity(self, der: bytes | None = None) -> bytes:
        return multipart(
            "signed",
            "sig-boundary",
            [self.content, self.signature_part(der)],
            params='; protocol="application/pkcs7-signature"; micalg=sha-256',
        )

    def dkim(self, raw: bytes) -> bytes:
        return self.dkim_key.sign(raw, DOMAIN, SELECTOR)

    def send(self, entity: bytes, from_addr: str = ALICE) -> bytes:
        """A whole message around ``entity``, DKIM-signed for props.example (unsigned when
        dkimpy refuses to sign it, e.g. a NUL in a header: the collector still judges it)."""
        message = pki.message(entity, from_addr=from_addr)
        try:
            return self.dkim(message)
        except dkim.DKIMException:
            return message


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory, dns_server: LoopbackDNS) -> Mail:
    folder = tmp_path_factory.mktemp("props-pki")
    root = pki.make_root("Properties Root")
    alice = pki.make_leaf(root, ALICE)
    key = pki.DKIMKey()
    dns_server.add_txt(pki.DKIMKey.record_name(DOMAIN, SELECTOR), key.txt_record())
    trust = folder / "root.pem"
    trust.write_bytes(root.cert_pem())
    content = pki.mime_body("Please send me encrypted mail.\n")
    return Mail(
        root,
        alice,
        key,
        trust,
        content,
        pki.sign_der(content, alice, tool="cryptography"),
        pki.sign_der(content, alice, detached=False, tool="cryptography"),
    )


# -- MIME building -----------------------------------------------------------------------------


def b64_lines(data: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + width] + CRLF for i in range(0, len(text), width))


def multipart(subtype: str, boundary: str, parts: list[bytes], params: str = "") -> bytes:
    """A multipart entity: its header, each part after a delimiter, the close delimiter."""
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + CRLF + part + CRLF for part in parts) + delimiter + b"--" + CRLF
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}'.encode()
    return head + CRLF + CRLF + body


def leaf(text: bytes = b"x") -> bytes:
    return b"Content-Type: text/plain\r\n\r\n" + text


def with_from(entity: bytes, address: str = ALICE) -> bytes:
    return f"From: {address}\r\nMIME-Version: 1.0\r\n".encode() + entity


# -- judging and the log -----------------------------------------------------------------------


class LogTail:
    """What a log file gained since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")


def clean_verdicts(log_text: str, whole_records: bool = True) -> list[tuple[str, str, str]]:
    """The verdict lines of a log excerpt that has no traceback and (by default) no line that
    is not a whole record."""
    assert TRACEBACK not in log_text, log_text[-4000:]
    if whole_records:
        stray = [line for line in log_text.split("\n")[:-1] if not RECORD.match(line)]
        assert not stray, f"log lines that are not records: {stray[:3]}"
    return VERDICT_LINE.findall(log_text)


@dataclass
class Judge:
    collector: Collector
    tail: LogTail

    def __call__(self, raw: bytes) -> tuple[Verdict, str]:
        verdict = self.collector.read_smime_email(raw)
        return verdict, self.tail.new()


def assert_final(verdict: Verdict, log_text: str, genuine: dict[str, str]) -> None:
    """One final verdict, logged once and cleanly; only a genuine certificate is stored."""
    assert isinstance(verdict, Verdict)
    assert verdict.outcome in FINAL, verdict
    logged = clean_verdicts(log_text)
    assert [(o, r) for o, r, _ in logged] == [(verdict.outcome.value, verdict.reason)]
    if verdict.outcome is not Outcome.REJECTED:
        assert verdict.email in genuine, verdict
        assert sha256_of_pem(Path(verdict.location)) == genuine[verdict.email]


@pytest.fixture
def make_judge(tmp_path: Path, dns_server: LoopbackDNS) -> Callable[..., Judge]:
    """A Collector of its own (folder, log) per call, as ``create_app`` builds it."""
    made = 0

    def build(**overrides: str) -> Judge:
        nonlocal made
        made += 1
        folder = tmp_path / f"collector-{made}"
        values = {
            "user-certs-dir": str(folder / "certs"),
            "log-file": str(folder / "webapp.log"),
            "dns-nameservers": dns_server.nameserver,
            "dns-timeout": "1",
            "revocation-fetch": "no",
            **{key.replace("_", "-"): value for key, value in overrides.items()},
        }
        settings_ = Settings.from_mapping(values, folder, "test")
        log = attach(f"properties-{made}", settings_.log_file)
        return Judge(Collector.build(settings_, log), LogTail(settings_.log_file))

    return build


@pytest.fixture
def bob_judge(make_judge) -> Judge:
    return make_judge(verify_time=BOB_TIME)


@pytest.fixture
def alice_judge(make_judge, mail) -> Judge:
    return make_judge(trusted_certs=str(mail.trust))


# -- strategies --------------------------------------------------------------------------------

HEADER_NAMES = [
    "From",
    "To",
    "Subject",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Content-Description",
    "MIME-Version",
    "DKIM-Signature",
    "X-Anything",
]
header_values = st.one_of(
    st.text(max_size=60).map(lambda s: s.encode()),
    st.binary(max_size=60),
    st.just(b""),
    st.integers(1, 300_000).map(lambda n: b"x" * n),  # huge
    st.sampled_from(
        [
            b'multipart/signed; protocol="application/pkcs7-signature"; boundary=""',
            b"application/pkcs7-mime; smime-type=signed-data",
            b"multipart/mixed; boundary*0=a; boundary*1=b; boundary*2*=utf-8''%FF",
            b"base64",
            b"quoted-printable",
            b"attachment; filename*=utf-8''smime%E9.p7m",
            b"a\r\n | outcome=stored,reason=ok,email=forged@example.com",  # folded
            b"=?utf-8?q?=FF=FE?= <alice@props.example>",
            b"<alice@props.example>, <bob@props.example>",
            b"v=1; d=props.example; s=properties; b=; bh=",
        ]
    ),
)


def _position(draw: st.DrawFn, data: bytes) -> int:
    """Anywhere in ``data``: Hypothesis favours small integers, this spreads them out."""
    return draw(st.integers(0, 2**32 - 1)) % (len(data) + 1)


def _edit_truncate(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: _position(draw, data)]


def _edit_flip(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return data
    at, bit = _position(draw, data[:-1]), draw(st.integers(0, 7))
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]


def _edit_delete(draw: st.DrawFn, data: bytes) -> bytes:
    at = _position(draw, data)
    return data[:at] + data[at + draw(st.integers(1, 512)) :]


def _edit_duplicate(draw: st.DrawFn, data: bytes) -> bytes:
    at = _position(draw, data)
    chunk = data[at : at + draw(st.integers(1, 2048))]
    return data[:at] + chunk * draw(st.integers(2, 4)) + data[at + len(chunk) :]


def _edit_insert(draw: st.DrawFn, data: bytes) -> bytes:
    at = _position(draw, data)
    return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]


def _edit_add_header(draw: st.DrawFn, data: bytes) -> bytes:
    name = draw(st.sampled_from(HEADER_NAMES)).encode()
    return name + b": " + draw(header_values) + CRLF + data


HEADER_FIELD = re.compile(rb"(?m)^([!-9;-~]+):[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")


def _edit_replace_header(draw: st.DrawFn, data: bytes) -> bytes:
    """Give one header field of the top entity (with its folded lines) another value."""
    blank = re.search(rb"\r?\n\r?\n", data)
    fields = list(HEADER_FIELD.finditer(data, 0, blank.start() if blank else len(data)))
    if not fields:
        return data
    field = draw(st.sampled_from(fields))
    return data[: field.start()] + field[1] + b": " + draw(header_values) + data[field.end() :]


def _edit_renest(draw: st.DrawFn, data: bytes) -> bytes:
    """Put the whole message one level down: inside a mixed, signed or rfc822 container."""
    kind = draw(st.sampled_from(["mixed", "signed", "rfc822"]))
    if kind == "rfc822":
        inner = b"Content-Type: message/rfc822\r\n\r\n" + data
        return with_from(multipart("mixed", "outer", [inner]), BOB.email)
    params = '; protocol="application/pkcs7-signature"' if kind == "signed" else ""
    junk = b"Content-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n"
    return with_from(multipart(kind, "outer", [data, junk], params), BOB.email)


def _edit_line_ends(draw: st.DrawFn, data: bytes) -> bytes:
    old, new = draw(
        st.sampled_from([(CRLF, b"\n"), (b"\n", CRLF), (b"\n", b"\r"), (b"\n", b"\n\n")])
    )
    return data.replace(old, new)


EDITS = [
    _edit_truncate,
    _edit_flip,
    _edit_delete,
    _edit_duplicate,
    _edit_insert,
    _edit_add_header,
    _edit_replace_header,
    _edit_renest,
    _edit_line_ends,
]


@st.composite
def edited(draw: st.DrawFn, data: bytes, edits: list = EDITS, most: int = 3) -> bytes:
    """``data`` after one to ``most`` edits drawn from ``edits``."""
    for _ in range(draw(st.integers(1, most))):
        data = draw(st.sampled_from(edits))(draw, data)
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _or_anything(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the right shape; one time in eight any JSON value in its place."""
    return st.sampled_from(range(8)).flatmap(lambda i: json_values if i == 7 else strategy)


email_texts = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from([BOB.raw, b""]).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["\ud800", "From: a@b.example\n\n\udfff"]),  # lone surrogates
)
contents = st.one_of(
    st.fixed_dictionaries(
        {"email_rfc822": _or_anything(email_texts)},
        optional={"email_rfc822_is_base64": _or_anything(st.just(False))},
    ),
    st.fixed_dictionaries(
        {
            "email_rfc822": st.one_of(
                st.binary(max_size=200).map(lambda b: base64.encodebytes(b).decode()),
                st.text(max_size=40),
            ),
            "email_rfc822_is_base64": _or_anything(st.just(True)),
        }
    ),
)
relay_events = _or_anything(
    st.fixed_dictionaries(
        {
            "msys": _or_anything(
                st.fixed_dictionaries(
                    {
                        "relay_message": _or_anything(
                            st.fixed_dictionaries(
                                {"content": _or_anything(contents)},
                                optional={"msg_from": json_values, "rcpt_to": json_values},
                            )
                        )
                    }
                )
            )
        }
    )
)


def well_formed(event: Any) -> bool:
    """What the README promises the relay shape is (the oracle for 400 versus judged)."""
    try:
        content = event["msys"]["relay_message"]["content"]
        email = content["email_rfc822"]
        as_base64 = content.get("email_rfc822_is_base64", False)
    except (TypeError, KeyError, AttributeError):
        return False
    if not all(
        isinstance(v, dict) for v in (event, event["msys"], event["msys"]["relay_message"], content)
    ):
        return False
    if not isinstance(email, str) or not isinstance(as_base64, bool):
        return False
    try:
        if as_base64:
            base64.b64decode("".join(email.split()), validate=True)
        else:
            email.encode("utf-8", "surrogateescape")
    except ValueError:
        return False
    return True


# -- relay JSON through Flask ------------------------------------------------------------------


@pytest.fixture
def client(make_settings):
    app = create_app(make_settings(verify_time=BOB_TIME))
    return app.test_client(), LogTail(app.extensions["smime_collector"].collector.settings.log_file)


@PROPERTY
@given(batch=st.lists(relay_events, max_size=4))
def test_relay_batches_are_judged_whole_or_refused_whole(client, batch) -> None:
    """A well-formed batch is 200 with one final verdict per message; any other is a 400
    that judges nothing."""
    test_client, tail = client
    response = post_batch(test_client, batch)
    verdicts = clean_verdicts(tail.new(), whole_records=False)  # msg_from: see the xfail
    if all(well_formed(event) for event in batch):
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"message": "OK", "count": len(batch)}
        assert len(verdicts) == len(batch)
        assert {outcome for outcome, _, _ in verdicts} <= {o.value for o in FINAL}
    else:
        assert response.status_code == 400, response.get_json()
        assert isinstance(response.get_json()["message"], str)
        assert verdicts == []


def _json_text(batch: list) -> bytes:
    return json.dumps(batch).encode()


@PROPERTY
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.lists(relay_events, max_size=3).map(_json_text).flatmap(edited),
    ),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
    token=st.sampled_from(["test-token", "wrong-token", None]),
)
@example(body=b"[" * 100_000, content_type="application/json", token="test-token")
@example(
    body=b'[{"a":' * 50_000 + b"1" + b"}]" * 50_000,
    content_type="application/json",
    token="test-token",
)
@example(
    body=b'[{"msys":{"relay_message":{"content":{"email_rfc822":"\\ud800"}}}}]',
    content_type="application/json",
    token="test-token",
)
def test_any_request_body_is_answered_without_a_server_error(
    client, body, content_type, token
) -> None:
    test_client, tail = client
    headers = {"Content-Type": content_type}
    if token is not None:
        headers[TOKEN_HEADER] = token
    response = test_client.post("/", data=body, headers=headers)
    assert response.status_code in (200, 400, 401), response.get_json()
    assert isinstance(response.get_json()["message"], str)
    verdicts = clean_verdicts(tail.new(), whole_records=False)
    assert all(outcome in {o.value for o in FINAL} for outcome, _, _ in verdicts)


# -- Bob's real message ------------------------------------------------------------------------


def test_mutated_real_message_ends_in_a_final_verdict(bob_judge) -> None:
    genuine = {BOB.email: BOB.fingerprint}

    @settings(PROPERTY, max_examples=500)
    @given(raw=edited(BOB.raw))
    @example(raw=BOB.raw)
    def mutated(raw: bytes) -> None:
        assert_final(*bob_judge(raw), genuine)

    mutated()


def _p7s_span(raw: bytes) -> tuple[int, int]:
    """Where the base64 lines of Bob's smime.p7s start and end in his (LF) message."""
    head = raw.index(b'filename="smime.p7s"')
    start = raw.index(b"\n\n", head) + 2
    return start, raw.index(b"\n--", start) + 1


def _with_signature(der: bytes) -> bytes:
    """Bob's message with ``der`` as its signature, in base64 lines as Thunderbird wrote it."""
    start, end = _p7s_span(BOB.raw)
    width = BOB.raw.index(b"\n", start) - start
    return BOB.raw[:start] + b64_lines(der, width).replace(CRLF, b"\n") + BOB.raw[end:]


BOB_DER = base64.b64decode(BOB.raw[slice(*_p7s_span(BOB.raw))])


def _edit_wrap_der(draw: st.DrawFn, data: bytes) -> bytes:
    """Re-nest the DER inside one more SEQUENCE, or re-encode its outer length as indefinite."""
    if draw(st.booleans()) or data[:2] != b"\x30\x82":
        return b"\x30\x84" + len(data).to_bytes(4, "big") + data
    return b"\x30\x80" + data[4:] + b"\x00\x00"


#: Mostly single bit flips: an edit that shifts bytes breaks the outer DER lengths, so only
#: flips get inside the certificates and SignerInfo and exercise their parsers.
DER_EDITS = [*[_edit_flip] * 6, _edit_truncate, _edit_delete, _edit_duplicate, _edit_insert]
DER_EDITS += [_edit_wrap_der]


def test_bobs_signature_is_where_the_tests_look() -> None:
    assert _with_signature(BOB_DER) == BOB.raw
    assert BOB_DER[:1] == b"\x30" and len(BOB_DER) == 3998


def test_mutated_signature_ends_in_a_final_verdict(make_judge) -> None:
    judge = make_judge(verify_time=BOB_TIME, dkim="off")
    genuine = {BOB.email: BOB.fingerprint}

    @settings(PROPERTY, max_examples=1000)
    @given(der=edited(BOB_DER, DER_EDITS, most=2))
    @example(der=BOB_DER)
    def mutated(der: bytes) -> None:
        assert_final(*judge(_with_signature(der)), genuine)

    mutated()


# -- generated mail, rearranged and re-signed --------------------------------------------------

PROTOCOLS = [
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "APPLICATION/PKCS7-SIGNATURE",
    "application/pgp-signature",
    "",
]
SIGNATURE_TYPES = [
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pkcs7-mime",
    "text/plain",
]
ENCODINGS = ["base64", "BASE64", "7bit", "quoted-printable", "x-uuencode", None]


@st.composite
def rearranged(draw: st.DrawFn, mail: Mail) -> tuple[bytes, str]:
    """Alice's signed message rearranged: parts, their order, headers, encodings, layers."""
    lines = b64_lines(mail.der).split(CRLF)[:-1]
    cut = draw(st.integers(0, len(lines)))
    if draw(st.booleans()):
        lines = lines[:cut]  # truncated signature
    elif draw(st.booleans()):
        lines.insert(cut, draw(st.sampled_from([b"", b"!!", b"====", b"-- not base64 --"])))
    encoding = draw(st.sampled_from(ENCODINGS))
    signature = f"Content-Type: {draw(st.sampled_from(SIGNATURE_TYPES))}\r\n".encode()
    if encoding:
        signature += f"Content-Transfer-Encoding: {encoding}\r\n".encode()
    signature += CRLF + b"".join(line + CRLF for line in lines)
    altered = mail.content.replace(b"encrypted", b"plaintext")
    pieces = {"content": mail.content, "signature": signature, "altered": altered, "junk": leaf()}
    order = draw(
        st.one_of(
            st.just(["content", "signature"]),
            st.lists(st.sampled_from(sorted(pieces)), max_size=4),
        )
    )
    protocol = draw(st.sampled_from(PROTOCOLS))
    entity = multipart("signed", "b1", [pieces[name] for name in order], f'; protocol="{protocol}"')
    if draw(st.booleans()):
        entity = entity.replace(b'boundary="b1"', b'boundary="b2"', 1)
    if draw(st.integers(0, 4)) == 0:
        opaque = b"Content-Type: application/pkcs7-mime; smime-type="
        smime_type = draw(st.sampled_from([b"signed-data", b"enveloped-data", b"", b"x"]))
        entity = opaque + smime_type + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        entity += b64_lines(mail.opaque_der[: draw(st.integers(0, len(mail.opaque_der)))])
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            entity = multipart("mixed", f"n{len(entity)}", [entity])
        else:
            entity = multipart(
                "signed",
                f"s{len(entity)}",
                [entity, signature],
                '; protocol="application/pkcs7-signature"',
            )
    if draw(st.booleans()):
        entity = draw(edited(entity, [_edit_add_header, _edit_replace_header], most=2))
    sender = draw(
        st.sampled_from([ALICE, ALICE.upper(), f"bob@{DOMAIN}", "alice@elsewhere.example"])
    )
    return entity, sender


def test_rearranged_generated_message_ends_in_a_final_verdict(alice_judge, mail) -> None:
    genuine = mail.genuine

    @PROPERTY
    @given(message=rearranged(mail))
    def rearranged_(message: tuple[bytes, str]) -> None:
        assert_final(*alice_judge(mail.send(*message)), genuine)

    rearranged_()


def test_the_generated_message_itself_is_stored(alice_judge, mail) -> None:
    """The properties above would be empty if even the intact message were not stored."""
    verdict, log_text = alice_judge(mail.send(mail.signed_entity()))
    assert (verdict.outcome, verdict.reason) == (Outcome.STORED, "ok")
    assert_final(verdict, log_text, mail.genuine)


@st.composite
def mime_trees(draw: st.DrawFn, mail: Mail, depth: int = 0) -> bytes:
    """A random MIME entity; leaves may be Alice's real content or signature part."""
    headers = b"".join(
        name.encode() + b": " + value + CRLF
        for name, value in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["Content-Description", "Content-Disposition", "X-Header"]),
                    header_values,
                ),
                max_size=2,
            )
        )
    )
    if depth < 4 and draw(st.integers(0, 2)) == 0:
        children = draw(st.lists(mime_trees(mail, depth + 1), max_size=4))
        subtype = draw(st.sampled_from(["signed", "mixed", "alternative", "related", "x-y"]))
        protocol = draw(st.sampled_from(PROTOCOLS))
        boundary = draw(st.from_regex(r"[A-Za-z0-9'()+_,./:=? -]{0,69}[A-Za-z0-9]", fullmatch=True))
        return headers + multipart(subtype, boundary, children, f'; protocol="{protocol}"')
    kind = draw(st.sampled_from(["text", "content", "signature", "opaque", "random"]))
    if kind == "content":
        return mail.content
    if kind == "signature":
        return mail.signature_part()
    if kind == "opaque":
        return (
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(mail.opaque_der)
        )
    ctype = draw(st.sampled_from(["text/plain", "application/octet-stream", "message/rfc822", ""]))
    cte = draw(st.sampled_from(ENCODINGS))
    body = (
        draw(st.binary(max_size=200)) if kind == "random" else draw(st.text(max_size=80)).encode()
    )
    lines = [f"Content-Type: {ctype}".encode()] + (
        [f"Content-Transfer-Encoding: {cte}".encode()] if cte else []
    )
    return headers + CRLF.join(lines) + CRLF + CRLF + body


def test_random_mime_tree_ends_in_a_final_verdict(alice_judge, mail) -> None:
    genuine = mail.genuine

    @PROPERTY
    @given(tree=mime_trees(mail))
    def random_tree(tree: bytes) -> None:
        assert_final(*alice_judge(mail.send(tree)), genuine)

    random_tree()


# -- the safety bounds -------------------------------------------------------------------------


def assert_bound(judge: Judge, raw: bytes, words: str) -> None:
    verdict, log_text = judge(raw)
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "malformed"), verdict
    assert words in verdict.detail
    assert f"| malformed: {verdict.detail}" in log_text
    assert_final(verdict, log_text, {})


def assert_within_bound(
    judge: Judge, raw: bytes, words: str, genuine: dict[str, str] | None = None
) -> Verdict:
    verdict, log_text = judge(raw)
    assert words not in log_text
    assert_final(verdict, log_text, genuine or {})
    return verdict


def test_more_mime_parts_than_the_bound_is_malformed(make_judge) -> None:
    judge = make_judge()
    words = f"more MIME parts than the bound of {mime.MAX_PARTS}"
    flat = [leaf()] * (mime.MAX_PARTS - 1)  # with the top entity: exactly the bound
    verdict = assert_within_bound(judge, with_from(multipart("mixed", "b", flat)), words)
    assert verdict.reason == "not-signed"
    assert_bound(judge, with_from(multipart("mixed", "b", [*flat, leaf()])), words)
    assert_bound(judge, with_from(multipart("mixed", "b", [*flat, leaf(), leaf()])), words)
    spread = [multipart("mixed", f"c{i}", [leaf()] * 250) for i in range(4)]  # 1 + 4 + 1000
    assert_bound(judge, with_from(multipart("mixed", "b", spread)), words)


def nested(depth: int) -> bytes:
    """An entity whose innermost text part sits ``depth`` levels below the top."""
    entity = leaf(b"bottom")
    for level in range(depth):
        entity = multipart("mixed", f"level{level}", [entity])
    return entity


def test_nesting_deeper_than_the_bound_is_malformed(make_judge) -> None:
    judge = make_judge()
    words = f"MIME nesting deeper than the bound of {mime.MAX_DEPTH}"
    verdict = assert_within_bound(judge, with_from(nested(mime.MAX_DEPTH)), words)
    assert verdict.reason == "not-signed"
    assert_bound(judge, with_from(nested(mime.MAX_DEPTH + 1)), words)
    assert_bound(judge, with_from(nested(200)), words)


def test_more_certificates_than_the_bound_is_malformed(make_judge, mail) -> None:
    judge = make_judge(trusted_certs=str(mail.trust))
    extras = [
        pki.make_leaf(mail.root, f"extra{i}@{DOMAIN}", key_type="ec").cert
        for i in range(smime.MAX_CERTIFICATES)
    ]

    def signed_with(count: int) -> bytes:
        der = pki.sign_der(
            mail.content, mail.alice, tool="cryptography", extra_certs=extras[: count - 1]
        )
        assert der.count(mail.alice.cert.public_bytes(serialization.Encoding.DER)) == 1
        return mail.send(mail.signed_entity(der))

    words = f"more certificates than the bound of {smime.MAX_CERTIFICATES}"
    verdict = assert_within_bound(judge, signed_with(smime.MAX_CERTIFICATES), words, mail.genuine)
    assert (verdict.outcome, verdict.reason) == (Outcome.STORED, "ok")
    assert_bound(judge, signed_with(smime.MAX_CERTIFICATES + 1), words)


def test_header_longer_than_the_bound_is_malformed_at_once(make_judge, mail) -> None:
    """The email package parses these headers in quadratic time: 100,000 addresses in From:
    took 22 s, longer than gunicorn's worker timeout, before the bound."""
    judge = make_judge(trusted_certs=str(mail.trust))
    words = f"longer than the bound of {mime.MAX_HEADER_LENGTH} characters"
    name = "A" * (mime.MAX_HEADER_LENGTH - len(f" <{ALICE}>"))
    at_bound = mail.send(mail.signed_entity(), f"{name} <{ALICE}>")
    verdict = assert_within_bound(judge, at_bound, words, mail.genuine)
    assert (verdict.outcome, verdict.reason) == (Outcome.STORED, "ok")

    # Each under the header-block bound (256 KiB), so this bound is the one that answers.
    start = time.perf_counter()
    assert_bound(judge, with_from(leaf(), "a@props.example, " * 10_000), words)
    params = "; a=b" * 30_000
    signature = mail.signature_part().replace(b"; name=", params.encode() + b"; name=", 1)
    entity = multipart("signed", "b", [mail.content, signature], f"{params}; protocol=x")
    assert_bound(judge, mail.send(entity), words)
    disposition = mail.signature_part().replace(b"attachment", b"attachment" + params.encode())
    entity = multipart(
        "signed", "b", [mail.content, disposition], '; protocol="application/pkcs7-signature"'
    )
    assert_bound(judge, mail.send(entity), words)
    assert time.perf_counter() - start < 5


def test_signature_larger_than_the_bound_is_malformed(make_judge, mail) -> None:
    judge = make_judge(trusted_certs=str(mail.trust))
    words = f"exceeds the bound of {smime.MAX_SIGNATURE_BYTES}"
    at_bound = mail.signed_entity(b"\x30" * smime.MAX_SIGNATURE_BYTES)
    verdict = assert_within_bound(judge, mail.send(at_bound), words)
    assert verdict.reason == "bad-signature"
    assert_bound(
        judge, mail.send(mail.signed_entity(b"\x30" * (smime.MAX_SIGNATURE_BYTES + 1))), words
    )
    # A real opaque signature over a large attachment is refused the same way.
    big = pki.mime_body("attachment " * 100_000, encoding="base64")
    opaque = pki.sign_opaque(big, mail.alice, tool="cryptography")
    assert_bound(judge, mail.send(opaque), words)


# -- the safety net: an exception nobody expected ----------------------------------------------


class BuggyCollector(Collector):
    """The real pipeline with a bug planted outside every stage: a marked message makes the
    pipeline itself raise, as a bug in our own code would. (Exceptions inside a stage are
    that stage's rejection: tests/test_stages.py.)"""

    def _judge(self, delivery: Delivery, deadline: Deadline) -> tuple[Verdict, str | None]:
        if b"X-Plant-Bug: yes" in delivery.raw:
            raise RuntimeError("a stage failed in a way nobody expected")
        return super()._judge(delivery, deadline)


def test_unexpected_error_is_tempfail_and_the_app_serves_on(make_settings, mail) -> None:
    settings = make_settings(trusted_certs=str(mail.trust))
    collector = BuggyCollector.build(settings, attach("webapp", settings.log_file))
    client = create_app(settings, collector).test_client()
    good = mail.send(mail.signed_entity())
    trigger = b"X-Plant-Bug: yes\r\n" + good
    assert post_batch(client, [relay_event(trigger), relay_event(good)]).status_code == 503
    assert post_batch(client, [relay_event(good)]).status_code == 200
    assert post_batch(client, [relay_event(good)]).status_code == 200
    log_text = settings.log_file.read_text("utf-8")
    assert TRACEBACK in log_text and "RuntimeError: a stage failed" in log_text
    assert "| unexpected error while judging this message" in log_text
    assert "| 1 more messages not judged" in log_text
    assert [(o, r) for o, r, _ in VERDICT_LINE.findall(log_text)] == [
        ("tempfail", "internal-error"),  # counted as tempfail: the batch answered 503 ...
        ("stored", "ok"),  # ... at once, without judging the rest; the app serves on
        ("unchanged", "ok"),
    ]
    metric = REGISTRY.get_sample_value(
        "smime_messages_total",
        {"outcome": "tempfail", "reason": "internal-error", "intake": "sparkpost"},
    )
    assert metric is not None and metric >= 1


# -- inputs that once made a library raise where no stage expected it -------------------------


def broken_san_identity(mail: Mail, address: str) -> pki.Identity:
    """A certificate the test CA really issued, whose subjectAltName is not valid DER.

    ``cryptography`` loads it (extensions are parsed lazily) and raises ValueError only when
    the pipeline first reads an extension: an honest library exception no stage expects.
    """
    key = pki.new_key("ec")
    now = dt.datetime.now(dt.UTC)
    issuer_ski = mail.root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(mail.root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x81\x01m"),
            critical=False,
        )
        .sign(mail.root.key, hashes.SHA256())
    )
    with pytest.raises(ValueError):
        _ = cert.extensions
    return pki.Identity(cert, key)


def _patched_bag(mail: Mail, old: bytes, new: bytes) -> bytes:
    """Alice's signature with ``old`` replaced by ``new`` inside her embedded certificate."""
    cert = mail.alice.cert.public_bytes(serialization.Encoding.DER)
    assert cert.count(old) == 1 and mail.der.count(cert) == 1
    return mail.send(mail.signed_entity(mail.der.replace(cert, cert.replace(old, new))))


RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")
DATA_CONTENT_TYPE = bytes.fromhex("300b06092a864886f70d010701")
KNOWN_BUGS: dict[str, Callable[[Mail], bytes]] = {
    # pipeline.log_certificate / certpolicy read extensions outside any try
    "certificate-with-corrupt-subjectAltName": lambda mail: mail.send(
        mail.signed_entity(
            pki.sign_der(mail.content, broken_san_identity(mail, ALICE), tool="cryptography")
        )
    ),
    # smime._verify_signature calls cert.public_key() before its try: UnsupportedAlgorithm
    "certificate-with-unknown-key-algorithm": lambda mail: _patched_bag(
        mail, RSA_ENCRYPTION, RSA_ENCRYPTION[:-1] + b"\x63"
    ),
    # smime._certificates catches ValueError, but cryptography raises x509.InvalidVersion
    "certificate-with-invalid-version": lambda mail: _patched_bag(
        mail, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x09"
    ),
    # smime.verify_signed_data reads encap_content_info's contentType after its try
    "corrupt-encapsulated-content-type": lambda mail: mail.send(
        mail.signed_entity(
            mail.der.replace(DATA_CONTENT_TYPE, b"\x30\x0b\x04" + DATA_CONTENT_TYPE[3:], 1)
        )
    ),
    # dkimpy checks b= where it means bh=, then its b64decode of bh= raises binascii.Error,
    # which is no DKIMException (what dkimcheck catches)
    "dkim-body-hash-not-base64": lambda mail: re.sub(
        rb"bh=[A-Za-z0-9+/]", b"bh=@", mail.send(mail.signed_entity()), count=1
    ),
    # dnskeys turns dnspython's EmptyLabel (a DNSException) into a retryable DNS error
    "dkim-selector-no-dns-name-can-be": lambda mail: mail.send(mail.signed_entity()).replace(
        f"s={SELECTOR};".encode(), b"s=a..b;", 1
    ),
}


@pytest.mark.parametrize("case", sorted(KNOWN_BUGS))
def test_library_errors_on_corrupt_input_are_rejected_not_tempfail(alice_judge, mail, case) -> None:
    verdict, log_text = alice_judge(KNOWN_BUGS[case](mail))
    assert_final(verdict, log_text, mail.genuine)
    assert verdict.outcome is Outcome.REJECTED


def test_relay_metadata_cannot_forge_a_log_line(client) -> None:
    test_client, tail = client
    event = relay_event(b"", msg_from="x\n| outcome=stored,reason=ok,email=forged@example.com")
    assert post_batch(test_client, [event]).status_code == 200
    assert len(clean_verdicts(tail.new())) == 1
