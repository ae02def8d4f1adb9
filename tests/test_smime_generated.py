"""Generated S/MIME messages through the real service: formats, algorithms, signers, policy.

Each case is a real message, signed by ``openssl cms``/``openssl smime`` or, where OpenSSL
cannot express the case, assembled with asn1crypto and signed with cryptography (see
``tests/smime_cases.py``). It is posted to ``webapp.create_app(settings)`` as a SparkPost relay
batch and must end in exactly the outcome and reason the case names; when it is stored, the one
``.crt`` file must hold exactly the expected certificate, and OpenSSL must be able to encrypt to
it and decrypt with the matching key. Some cases also ask ``openssl cms -verify`` for its view.

DKIM is off except in the DKIM section (DKIM itself is tested in ``test_dkim.py``), and
``trusted-certs`` is a PEM file with the generated root written into the test's folder.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from flask import Flask

from smime_collector.config import Settings
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome
from tests import pki
from tests.helpers import logged_verdicts, post_batch, relay_event, visible_files
from tests.smime_cases import (
    ALICE,
    CAROL,
    DKIM_DOMAIN,
    X_SIGNATURE_PROTOCOL,
    PreferenceForm,
    World,
    alternative_body,
    bag_of,
    body,
    build_signed_data,
    days_from_now,
    detached,
    forwarded_as_attachment,
    iso,
    key_preference,
    message,
    multipart_signed,
    opaque,
    openssl_cms_sign,
    openssl_native_message,
    pkcs7_mime,
    rebuild,
    replace_once,
    signer_infos,
    signer_serial,
    tamper_opaque,
    to_lf,
    with_bad_signature,
    with_footer,
)
from webapp import create_app

# -- the service under test ------------------------------------------------------------------


@dataclass
class Service:
    """One app built from test settings, and what it logged and stored."""

    settings: Settings
    app: Flask
    anchors: Path

    @property
    def collector(self) -> Collector:
        return self.app.extensions["smime_collector"].collector

    @property
    def folder(self) -> Path:
        return self.collector.store.folder

    def post(self, raw: bytes) -> tuple[str, str, str]:
        """POST ``raw`` as a one-message relay batch; the verdict logged for it."""
        before = len(logged_verdicts(self.settings.log_file))
        response = post_batch(self.app.test_client(), [relay_event(raw)])
        assert response.status_code == 200, response.get_data(as_text=True)
        verdicts = logged_verdicts(self.settings.log_file)
        assert len(verdicts) == before + 1
        return verdicts[-1]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture
def service(make_settings, tmp_path: Path, world: World) -> Callable[..., Service]:
    """Start the app with ``trust`` (World attribute names) as the only anchors."""

    def start(trust: Sequence[str] = ("root",), **overrides: str) -> Service:
        anchors = tmp_path / "trusted.pem"
        anchors.write_bytes(pki.pem(*(getattr(world, name).cert for name in trust)))
        settings = make_settings(**{"dkim": "off", "trusted_certs": str(anchors), **overrides})
        return Service(settings, create_app(settings), anchors)

    return start


# -- cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A message, and how the service must end it.

    ``stores`` names the World identity whose certificate must be the one stored (required for
    reason ``ok``, forbidden otherwise). ``openssl`` is what ``openssl cms -verify`` against
    the same anchors (at ``verify-time`` if set) must answer; None skips the cross-check.
    """

    name: str
    build: Callable[[World], bytes]
    reason: str
    stores: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    trust: tuple[str, ...] = ("root",)
    openssl: bool | None = None

    def __post_init__(self) -> None:
        assert (self.reason == "ok") == (self.stores is not None), self.name

    @property
    def outcome(self) -> str:
        return "stored" if self.reason == "ok" else "rejected"


def params(*cases: Case) -> list:
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return [pytest.param(c, id=c.name) for c in cases]


def from_address(raw: bytes) -> str:
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    line = next(x for x in head.split("\n") if x.lower().startswith("from:"))
    return email.utils.parseaddr(line.split(":", 1)[1])[1]


