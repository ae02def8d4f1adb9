"""Attacks on a victim whose certificate is already stored: each one a generated message.

Every attack must end rejected with its exact reason, write nothing outside the certificate
folder, and leave the victim's stored file byte for byte as it was. Where the attack carries a
certificate for the victim's address, it is a *newer* one from a trusted CA ("mis-issued"), so
accepting the message would visibly replace the victim's file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from smime_collector.pipeline import Collector
from smime_collector.trust import fingerprint
from smime_collector.verdict import Outcome, Verdict
from tests import pki
from tests.helpers import visible_files
from tests.mailfactory import MailFactory, dkim_sign
from webapp import create_app

VICTIM = "victim@example.com"
ATTACKER = "attacker@example.com"  # an account at the victim's mail provider
OUTSIDER = "mallory@attacker.example"  # the attacker's own domain and certificate
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory: pytest.TempPathFactory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("attacks-pki"))


@pytest.fixture(scope="module")
def certs(mail: MailFactory) -> dict[str, pki.Identity]:
    return {
        "victim-old": mail.leaf(VICTIM, NOW - dt.timedelta(days=60)),
        "victim": mail.leaf(VICTIM, NOW - dt.timedelta(days=2)),
        "rogue": mail.leaf(VICTIM, NOW - dt.timedelta(hours=1)),  # mis-issued, newest
        "colleague": mail.identity("colleague@example.com"),
        "outsider": mail.identity(OUTSIDER),
    }


def snapshot(root: Path, skip: set[Path]) -> dict[str, str]:
    """Every file and link below ``root`` (except ``skip``) with a hash of what it holds."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_symlink():
            found[str(path.relative_to(root))] = "-> " + str(path.readlink())
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Scene:
    """The victim's certificate stored by a genuine message; a file outside the folder."""

    collector: Collector
    root: Path
    folder: Path
    victim_file: Path
    victim_pem: bytes
    outside: Path
    before: dict[str, str]

    def outside_now(self) -> dict[str, str]:
        return snapshot(self.root, {self.folder, self.collector.settings.log_file})

    def attack(self, raw: bytes, reason: str) -> Verdict:
        verdict = self.collector.read_smime_email(raw)
        assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, reason), verdict
        assert verdict.location is None
        self.assert_untouched()
        return verdict

    def assert_untouched(self) -> None:
        assert not self.victim_file.is_symlink()
        assert self.victim_file.read_bytes() == self.victim_pem
        assert visible_files(self.folder) == [self.victim_file.name]
        # No certificate was replaced; a refused older one is recorded in the journal only.
        assert not list((self.folder / ".history").glob("*.crt"))
        assert self.outside_now() == self.before


@pytest.fixture
def scene(tmp_path, make_settings, mail, certs) -> Scene:
    settings = make_settings(trusted_certs=str(mail.ca_file))
    collector: Collector = create_app(settings).extensions["smime_collector"].collector
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"not the collector's to touch\n")
    verdict = collector.read_smime_email(mail.signed(VICTIM, signer=certs["victim"]))
    assert verdict.outcome is Outcome.STORED
    folder = collector.store.folder
    scene = Scene(
        collector,
        tmp_path,
        folder,
        folder / f"{VICTIM}.crt",
        certs["victim"].cert_pem(),
        outside,
        {},
    )
    scene.before = scene.outside_now()
    scene.assert_untouched()
    return scene


def sign_as(mail: MailFactory, raw: bytes, domain: str, **options) -> bytes:
    return dkim_sign(raw, mail.dkim_key(domain), domain, mail.selector, **options)


def dkimpy_accepts(mail: MailFactory, raw: bytes) -> bool:
    return bool(dkim.verify(raw, dnsfunc=mail.dns.dkim_dnsfunc()))


