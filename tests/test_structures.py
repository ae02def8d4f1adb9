"""Properties over built structures, not flipped bytes: CMS SignedData with odd signed attribute
sets, DKIM-Signature tag lists, header block shapes, MIME trees.

Each structure is assembled from parts Hypothesis draws and signed for real (the CMS signature
over exactly the drawn attributes, DKIM over the drawn message), so the odd part reaches the
code that reads it instead of stopping at a broken signature. With DNS up and the disk
writable (no injected I/O fault), no input may end in ``tempfail``: that would have the relay
retry a message for ever. Where the structure is a valid one, it must be stored.

The time bound is Hypothesis' own per-example ``deadline`` of 500 ms (:data:`BOUNDED`): an
example slower than that fails the test, and Hypothesis runs it again to be sure before it
says so. Building and signing the example happens inside that time too, so the bound on the
judgement alone is tighter still.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography.hazmat.primitives import hashes
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_collector import message as mime
from smime_collector import smime
from smime_collector.config import Settings
from smime_collector.logsetup import attach
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict
from tests import hostile, pki
from tests.dnsserver import LoopbackDNS
from tests.helpers import GENERATED_MAIL, sha256_of_pem

DOMAIN = "structures.example"
SELECTOR = "structures"
ALICE = f"alice@{DOMAIN}"
CRLF = b"\r\n"

BOUNDED = settings(GENERATED_MAIL, max_examples=150, deadline=dt.timedelta(milliseconds=500))


@dataclass
class Sender:
    root: pki.Identity
    alice: pki.Identity
    key: pki.DKIMKey
    trust: Path
    content: bytes

    @property
    def fingerprint(self) -> str:
        return self.alice.cert.fingerprint(hashes.SHA256()).hex()

    def dkim(self, raw: bytes) -> bytes:
        return self.key.sign(raw, DOMAIN, SELECTOR)


@pytest.fixture(scope="module")
def sender(tmp_path_factory: pytest.TempPathFactory, dns_server: LoopbackDNS) -> Sender:
    folder = tmp_path_factory.mktemp("structures-pki")
    root = pki.make_root("Structures Root")
    key = pki.DKIMKey()
    dns_server.add_txt(pki.DKIMKey.record_name(DOMAIN, SELECTOR), key.txt_record())
    (folder / "root.pem").write_bytes(root.cert_pem())
    return Sender(
        root, pki.make_leaf(root, ALICE), key, folder / "root.pem", pki.mime_body("Hello.\n")
    )


@pytest.fixture
def collector(tmp_path: Path, sender: Sender, dns_server: LoopbackDNS) -> Collector:
    values = {
        "user-certs-dir": str(tmp_path / "certs"),
        "log-file": str(tmp_path / "webapp.log"),
        "dns-nameservers": dns_server.nameserver,
        "dns-timeout": "1",
        "trusted-certs": str(sender.trust),
    }
    settings_ = Settings.from_mapping(values, tmp_path, "test")
    return Collector.build(settings_, attach("structures", settings_.log_file))


def no_traceback(collector: Collector) -> None:
    """Every odd input was handled where it was read: none reached the last-resort net."""
    assert "Traceback" not in collector.settings.log_file.read_text("utf-8")


def assert_final(verdict: Verdict, sender: Sender) -> None:
    assert verdict.outcome is not Outcome.TEMPFAIL, verdict
    if verdict.outcome is not Outcome.REJECTED:
        assert verdict.email == ALICE
        assert sha256_of_pem(Path(verdict.location)) == sender.fingerprint


# -- CMS SignedData with odd signed attributes --------------------------------------------------

OTHER_OIDS = [
    "1.2.840.113549.1.9.5",  # signingTime
    "1.2.840.113549.1.9.15",  # smimeCapabilities
    smime.SMIME_ENCRYPTION_KEY_PREFERENCE,
    smime.MS_ENCRYPTION_KEY_PREFERENCE,
    "1.2.3.4",
    "2.999.1",
]


@st.composite
def attribute_value(draw: st.DrawFn, digest: bytes) -> bytes:
    """One DER value: right, wrong, of another type, or not DER at all."""
    kind = draw(st.sampled_from(["data", "oid", "digest", "octets", "int", "null", "utf8", "raw"]))
    if kind == "data":
        return core.ObjectIdentifier(hostile.DATA_OID).dump()
    if kind == "oid":
        return core.ObjectIdentifier(draw(st.sampled_from(["1.2.3", "2.5.4.3"]))).dump()
    if kind == "digest":
        return core.OctetString(digest).dump()
    if kind == "octets":
        return core.OctetString(draw(st.binary(max_size=40))).dump()
    if kind == "int":
        return core.Integer(draw(st.integers(-(2**70), 2**70))).dump()
    if kind == "null":
        return core.Null().dump()
    if kind == "utf8":
        return core.UTF8String(draw(st.text(max_size=20))).dump()
    # Never empty, never a leading 0x00 (an end-of-contents marker): a raw value must be
    # something, so that the expected verdict counts it.
    return draw(st.binary(min_size=1, max_size=12).filter(lambda data: data[0] != 0))


@st.composite
def attribute_sets(draw: st.DrawFn, content: bytes) -> tuple[list[bytes], str]:
    """Signed attributes in any order, and what must become of them: "stored", "rejected",
    or "either" (contentType or messageDigest present twice, each right: RFC 5652 forbids
    it, the service tolerates it)."""
    digest = hashlib.sha256(content).digest()
    standard = {
        hostile.CONTENT_TYPE_OID: core.ObjectIdentifier(hostile.DATA_OID).dump(),
        hostile.MESSAGE_DIGEST_OID: core.OctetString(digest).dump(),
    }
    attributes: list[bytes] = []
    shapes = []
    for oid, right in standard.items():
        shape = draw(st.sampled_from(["right", "right", "absent", "empty", "two", "odd", "twice"]))
        if shape == "odd":
            value = draw(attribute_value(digest))
            shape = "right" if value == right else "odd"
            attributes.append(hostile.attribute(oid, [value]))
        elif shape == "right":
            attributes.append(hostile.attribute(oid, [right]))
        elif shape == "empty":
            attributes.append(hostile.attribute(oid, []))
        elif shape == "two":
            attributes.append(hostile.attribute(oid, [right, draw(attribute_value(digest))]))
        elif shape == "twice":
            attributes += [hostile.attribute(oid, [right])] * 2
        shapes.append(shape)
    extras = draw(
        st.lists(
            st.tuples(st.sampled_from(OTHER_OIDS), st.lists(attribute_value(digest), max_size=3)),
            max_size=70,
        )
    )
    attributes += [hostile.attribute(oid, values) for oid, values in extras]
    if len(attributes) > smime.MAX_SIGNED_ATTRIBUTES or set(shapes) - {"right", "twice"}:
        expect = "rejected"
    else:
        expect = "stored" if set(shapes) == {"right"} else "either"
    return draw(st.permutations(attributes)), expect


def test_cms_with_odd_signed_attributes_ends_in_a_final_verdict(collector, sender) -> None:
    @BOUNDED
    @given(drawn=attribute_sets(sender.content))
    def odd(drawn: tuple[list[bytes], str]) -> None:
        attributes, expect = drawn
        der = hostile.signed_data(sender.content, sender.alice, attributes)
        raw = sender.dkim(hostile.detached_message(sender.content, der, ALICE))
        verdict = collector.read_smime_email(raw)
        assert_final(verdict, sender)
        if expect == "stored":
            assert verdict.outcome in (Outcome.STORED, Outcome.UNCHANGED), verdict
        elif expect == "rejected":
            assert verdict.reason in ("bad-signature", "malformed"), verdict

    odd()
    no_traceback(collector)


# -- DKIM-Signature tag lists ------------------------------------------------------------------

TAG_NAMES = ["v", "a", "c", "d", "s", "h", "bh", "b", "l", "t", "x", "i", "q", "z", "foo", "1x"]
printable = st.text(alphabet=string.ascii_letters + string.digits + " .:@=+/-_", max_size=30)


@st.composite
def tag_value(draw: st.DrawFn, name: str) -> str:
    sensible = {
        "v": ["1", "2", ""],
        "a": ["rsa-sha256", "rsa-sha1", "ed25519-sha256", "RSA-SHA256", "rsa-md5"],
        "c": ["relaxed/simple", "simple", "relaxed/relaxed", "x/y", "relaxed/"],
        "d": [DOMAIN, f"mail.{DOMAIN}", "co.uk", "example.com", "", "a..b", "é.example"],
        "s": [SELECTOR, "nokey", "", "a b", "x" * 70],
        "h": [
            "from",
            "from:to:subject",
            "to",
            ":".join(["from"] + [f"x{i}" for i in range(70)]),
            "",
        ],
        "bh": ["", "!!", "AAAA", "x" * 44],
        "b": ["", "AAAA", "QUJD\r\n RA==", "x" * 172],
        "l": ["0", "", "12", "9" * 80],
        "t": ["0", "99999999999", "", "x", "9" * 5000],
        "x": ["1", "99999999999", ""],
        "i": [f"@{DOMAIN}", "@other.example", "", DOMAIN],
        "q": ["dns/txt", "dns"],
    }.get(name, [""])
    return draw(st.one_of(st.sampled_from(sensible), printable))


@st.composite
def dkim_headers(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(st.sampled_from(TAG_NAMES), max_size=14))
    parts = [f"{name}={draw(tag_value(name))}" for name in names]
    separator = draw(st.sampled_from(["; ", ";", ";\r\n\t", " ; "]))
    trailer = draw(st.sampled_from(["", ";", "; "]))
    return b"DKIM-Signature: " + (separator.join(parts) + trailer).encode() + CRLF


def test_dkim_tag_lists_end_in_a_final_verdict(collector, sender) -> None:
    genuine = sender.dkim(
        pki.message(pki.sign_detached(sender.content, sender.alice), from_addr=ALICE)
    )

    @BOUNDED
    @given(junk=st.lists(dkim_headers(), min_size=1, max_size=8))
    def tags(junk: list[bytes]) -> None:
        verdict = collector.read_smime_email(b"".join(junk) + genuine)
        assert_final(verdict, sender)
        if len(junk) < 5:  # the genuine signature is among the five evaluated
            assert verdict.outcome in (Outcome.STORED, Outcome.UNCHANGED), verdict

    tags()
    no_traceback(collector)


# -- header block shapes -----------------------------------------------------------------------

FIELD_NAMES = ["X-Note", "Subject", "Received", "To", "Comments", "X Odd", "X:Y", "", "ÿ"]


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(FIELD_NAMES))
    alphabet = string.printable.replace("\r", "").replace("\n", "")
    value = draw(st.text(alphabet=alphabet, max_size=40))
    folds = draw(st.integers(0, 3))
    value += "".join(draw(st.sampled_from(["\r\n x", "\r\n\t", "\r\n "])) for _ in range(folds))
    line = f"{name}: {value}".encode("utf-8", "surrogateescape")
    if draw(st.integers(0, 4)) == 0:
        line += b" " + b"y" * draw(st.sampled_from([1000, 20_000]))
    return (line + CRLF) * draw(st.sampled_from([1, 1, 1, 20, 400]))


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    prefix = draw(
        st.sampled_from([b"", b"", b" leading\r\n", b"From alice Sat Nov 28\r\n", b"\t\r\n"])
    )
    return prefix + b"".join(draw(st.lists(header_lines(), max_size=6)))


def test_header_block_shapes_end_in_a_final_verdict(collector, sender) -> None:
    entity = pki.sign_detached(sender.content, sender.alice)

    @BOUNDED
    @given(
        block=header_blocks(),
        line_ends=st.sampled_from(["crlf", "crlf", "lf"]),
        sign=st.booleans(),
    )
    def shapes(block: bytes, line_ends: str, sign: bool) -> None:
        raw = block + pki.message(entity, from_addr=ALICE)
        if sign and len(block) < 100_000:
            try:
                raw = sender.dkim(raw)
            except Exception:  # noqa: BLE001 - dkimpy refuses to sign some shapes: judge unsigned
                pass
        if line_ends == "lf":
            raw = raw.replace(CRLF, b"\n")
        verdict = collector.read_smime_email(raw)
        assert_final(verdict, sender)
        if block[:1] in (b" ", b"\t"):
            assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "malformed")
        if len(block) > 2 * mime.MAX_HEADER_BLOCK_BYTES:
            assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "malformed")

    shapes()
    no_traceback(collector)


# -- MIME trees ---------------------------------------------------------------------------------


@st.composite
def mime_trees(draw: st.DrawFn, sender: Sender, depth: int = 0) -> tuple[bytes, int]:
    """A MIME entity and its depth; leaves may be Alice's signed content or signature."""
    if depth < 10 and draw(st.integers(0, 2)) == 0:
        children = draw(st.lists(mime_trees(sender, depth + 1), min_size=1, max_size=3))
        subtype = draw(st.sampled_from(["mixed", "signed", "alternative", "related"]))
        boundary = f"b{depth}-{draw(st.integers(0, 99))}"
        body = b"".join(b"--" + boundary.encode() + CRLF + c + CRLF for c, _ in children)
        body += b"--" + boundary.encode() + b"--" + CRLF
        protocol = '; protocol="application/pkcs7-signature"' if subtype == "signed" else ""
        head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{protocol}'.encode()
        return head + CRLF + CRLF + body, max(d for _, d in children)
    kind = draw(st.sampled_from(["text", "content", "signed"]))
    if kind == "content":
        return sender.content, depth
    if kind == "signed":
        return pki.sign_detached(sender.content, sender.alice), depth + 1
    return b"Content-Type: text/plain\r\n\r\n" + draw(st.binary(max_size=50)), depth


def test_mime_trees_end_in_a_final_verdict(collector, sender) -> None:
    @BOUNDED
    @given(tree=mime_trees(sender))
    def trees(tree: tuple[bytes, int]) -> None:
        entity, depth = tree
        verdict = collector.read_smime_email(sender.dkim(pki.message(entity, from_addr=ALICE)))
        assert_final(verdict, sender)
        if depth > mime.MAX_DEPTH:
            assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "malformed")

    trees()
    no_traceback(collector)