def run_case(case: Case, world: World, service: Callable[..., Service], tmp_path: Path) -> None:
    svc = service(case.trust, **case.settings)
    raw = case.build(world)
    outcome, reason, logged_email = svc.post(raw)
    assert (outcome, reason) == (case.outcome, case.reason)
    assert logged_email == from_address(raw).lower()
    if case.stores is None:
        assert visible_files(svc.folder) == []
    else:
        expected = getattr(world, case.stores)
        stored = assert_only_stored(svc.folder, logged_email, expected.cert)
        key = tmp_path / "expected.key"
        key.write_bytes(expected.key_pem())
        assert pki.openssl_encrypt_decrypt_roundtrip(stored, key)
    if case.openssl is not None:
        at = svc.settings.verify_time
        attime = int(at.timestamp()) if at else None
        assert pki.openssl_verify_ok(raw, svc.anchors, attime=attime) is case.openssl


def assert_only_stored(folder: Path, address: str, expected: x509.Certificate) -> Path:
    """Exactly one file, ``<address>.crt``, holding one certificate: ``expected``."""
    assert visible_files(folder) == [f"{address}.crt"]
    path = folder / f"{address}.crt"
    data = path.read_bytes()
    assert data.count(b"-----BEGIN CERTIFICATE-----") == 1
    assert x509.load_pem_x509_certificate(data) == expected
    return path


# -- builders shared by several cases --------------------------------------------------------


def signed_with(der: bytes, *, opaque_form: bool = False, from_addr: str = ALICE, **mime) -> bytes:
    """A whole message carrying ``der`` over :func:`body`, detached or opaque."""
    entity = pkcs7_mime(der, **mime) if opaque_form else multipart_signed(body(), der, **mime)
    return message(entity, from_addr)


def opaque_der(signer: pki.Identity, **options) -> bytes:
    return pki.sign_der(body(), signer, detached=False, **options)


def two_signers(first: str, second: str, *, break_first: bool = False) -> Callable[[World], bytes]:
    """One ``openssl cms -sign`` with two ``-signer``, SignerInfos put in the order given."""

    def build(w: World) -> bytes:
        a, b = getattr(w, first), getattr(w, second)
        der = openssl_cms_sign(body(), [a, b])
        by_serial = {signer_serial(i): i for i in signer_infos(der)}
        head, tail = by_serial[a.cert.serial_number], by_serial[b.cert.serial_number]
        der = rebuild(
            der, signers=[with_bad_signature(head) if break_first else head.dump(), tail.dump()]
        )
        assert [signer_serial(i) for i in signer_infos(der)] == [
            a.cert.serial_number,
            b.cert.serial_number,
        ]
        return signed_with(der)

    return build


def decoy_first(
    decoy: str, *, keyid: bool = False, nocerts: bool = False
) -> Callable[[World], bytes]:
    """Alice signs; the bag starts with ``decoy``, another valid certificate for her address."""

    def build(w: World) -> bytes:
        other = getattr(w, decoy)
        der = pki.sign_der(body(), w.alice, keyid=keyid, nocerts=nocerts)
        signer = [] if nocerts else [w.alice.cert]
        bag = list(dict.fromkeys([other.cert, *other.chain, *signer, *w.alice.chain]))
        der = rebuild(der, certs=bag)
        assert bag_of(der)[0] == other.cert
        return signed_with(der)

    return build


def bit_flipped_signature(w: World) -> bytes:
    der = pki.sign_der(body(), w.alice)
    return signed_with(rebuild(der, signers=[with_bad_signature(signer_infos(der)[0])]))


def shuffled_chain(w: World) -> bytes:
    """Leaf -> Sub CA -> Intermediate -> root, the bag ordered intermediate, leaf, sub CA."""
    signer = w.alice_deep
    der = rebuild(pki.sign_der(body(), signer), certs=[w.inter.cert, signer.cert, w.sub_inter.cert])
    return message(multipart_signed(body(), der))


def crafted(signer: str, **options) -> Callable[[World], bytes]:
    """A detached message whose SignedData :func:`build_signed_data` assembled."""

    def build(w: World) -> bytes:
        return signed_with(build_signed_data(body(), getattr(w, signer), **options))

    return build