def header_block(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (continuation lines joined) and the body of a CRLF message."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def join(fields: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


# -- the attacks ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["above", "below"])
def test_a_second_from_added_after_signing(scene, mail, certs, where) -> None:
    """The attacker's own DKIM-valid mail, S/MIME signed with a mis-issued victim cert."""
    signed = sign_as(mail, mail.smime(ATTACKER, certs["rogue"]), "example.com")
    fields, body = header_block(signed)
    spoof = f"From: {VICTIM}".encode()
    at = next(i for i, f in enumerate(fields) if f.startswith(b"From:"))
    fields.insert(at if where == "above" else at + 1, spoof)
    scene.attack(join(fields, body), "malformed")


def test_a_from_hidden_from_one_parser_by_a_bare_cr(scene, mail, certs) -> None:
    """Two parsers, two From: headers. A bare CR ends a line for Python's ``email`` parser but
    not for dkimpy, and a bare-CR "blank line" ends the header block for ``email`` only. So
    ``email`` sees ``From: victim`` (and the Content-Type) inside an unsigned X- header, while
    dkimpy sees and verifies the attacker's own signed ``From: attacker``.
    """
    signed = sign_as(mail, mail.smime(ATTACKER, certs["rogue"]), "example.com")
    assert dkimpy_accepts(mail, signed)
    fields, body = header_block(signed)
    signature = next(f for f in fields if f.lower().startswith(b"dkim-signature:"))
    ctype = next(f for f in fields if f.lower().startswith(b"content-type:"))
    rest = [f for f in fields if f is not signature]
    smuggled = [
        signature,
        b"X-Note: a\rFrom: " + VICTIM.encode() + b"\r" + ctype,
        b"X-Pad: b\r",  # followed by CRLF: "\r\r\n" is an empty line to email, not to dkimpy
        *rest,
    ]
    raw = join(smuggled, body)
    assert dkimpy_accepts(mail, raw), "dkimpy still verifies the attacker's From: header"
    scene.attack(raw, "malformed")


def test_l_tag_with_a_forged_mime_part_appended(scene, mail, certs) -> None:
    """A genuine l= signed text mail from the victim gains a Content-Type header (unsigned,
    since the original had none) and a forged S/MIME structure after the signed body bytes."""
    original = pki.message(b"X-Mailer: test\r\n\r\nSee you tomorrow.\r\n", from_addr=VICTIM)
    signed = sign_as(mail, original, "example.com", length=True)
    forged_entity = pki.sign_detached(pki.mime_body("forged"), certs["rogue"])
    ctype, _, forged_body = forged_entity.partition(b"\r\n\r\n")
    fields, body = header_block(signed)
    raw = join([*fields, ctype], body + b"\r\n" + forged_body)
    assert dkimpy_accepts(mail, raw), "l= lets dkimpy ignore everything appended"
    verdict = scene.attack(raw, "dkim-invalid")
    assert "l= tag" in verdict.detail


def test_a_signature_by_another_domain(scene, mail, certs) -> None:
    raw = sign_as(mail, mail.smime(VICTIM, certs["rogue"]), "attacker.example")
    assert dkimpy_accepts(mail, raw)
    scene.attack(raw, "dkim-misaligned")


def test_a_certificate_for_another_address(scene, mail, certs) -> None:
    raw = mail.signed(VICTIM, signer=certs["colleague"])
    scene.attack(raw, "email-mismatch")


def test_the_attackers_valid_certificate_with_the_victims_from(scene, mail, certs) -> None:
    """DKIM by the victim's domain models a compromised relay path: only the address check
    stands between the attacker's certificate and the victim's file."""
    raw = mail.signed(VICTIM, signer=certs["outsider"])
    scene.attack(raw, "email-mismatch")
    assert not (scene.folder / f"{OUTSIDER}.crt").exists()


def test_an_older_certificate_replayed_after_a_newer_one(scene, mail, certs) -> None:
    """A genuine old message from the victim, replayed: valid in every way but older."""
    raw = mail.signed(VICTIM, signer=certs["victim-old"])
    verdict = scene.attack(raw, "older-than-stored")
    assert verdict.email == VICTIM
    [entry] = scene.collector.store.history(VICTIM)
    assert (entry.event, entry.sha256) == ("refused-older", fingerprint(certs["victim-old"].cert))


@pytest.mark.parametrize(
    ("from_header", "address"),
    [
        ('"../../x"@example.com', "../../x@example.com"),
        ('"../outside/x"@example.com', "../outside/x@example.com"),
        ('"../victim"@example.com', "../victim@example.com"),
    ],
)
def test_an_address_with_dot_dot_slash(scene, mail, from_header, address) -> None:
    raw = sign_as(mail, mail.smime(from_header, mail.identity(address)), "example.com")
    assert mail.identity(address).email == address, "a real certificate for that address"
    scene.attack(raw, "unsafe-address")
    escaped = (scene.folder / f"{address}.crt").resolve()
    assert not escaped.exists()
    assert not (scene.root.parent / "x@example.com.crt").exists()


def test_a_symlink_planted_at_the_destination(scene, mail, certs) -> None:
    """The collector never writes through the link: it replaces the link itself (the message
    is stored, not rejected), and the file the link pointed at is untouched."""
    target = scene.outside / "precious.txt"
    scene.victim_file.unlink()
    scene.victim_file.symlink_to(target)
    verdict = scene.collector.read_smime_email(mail.signed(VICTIM, signer=certs["victim"]))
    assert (verdict.outcome, verdict.reason) == (Outcome.STORED, "ok")
    assert not scene.victim_file.is_symlink()
    scene.assert_untouched()
    assert target.read_bytes() == b"not the collector's to touch\n"


def test_the_scene_detects_a_change(scene: Scene) -> None:
    """The checks above can fail: a changed victim file or an outside write is noticed."""
    (scene.outside / "new.txt").write_bytes(b"x")
    with pytest.raises(AssertionError):
        scene.assert_untouched()
    (scene.outside / "new.txt").unlink()
    scene.victim_file.write_bytes(b"changed")
    with pytest.raises(AssertionError):
        scene.assert_untouched()