def preferring(
    signer: str, preferred: str, form: PreferenceForm = "issuer-serial", *, in_bag: bool = True
) -> Callable[[World], bytes]:
    """``signer`` signs with an encryption key preference naming ``preferred``."""

    def build(w: World) -> bytes:
        who, twin = getattr(w, signer), getattr(w, preferred)
        bag = [who.cert, *([twin.cert] if in_bag else []), *who.chain]
        preference = key_preference(twin.cert, form)
        return signed_with(build_signed_data(body(), who, certs=bag, extra_attrs=[preference]))

    return build


# -- formats ---------------------------------------------------------------------------------

FORMAT_CASES = params(
    Case("detached-pkcs7-signature", lambda w: detached(w.alice), "ok", "alice", openssl=True),
    Case(
        "detached-x-pkcs7-signature",
        lambda w: signed_with(pki.sign_der(body(), w.alice), protocol=X_SIGNATURE_PROTOCOL),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "detached-folded-content-type",
        lambda w: signed_with(
            pki.sign_der(body(), w.alice), protocol=X_SIGNATURE_PROTOCOL, fold=True
        ),
        "ok",
        "alice",
        openssl=True,
    ),
    Case("opaque-pkcs7-mime", lambda w: opaque(w.alice), "ok", "alice", openssl=True),
    Case(
        "opaque-x-pkcs7-mime",
        lambda w: signed_with(
            opaque_der(w.alice), opaque_form=True, content_type="application/x-pkcs7-mime"
        ),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "opaque-pkcs7-mime-without-smime-type",
        lambda w: signed_with(opaque_der(w.alice), opaque_form=True, smime_type=None),
        "ok",
        "alice",
    ),
    Case(
        "p7m-octet-stream-without-smime-type",
        lambda w: signed_with(
            opaque_der(w.alice),
            opaque_form=True,
            content_type="application/octet-stream",
            smime_type=None,
        ),
        "ok",
        "alice",
    ),
    Case(
        "openssl-smime-native-detached-lf",
        lambda w: openssl_native_message(to_lf(body()), w.alice, command="smime", detached=True),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "openssl-smime-native-opaque-lf",
        lambda w: openssl_native_message(to_lf(body()), w.alice, command="smime", detached=False),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "openssl-cms-native-detached-lf",
        lambda w: openssl_native_message(to_lf(body()), w.alice, command="cms", detached=True),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "ber-streamed-opaque-chunked-content",
        lambda w: message(
            pkcs7_mime(
                openssl_cms_sign(
                    body("A line for the streaming case.\n" * 400),
                    [w.alice],
                    detached=False,
                    flags=["-stream"],
                )
            )
        ),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "ber-streamed-detached",
        lambda w: signed_with(openssl_cms_sign(body(), [w.alice], flags=["-stream"])),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "no-signed-attributes-detached",
        lambda w: signed_with(openssl_cms_sign(body(), [w.alice], flags=["-noattr"])),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "no-signed-attributes-opaque",
        lambda w: signed_with(
            openssl_cms_sign(body(), [w.alice], detached=False, flags=["-noattr"]),
            opaque_form=True,
        ),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "content-7bit",
        lambda w: message(pki.sign_detached(body(encoding="7bit"), w.alice)),
        "ok",
        "alice",
    ),
    Case(
        "content-8bit-utf8",
        lambda w: message(pki.sign_detached(body("Grüße aus Köln\n", encoding="8bit"), w.alice)),
        "ok",
        "alice",
    ),
    Case(
        "content-8bit-latin1",
        lambda w: message(
            pki.sign_detached(
                body("Grüße aus Köln\n", charset="iso-8859-1", encoding="8bit"), w.alice
            )
        ),
        "ok",
        "alice",
    ),
    Case(
        "content-quoted-printable",
        lambda w: message(
            pki.sign_detached(body("Grüße aus Köln\n", encoding="quoted-printable"), w.alice)
        ),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "content-base64",
        lambda w: message(pki.sign_detached(body(encoding="base64"), w.alice)),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "content-multipart-alternative",
        lambda w: message(pki.sign_detached(alternative_body(), w.alice)),
        "ok",
        "alice",
        openssl=True,
    ),
    Case("lf-only-detached", lambda w: to_lf(detached(w.alice)), "ok", "alice"),
    Case("lf-only-opaque", lambda w: to_lf(opaque(w.alice)), "ok", "alice"),
    Case(
        "lf-only-quoted-printable",
        lambda w: to_lf(
            message(
                pki.sign_detached(body("Grüße aus Köln\n", encoding="quoted-printable"), w.alice)
            )
        ),
        "ok",
        "alice",
    ),
    Case(
        "forwarded-as-attachment",
        lambda w: forwarded_as_attachment(detached(w.alice)),
        "not-signed",
    ),
    Case(
        "signed-part-inside-multipart-mixed",
        lambda w: with_footer(pki.sign_detached(body(), w.alice)),
        "not-signed",
    ),
    Case(
        "enveloped-data",
        lambda w: message(pki.envelope(body(), w.alice.cert)),
        "not-signed",
    ),
    Case(
        "signed-then-enveloped",
        lambda w: message(pki.envelope(pki.sign_detached(body(), w.alice), w.alice.cert)),
        "not-signed",
    ),
    Case(
        "p7m-octet-stream-holding-enveloped-data",
        lambda w: message(
            pki.envelope(body(), w.alice.cert).replace(
                b"application/pkcs7-mime; smime-type=enveloped-data", b"application/octet-stream"
            )
        ),
        "not-signed",
    ),
    Case(
        "certs-only",
        lambda w: message(pki.certs_only([w.alice.cert, w.inter.cert])),
        "not-signed",
    ),
    Case(
        "certs-only-without-smime-type",
        lambda w: message(
            pki.certs_only([w.alice.cert, w.inter.cert]).replace(b" smime-type=certs-only;", b"")
        ),
        "not-signed",
    ),
    Case(
        "multipart-signed-pgp-protocol",
        lambda w: signed_with(pki.sign_der(body(), w.alice), protocol="application/pgp-signature"),
        "not-signed",
    ),
    Case("plain-text", lambda w: message(body()), "not-signed"),
)


@pytest.mark.parametrize("case", FORMAT_CASES)
def test_formats(case: Case, world: World, service, tmp_path: Path) -> None:
    run_case(case, world, service, tmp_path)


# -- algorithms ------------------------------------------------------------------------------

ALGORITHM_CASES = params(
    Case("rsa-pkcs1-sha256", lambda w: detached(w.alice), "ok", "alice", openssl=True),
    Case(
        "rsa-pkcs1-sha384",
        lambda w: detached(w.alice, digest="sha384"),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "rsa-pkcs1-sha512-opaque",
        lambda w: opaque(w.alice, digest="sha512"),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "rsa-pkcs1-sha256-openssl-smime",
        lambda w: detached(w.alice, tool="openssl-smime"),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "rsa-pkcs1-sha256-cryptography",
        lambda w: detached(w.alice, tool="cryptography"),
        "ok",
        "alice",
        openssl=True,
    ),
    Case("rsa-pss-sha256", lambda w: detached(w.alice, pss=True), "ok", "alice", openssl=True),
    Case(
        "rsa-pss-sha512-cryptography",
        lambda w: opaque(w.alice, pss=True, digest="sha512", tool="cryptography"),
        "ok",
        "alice",
        openssl=True,
    ),
    Case("ecdsa-p256-sha256", lambda w: detached(w.alice_p256), "ok", "alice_p256", openssl=True),
    Case(
        "ecdsa-p384-sha384",
        lambda w: detached(w.alice_p384, digest="sha384"),
        "ok",
        "alice_p384",
        openssl=True,
    ),
    Case(
        "ecdsa-p521-sha512",
        lambda w: detached(w.alice_p521, digest="sha512"),
        "ok",
        "alice_p521",
        openssl=True,
    ),
    Case(
        "ecdsa-p384-cryptography",
        lambda w: opaque(w.alice_p384, digest="sha384", tool="cryptography"),
        "ok",
        "alice_p384",
    ),
    Case(
        "ecdsa-under-ec-intermediate",
        lambda w: detached(w.alice_ec_chain),
        "ok",
        "alice_ec_chain",
        openssl=True,
    ),
    Case("sha1-refused", lambda w: detached(w.alice, digest="sha1"), "weak-algorithm"),
    Case(
        "sha1-allowed",
        lambda w: detached(w.alice, digest="sha1"),
        "ok",
        "alice",
        settings={"allow_sha1": "yes"},
    ),
    Case(
        "md5-refused-even-with-allow-sha1",
        lambda w: detached(w.alice, digest="md5"),
        "weak-algorithm",
        settings={"allow_sha1": "yes"},
    ),
    Case(
        "sha1-signature-under-sha256-digest-refused",
        crafted("alice", signature_hash="sha1"),
        "weak-algorithm",
    ),
    Case(
        "sha1-signature-under-sha256-digest-allowed",
        crafted("alice", signature_hash="sha1"),
        "ok",
        "alice",
        settings={"allow_sha1": "yes"},
    ),
    Case("rsa-1024-bit-key", lambda w: detached(w.alice_rsa1024), "weak-algorithm"),
    Case(
        "unsorted-signed-attributes",
        crafted("alice", sorted_attrs=False),
        "ok",
        "alice",
        openssl=True,
    ),
    # Ed25519 signatures verify (assembled by hand: OpenSSL 3.0 cannot sign CMS with Ed25519),
    # but an Ed25519 key cannot receive encrypted mail.
    Case("ed25519-crafted", crafted("alice_ed25519"), "wrong-key-usage"),
)


@pytest.mark.parametrize("case", ALGORITHM_CASES)
def test_algorithms(case: Case, world: World, service, tmp_path: Path) -> None:
    run_case(case, world, service, tmp_path)


def test_ed25519_signed_by_openssl(world: World, service, tmp_path: Path) -> None:
    """With an OpenSSL that signs CMS with Ed25519: verified, then refused for encryption."""
    if not pki.openssl_cms_supports_ed25519():
        with pytest.raises(pki.OpenSSLError, match="digest"):
            pki.sign_der(body(), world.alice_ed25519)
        version = pki.run_openssl("version").decode().strip()
        pytest.skip(f"{version} cannot sign CMS with Ed25519 (ed25519-crafted covers it)")
    case = Case("ed25519-openssl", lambda w: detached(w.alice_ed25519), "wrong-key-usage")
    run_case(case, world, service, tmp_path)


# -- which signer, which certificate ---------------------------------------------------------

SIGNER_CASES = params(
    Case("two-signers-other-address-first", two_signers("bob", "alice"), "ok", "alice"),
    Case("two-signers-untrusted-first", two_signers("alice_untrusted", "alice"), "ok", "alice"),
    Case("two-signers-good-first", two_signers("alice", "bob"), "ok", "alice"),
    Case(
        "two-signers-bad-signature-first",
        two_signers("bob", "alice", break_first=True),
        "ok",
        "alice",
    ),
    Case(
        "two-signers-both-fail-first-reason-wins",
        two_signers("bob", "alice_untrusted"),
        "email-mismatch",
    ),
    Case(
        "signer-by-subject-key-identifier",
        lambda w: detached(w.alice, keyid=True),
        "ok",
        "alice",
        openssl=True,
    ),
    Case("decoy-for-same-address-first", decoy_first("alice_twin"), "ok", "alice", openssl=True),
    Case(
        "decoy-first-signer-by-subject-key-identifier",
        decoy_first("alice_twin", keyid=True),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "decoy-same-serial-other-issuer-first",
        decoy_first("alice_same_serial"),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "signer-certificate-not-sent",
        lambda w: detached(w.alice, nocerts=True),
        "no-certificate",
        openssl=False,
    ),
    Case(
        "signer-certificate-not-sent-decoy-present",
        decoy_first("alice_twin", nocerts=True),
        "no-certificate",
        openssl=False,
    ),
)


@pytest.mark.parametrize("case", SIGNER_CASES)
def test_signers(case: Case, world: World, service, tmp_path: Path) -> None:
    run_case(case, world, service, tmp_path)


# -- certificate policy ----------------------------------------------------------------------

INSIDE_EXPIRED_VALIDITY = iso(days_from_now(-15))

POLICY_CASES = params(
    Case("chain-in-any-order", shuffled_chain, "ok", "alice_deep", openssl=True),
    Case(
        "root-sent-too",
        lambda w: detached(w.alice, extra_certs=[w.root.cert]),
        "ok",
        "alice",
        openssl=True,
    ),
    Case(
        "intermediate-missing",
        lambda w: detached(w.alice, include_chain=False),
        "untrusted",
        openssl=False,
    ),
    Case("untrusted-root", lambda w: detached(w.alice_untrusted), "untrusted", openssl=False),
    Case(
        "untrusted-root-sent-in-the-message",
        lambda w: detached(w.alice_untrusted, extra_certs=[w.other_root.cert]),
        "untrusted",
        openssl=False,
    ),
    Case("leaf-expired", lambda w: detached(w.alice_expired), "expired", openssl=False),
    Case(
        "leaf-expired-judged-inside-its-validity",
        lambda w: detached(w.alice_expired),
        "ok",
        "alice_expired",
        settings={"verify_time": INSIDE_EXPIRED_VALIDITY},
        openssl=True,
    ),
    Case(
        "leaf-expired-backdated-signing-time",
        crafted("alice_expired", signing_time=days_from_now(-15)),
        "expired",
        openssl=False,
    ),
    Case(
        "leaf-valid-signing-time-outside-validity",
        crafted("alice", signing_time=days_from_now(-300)),
        "ok",
        "alice",
        openssl=True,
    ),
    Case("leaf-not-yet-valid", lambda w: detached(w.alice_future), "not-yet-valid", openssl=False),
    Case(
        "intermediate-expired",
        lambda w: detached(w.alice_under_expired_inter),
        "expired",
        openssl=False,
    ),
    Case(
        "intermediate-not-yet-valid",
        lambda w: detached(w.alice_under_future_inter),
        "not-yet-valid",
        openssl=False,
    ),
    Case(
        "root-expired",
        lambda w: detached(w.alice_under_expired_root),
        "expired",
        trust=("expired_root",),
        openssl=False,
    ),
    Case(
        "intermediate-expired-beside-unrelated-future-certificate",
        lambda w: signed_with(
            rebuild(
                pki.sign_der(body(), w.alice_under_expired_inter),
                certs=[w.alice_under_expired_inter.cert, w.bob_future.cert, w.expired_inter.cert],
            )
        ),
        "expired",
    ),
    Case(
        "eku-server-auth-only",
        lambda w: detached(w.alice_server_eku),
        "wrong-key-usage",
        openssl=False,
    ),
    # RFC 5280: anyExtendedKeyUsage restricts nothing. OpenSSL's smimesign purpose disagrees.
    Case("eku-any", lambda w: detached(w.alice_any_eku), "ok", "alice_any_eku", openssl=False),
    Case("eku-absent", lambda w: detached(w.alice_no_eku), "ok", "alice_no_eku", openssl=True),
    Case(
        "intermediate-eku-server-auth-only",
        lambda w: detached(w.alice_under_server_inter),
        "wrong-key-usage",
        openssl=False,
    ),
    Case(
        "issuer-without-ca-true",
        lambda w: detached(w.alice_under_not_ca),
        "untrusted",
        openssl=False,
    ),
    Case(
        "key-usage-absent",
        lambda w: detached(w.alice_no_key_usage),
        "ok",
        "alice_no_key_usage",
        openssl=True,
    ),
    Case(
        "key-usage-without-digital-signature",
        lambda w: detached(w.alice_rsa_encrypt_only),
        "wrong-key-usage",
    ),
    Case(
        "address-in-subject-only",
        lambda w: detached(w.alice_subject_only),
        "ok",
        "alice_subject_only",
        openssl=True,
    ),
    Case(
        "san-decides-over-subject-email",
        lambda w: message(pki.sign_detached(body(), w.alice_in_subject_bob_in_san), ALICE),
        "email-mismatch",
    ),
    Case(
        "from-address-in-other-case",
        lambda w: message(pki.sign_detached(body(), w.alice), "Alice@Example.COM"),
        "ok",
        "alice",
    ),
    Case(
        "certificate-address-in-other-case",
        lambda w: message(pki.sign_detached(body(), w.alice_mixed_case), ALICE),
        "ok",
        "alice_mixed_case",
    ),
    Case(
        "from-with-display-name",
        lambda w: message(pki.sign_detached(body(), w.alice), f'"Alice Example" <{ALICE}>'),
        "ok",
        "alice",
    ),
    Case(
        "email-mismatch",
        lambda w: message(pki.sign_detached(body(), w.bob), ALICE),
        "email-mismatch",
        openssl=True,  # OpenSSL does not compare addresses
    ),
)


@pytest.mark.parametrize("case", POLICY_CASES)
def test_policy(case: Case, world: World, service, tmp_path: Path) -> None:
    run_case(case, world, service, tmp_path)


# -- usable for encryption -------------------------------------------------------------------

ENCRYPTION_CASES = params(
    Case(
        "rsa-digital-signature-only", lambda w: detached(w.alice_rsa_sign_only), "wrong-key-usage"
    ),
    Case("ec-with-key-agreement", lambda w: detached(w.alice_p256), "ok", "alice_p256"),
    Case("ec-without-key-agreement", lambda w: detached(w.alice_ec_sign_only), "wrong-key-usage"),
    Case(
        "preference-issuer-and-serial",
        preferring("alice_rsa_sign_only", "alice_rsa_encrypt_only"),
        "ok",
        "alice_rsa_encrypt_only",
        openssl=True,
    ),
    Case(
        "preference-microsoft-attribute",
        preferring("alice_rsa_sign_only", "alice_rsa_encrypt_only", "microsoft"),
        "ok",
        "alice_rsa_encrypt_only",
        openssl=True,
    ),
    Case(
        "preference-subject-alt-key-identifier",
        preferring("alice_rsa_sign_only", "alice_rsa_encrypt_only", "subject-key-id"),
        "ok",
        "alice_rsa_encrypt_only",
        openssl=True,
    ),
    Case(
        "preference-recipient-key-id",
        preferring("alice_rsa_sign_only", "alice_rsa_encrypt_only", "recipient-key-id"),
        "ok",
        "alice_rsa_encrypt_only",
    ),
    Case(
        "preference-ed25519-signer",
        preferring("alice_ed25519", "alice_rsa_encrypt_only"),
        "ok",
        "alice_rsa_encrypt_only",
    ),
    # The preferred certificate is validated like the signer's, address included: naming a
    # certificate for someone else is email-mismatch (its key usage is fine, its owner is not).
    Case(
        "preference-for-other-address",
        preferring("alice_rsa_sign_only", "bob_rsa_encrypt_only"),
        "email-mismatch",
    ),
    Case(
        "preference-not-in-message",
        preferring("alice_rsa_sign_only", "alice_rsa_encrypt_only", in_bag=False),
        "wrong-key-usage",
    ),
    Case(
        "preference-expired",
        preferring("alice_rsa_sign_only", "alice_rsa_encrypt_only_expired"),
        "expired",
    ),
    Case(
        "preference-signing-only-too",
        preferring("alice_rsa_sign_only", "alice_rsa_sign_only_twin"),
        "wrong-key-usage",
    ),
    # README: the preference is consulted only when the signer's certificate cannot encrypt.
    Case(
        "preference-ignored-when-signer-can-encrypt",
        preferring("alice", "alice_rsa_encrypt_only"),
        "ok",
        "alice",
    ),
)


@pytest.mark.parametrize("case", ENCRYPTION_CASES)
def test_encryption_usage(case: Case, world: World, service, tmp_path: Path) -> None:
    run_case(case, world, service, tmp_path)


# -- altered after signing -------------------------------------------------------------------

TAMPER_CASES = params(
    Case(
        "detached-body-altered",
        lambda w: replace_once(detached(w.alice), b"Hello there", b"Jello there"),
        "bad-signature",
        openssl=False,
    ),
    Case(
        "detached-signed-part-header-altered",
        lambda w: replace_once(detached(w.alice), b"charset=utf-8", b"charset=UTF-8"),
        "bad-signature",
        openssl=False,
    ),
    Case(
        "detached-line-end-added",
        lambda w: replace_once(
            detached(w.alice), b"Its second line.\r\n", b"Its second line.\r\n\r\n"
        ),
        "bad-signature",
        openssl=False,
    ),
    Case(
        "opaque-content-altered",
        lambda w: tamper_opaque(opaque(w.alice), b"Hello there", b"Jello there"),
        "bad-signature",
        openssl=False,
    ),
    Case(
        "no-signed-attributes-altered",
        lambda w: replace_once(
            signed_with(openssl_cms_sign(body(), [w.alice], flags=["-noattr"])),
            b"Hello there",
            b"Jello there",
        ),
        "bad-signature",
        openssl=False,
    ),
    Case(
        "signature-value-altered",
        bit_flipped_signature,
        "bad-signature",
        openssl=False,
    ),
    Case(
        "signature-of-another-message",
        lambda w: signed_with(pki.sign_der(body("Another text.\n"), w.alice)),
        "bad-signature",
        openssl=False,
    ),
    # RFC 5652 §11.1: contentType MUST match eContentType (OpenSSL 3.0 does not compare it).
    Case(
        "content-type-attribute-mismatch",
        crafted("alice", content_type="signed_data"),
        "bad-signature",
    ),
    Case(
        "outer-headers-altered",
        lambda w: replace_once(detached(w.alice), b"Subject: test", b"Subject: changed"),
        "ok",
        "alice",
        openssl=True,
    ),
)


@pytest.mark.parametrize("case", TAMPER_CASES)
def test_tampering(case: Case, world: World, service, tmp_path: Path) -> None:
    run_case(case, world, service, tmp_path)


# -- the Verdict object, straight from the collector -----------------------------------------


def test_verdict_names_the_lower_case_address_and_path(world: World, service) -> None:
    svc = service()
    raw = message(pki.sign_detached(body(), world.alice), "Alice@Example.COM")
    verdict = svc.collector.read_smime_email(raw)
    assert (verdict.outcome, verdict.reason, verdict.email) == (
        Outcome.STORED,
        "ok",
        "alice@example.com",
    )
    assert verdict.location == str(svc.folder / "alice@example.com.crt")
    assert_only_stored(svc.folder, "alice@example.com", world.alice.cert)
    again = svc.collector.read_smime_email(to_lf(raw))
    assert (again.outcome, again.reason, again.location) == (
        Outcome.UNCHANGED,
        "ok",
        verdict.location,
    )


# -- with DKIM on ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key() -> pki.DKIMKey:
    return pki.DKIMKey()


def _dkim(w: World, key: pki.DKIMKey, *, altered: bool = False, lf: bool = False) -> bytes:
    raw = detached(w.carol)
    if altered:
        raw = replace_once(raw, b"Hello there", b"Jello there")
    signed = key.sign(raw, DKIM_DOMAIN)
    return to_lf(signed) if lf else signed


DKIM_CASES = [
    pytest.param(lambda w, k: _dkim(w, k), ("stored", "ok"), id="dkim-and-smime-valid"),
    pytest.param(
        lambda w, k: _dkim(w, k, lf=True), ("stored", "ok"), id="dkim-and-smime-valid-lf-only"
    ),
    pytest.param(
        lambda w, k: _dkim(w, k, altered=True),
        ("rejected", "bad-signature"),
        id="dkim-valid-smime-altered-before-dkim-signing",
    ),
    pytest.param(lambda w, k: detached(w.carol), ("rejected", "dkim-missing"), id="dkim-missing"),
    pytest.param(
        lambda w, k: message(body(), CAROL),
        ("rejected", "not-signed"),
        id="not-signed-decided-before-dkim",
    ),
]


@pytest.mark.parametrize(("build", "expected"), DKIM_CASES)
def test_with_dkim(build, expected, world: World, dkim_key: pki.DKIMKey, dns, service) -> None:
    dns.add_txt(pki.DKIMKey.record_name(DKIM_DOMAIN), dkim_key.txt_record())
    svc = service(dkim="require")
    outcome, reason, logged_email = svc.post(build(world, dkim_key))
    assert (outcome, reason, logged_email) == (*expected, CAROL)
    if outcome == "stored":
        assert_only_stored(svc.folder, CAROL, world.carol.cert)
    else:
        assert visible_files(svc.folder) == []
