"""Proof that the test-support modules work: tests/dnsserver.py and tests/pki.py."""

from __future__ import annotations

import base64
import email
import importlib.util
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests import pki
from tests.dnsserver import LoopbackDNS, load_zone_file
from tests.paths import SPARKY

DOMAIN = "example.com"
SENDER = "alice@example.com"
TEXT = "Hello there,\nthis is a signed test message.\n"


@pytest.fixture
def server() -> Iterator[LoopbackDNS]:
    with LoopbackDNS({"sel._domainkey.example.com": "v=DKIM1; p=short"}) as srv:
        yield srv


# -- DNS server ------------------------------------------------------------------------------


def test_answers_txt_case_insensitively(server: LoopbackDNS) -> None:
    server.add_txt("Other.Example.COM.", "hello", ttl=60)
    res = server.resolver()
    answer = res.resolve("SEL._DomainKey.example.com", "TXT")
    assert b"".join(answer[0].strings) == b"v=DKIM1; p=short"
    assert answer.rrset.ttl == 300
    assert res.resolve("other.example.com", "TXT").rrset.ttl == 60
    assert server.nameserver == f"127.0.0.1:{server.port}"


def test_long_txt_is_split_into_255_byte_strings(server: LoopbackDNS) -> None:
    value = "p=" + "A" * 998
    server.add_txt("long.example.com", value)
    strings = server.resolver().resolve("long.example.com", "TXT")[0].strings
    assert [len(s) for s in strings] == [255, 255, 255, 235]
    assert b"".join(strings).decode() == value


def test_oversized_udp_answer_is_truncated_and_tcp_answers(server: LoopbackDNS) -> None:
    server.add_txt("big.example.com", "x" * 1000)
    plain = dns.message.make_query("big.example.com", "TXT")
    assert dns.query.udp(plain, "127.0.0.1", port=server.port, timeout=2).flags & dns.flags.TC
    edns = dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=4096)
    full = dns.query.udp(edns, "127.0.0.1", port=server.port, timeout=2)
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0][0].strings) == 4
    assert server.resolver().resolve("big.example.com", "TXT")  # resolver retries via TCP
    assert server.tcp_queries == 1


def test_nxdomain_nodata_and_remove(server: LoopbackDNS) -> None:
    res = server.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("missing.example.com", "TXT")
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("sel._domainkey.example.com", "A")
    server.remove("sel._domainkey.example.com.")
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("sel._domainkey.example.com", "TXT")


def test_servfail_mode(server: LoopbackDNS) -> None:
    server.mode = "servfail"
    with pytest.raises(dns.resolver.NoNameservers):
        server.resolver().resolve("sel._domainkey.example.com", "TXT")
    query = dns.message.make_query("sel._domainkey.example.com", "TXT")
    reply = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.SERVFAIL
    with pytest.raises(ValueError, match="mode"):
        server.mode = "broken"


def test_drop_mode_times_out(server: LoopbackDNS) -> None:
    server.mode = "drop"
    started = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        server.resolver(lifetime=0.5).resolve("sel._domainkey.example.com", "TXT")
    query = dns.message.make_query("sel._domainkey.example.com", "TXT")
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=0.5)
    assert time.monotonic() - started < 3
    assert server.queries >= 2 and server.tcp_queries == 1
    server.mode = "normal"
    assert server.resolver().resolve("sel._domainkey.example.com", "TXT")


def test_counts_concurrent_queries(server: LoopbackDNS) -> None:
    res = server.resolver()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: res.resolve("sel._domainkey.example.com", "TXT"), range(24)))
    assert server.queries == 24
    assert server.query_log[0] == ("sel._domainkey.example.com.", "TXT")
    server.reset_queries()
    assert (server.queries, server.query_log) == (0, [])


def _port_is_free(port: int) -> bool:
    """Whether both UDP and TCP can bind 127.0.0.1:port."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, kind == socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def test_ports_and_stop() -> None:
    with LoopbackDNS() as one, LoopbackDNS() as two:
        assert one.port != two.port
        assert not _port_is_free(one.port)
        one.stop()
        one.stop()  # idempotent
        assert _port_is_free(one.port)
        assert not [t for t in threading.enumerate() if t.name.endswith(f"-{one.port}")]
    assert _port_is_free(two.port)


def test_load_zone_file(tmp_path: Path) -> None:
    zone = tmp_path / "zone.txt"
    zone.write_text(
        "; comment\n\n"
        'a._domainkey.example.org. 300 IN TXT "v=DKIM1; " "k=rsa; p=AB" "CD"\n'
        'b.example.org. TXT "say \\"hi\\"\\059"\n'
        "c.example.org. A 192.0.2.1\n"
    )
    assert load_zone_file(zone) == {
        "a._domainkey.example.org.": "v=DKIM1; k=rsa; p=ABCD",
        "b.example.org.": 'say "hi";',
    }
    sparky = load_zone_file(SPARKY / "dns-zone.txt")
    assert list(sparky) == ["20161025._domainkey.gmail.com."]
    assert sparky["20161025._domainkey.gmail.com."].startswith("k=rsa; p=MIIB")


# -- DKIM ------------------------------------------------------------------------------------


def test_generated_dkim_signature_verifies_through_server(server: LoopbackDNS) -> None:
    key = pki.DKIMKey()
    server.add_txt(key.record_name(DOMAIN), key.txt_record())
    raw = pki.message(pki.mime_body(TEXT), from_addr=f"Alice <{SENDER}>")
    signed = key.sign(raw, DOMAIN, length=True)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;") and b" l=" in signed
    lookup = server.dkim_dnsfunc()
    assert dkim.verify(signed, dnsfunc=lookup)
    assert server.query_log[-1] == ("test._domainkey.example.com.", "TXT")
    assert not dkim.verify(signed.replace(b"Subject: test", b"Subject: tost"), dnsfunc=lookup)
    server.mode = "servfail"
    assert not dkim.verify(signed, dnsfunc=lookup)


def test_dkim_include_headers(server: LoopbackDNS) -> None:
    key = pki.DKIMKey(bits=1024)
    server.add_txt(key.record_name(DOMAIN, "s1"), key.txt_record())
    raw = pki.message(pki.mime_body(), from_addr=SENDER, subject="changeable")
    signed = key.sign(raw, DOMAIN, "s1", include_headers=["From", "To"])
    tags = re.search(rb"h=([^;]*);", signed.split(b"\r\nTo:")[0].replace(b"\r\n", b""))
    assert [h.strip() for h in tags[1].split(b":")] == [b"from", b"to"]
    changed = signed.replace(b"Subject: changeable", b"Subject: changed")
    assert dkim.verify(changed, dnsfunc=server.dkim_dnsfunc())


@pytest.mark.skipif(importlib.util.find_spec("nacl") is None, reason="dkimpy needs PyNaCl")
def test_dkim_ed25519(server: LoopbackDNS) -> None:
    key = pki.DKIMKey("ed25519")
    server.add_txt(key.record_name(DOMAIN), key.txt_record())
    signed = key.sign(pki.message(pki.mime_body(), from_addr=SENDER), DOMAIN)
    assert dkim.verify(signed, dnsfunc=server.dkim_dnsfunc())


def test_gmail_key_from_zone_verifies_bob_through_server() -> None:
    with LoopbackDNS(load_zone_file(SPARKY / "dns-zone.txt")) as srv:
        lookup = srv.dkim_dnsfunc()
        assert dkim.verify((SPARKY / "signed-from-bob.eml").read_bytes(), dnsfunc=lookup)
        bad = (SPARKY / "signed-from-bob-bad-dkim.eml").read_bytes()
        assert not dkim.verify(bad, dnsfunc=lookup)
        assert srv.queries == 2


# -- PKI and S/MIME --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> pki.Identity:
    return pki.make_root()


@pytest.fixture(scope="module")
def inter(root: pki.Identity) -> pki.Identity:
    return pki.make_intermediate(root, "Test Intermediate CA")


@pytest.fixture(scope="module")
def leaf(inter: pki.Identity) -> pki.Identity:
    return pki.make_leaf(inter, SENDER)


@pytest.fixture(scope="module")
def ca_file(root: pki.Identity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return root.write(tmp_path_factory.mktemp("ca"), "root")[0]


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def _p7(entity: bytes) -> bytes:
    """The DER of the first application/pkcs7-* part of a MIME entity."""
    msg = email.message_from_bytes(entity)
    part = next(p for p in msg.walk() if p.get_content_type().startswith("application/pkcs7"))
    return part.get_payload(decode=True)


def _signer_info(entity: bytes) -> cms.SignerInfo:
    return cms.ContentInfo.load(_p7(entity))["content"]["signer_infos"][0]


def _tamper(entity: bytes) -> bytes:
    """Change one byte of the signed text, inside the base64 for opaque messages."""
    if b"multipart/signed" in entity:
        return entity.replace(b"Hello there", b"Jello there", 1)
    head, _, body = entity.partition(b"\r\n\r\n")
    der = base64.b64decode(body).replace(b"Hello there", b"Jello there", 1)
    return head + b"\r\n\r\n" + base64.encodebytes(der).replace(b"\n", b"\r\n")


def test_certificate_profiles(root: pki.Identity, inter: pki.Identity, leaf: pki.Identity) -> None:
    assert root.is_root and root.chain == [] and inter.chain == [] and leaf.chain == [inter.cert]
    for ca in (root, inter):
        assert _ext(ca.cert, x509.BasicConstraints).critical
        assert _ext(ca.cert, x509.BasicConstraints).value.ca
        usage = _ext(ca.cert, x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    with pytest.raises(x509.ExtensionNotFound):
        _ext(root.cert, x509.AuthorityKeyIdentifier)
    root_ski = _ext(root.cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(inter.cert, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    inter_ski = _ext(inter.cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(leaf.cert, x509.AuthorityKeyIdentifier).value.key_identifier == inter_ski
    assert not _ext(leaf.cert, x509.BasicConstraints).value.ca
    usage = _ext(leaf.cert, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    eku = _ext(leaf.cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert leaf.email == SENDER
    assert b"BEGIN PRIVATE KEY" in leaf.key_pem()


def test_openssl_accepts_the_chain(
    inter: pki.Identity, leaf: pki.Identity, ca_file: Path, tmp_path: Path
) -> None:
    cert, key = leaf.write(tmp_path, "alice")
    untrusted = tmp_path / "chain.pem"
    untrusted.write_bytes(leaf.chain_pem())
    out = pki.run_openssl(
        "verify", "-purpose", "smimesign", "-CAfile", ca_file, "-untrusted", untrusted, cert
    )
    assert out.strip().endswith(b"OK")
    assert pki.openssl_encrypt_decrypt_roundtrip(cert, key)
    other_key = pki.make_leaf(inter, "bob@example.com").write(tmp_path, "bob")[1]
    assert not pki.openssl_encrypt_decrypt_roundtrip(cert, other_key)


def test_leaf_options(root: pki.Identity) -> None:
    ec_leaf = pki.make_leaf(root, "ec@example.com", key_type="ec", ec_curve="P-384")
    usage = _ext(ec_leaf.cert, x509.KeyUsage).value
    assert usage.key_agreement and not usage.key_encipherment and ec_leaf.chain == []
    bare = pki.make_leaf(
        root,
        "bare@example.com",
        cn="",
        san=False,
        subject_email=True,
        key_usage="absent",
        eku="absent",
        serial=42,
    )
    assert bare.cert.serial_number == 42 and bare.email == "bare@example.com"
    assert len(bare.cert.extensions) == 3  # basicConstraints, SKI, AKI
    custom = pki.make_leaf(
        root, "c@example.com", key_usage={"content_commitment": True}, eku=["1.3.6.1.5.5.7.3.2"]
    )
    assert _ext(custom.cert, x509.KeyUsage).value.content_commitment
    assert _ext(custom.cert, x509.ExtendedKeyUsage).value[0].dotted_string == "1.3.6.1.5.5.7.3.2"


TOOLS = ["openssl-cms", "openssl-smime", "cryptography"]


@pytest.mark.parametrize("sign", [pki.sign_detached, pki.sign_opaque], ids=["detached", "opaque"])
@pytest.mark.parametrize("tool", TOOLS)
def test_signed_messages_verify(
    sign: Callable[..., bytes], tool: str, leaf: pki.Identity, ca_file: Path
) -> None:
    entity = pki.mime_body(TEXT)
    signed = pki.message(sign(entity, leaf, tool=tool), from_addr=SENDER)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert pki.openssl_verify_ok(signed, ca_file)
    assert not pki.openssl_verify_ok(_tamper(signed), ca_file)
    if sign is pki.sign_detached:
        boundary = email.message_from_bytes(signed).get_boundary().encode()
        assert b"--" + boundary + b"\r\n" + entity + b"\r\n--" + boundary + b"\r\n" in signed
        assert b'protocol="application/pkcs7-signature"; micalg=sha-256;' in signed
    else:
        assert b'application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"' in signed


@pytest.mark.parametrize("tool", TOOLS)
def test_ecdsa_signer(tool: str, root: pki.Identity, ca_file: Path) -> None:
    ec_leaf = pki.make_leaf(root, "ec@example.com", key_type="ec")
    signed = pki.sign_detached(pki.mime_body(TEXT), ec_leaf, tool=tool, digest="sha384")
    assert b"micalg=sha-384" in signed
    assert _signer_info(signed)["digest_algorithm"]["algorithm"].native == "sha384"
    assert pki.openssl_verify_ok(signed, ca_file)


def test_ecdsa_ca_chain(tmp_path: Path) -> None:
    ec_root = pki.make_root("EC Root", key_type="ec")
    ec_inter = pki.make_intermediate(ec_root, "EC Intermediate", key_type="ec")
    signer = pki.make_leaf(ec_inter, "ec@example.com", key_type="ec")
    ca = ec_root.write(tmp_path, "ec-root")[0]
    assert pki.openssl_verify_ok(pki.sign_opaque(pki.mime_body(), signer), ca)


def test_ed25519(root: pki.Identity, ca_file: Path, tmp_path: Path) -> None:
    ed_leaf = pki.make_leaf(root, "ed@example.com", key_type="ed25519")
    assert _ext(ed_leaf.cert, x509.KeyUsage).value.digital_signature
    cert = ed_leaf.write(tmp_path, "ed")[0]
    out = pki.run_openssl("verify", "-purpose", "smimesign", "-CAfile", ca_file, cert)
    assert out.strip().endswith(b"OK")
    if pki.openssl_cms_supports_ed25519():
        signed = pki.sign_detached(pki.mime_body(), ed_leaf)
        assert b"micalg=sha-512" in signed and pki.openssl_verify_ok(signed, ca_file)
    else:  # OpenSSL 3.0: no Ed25519 in CMS
        with pytest.raises(pki.OpenSSLError, match="digest"):
            pki.sign_detached(pki.mime_body(), ed_leaf)
    with pytest.raises(TypeError):
        pki.sign_detached(pki.mime_body(), ed_leaf, tool="cryptography")


def test_signer_identifier_and_certificates(
    root: pki.Identity, leaf: pki.Identity, ca_file: Path
) -> None:
    entity = pki.mime_body(TEXT)
    by_ski = pki.sign_detached(entity, leaf, keyid=True)
    assert _signer_info(by_ski)["sid"].name == "subject_key_identifier"
    assert pki.openssl_verify_ok(by_ski, ca_file)
    default = pki.sign_detached(entity, leaf, tool="cryptography")
    assert _signer_info(default)["sid"].name == "issuer_and_serial_number"
    for tool in TOOLS:
        bare = pki.sign_detached(entity, leaf, tool=tool, nocerts=True, include_chain=False)
        assert not pki.openssl_verify_ok(bare, ca_file)  # signer certificate not found
        no_chain = pki.sign_detached(entity, leaf, tool=tool, include_chain=False)
        assert pkcs7.load_der_pkcs7_certificates(_p7(no_chain)) == [leaf.cert]
        assert not pki.openssl_verify_ok(no_chain, ca_file)  # intermediate missing
    extra = pki.sign_opaque(entity, leaf, extra_certs=[root.cert])
    assert set(pkcs7.load_der_pkcs7_certificates(_p7(extra))) == {leaf.cert, *leaf.chain, root.cert}
    with pytest.raises(ValueError, match="keyid"):
        pki.sign_detached(entity, leaf, tool="openssl-smime", keyid=True)


@pytest.mark.parametrize("tool", ["openssl-cms", "cryptography"])
def test_rsa_pss(tool: str, leaf: pki.Identity, ca_file: Path) -> None:
    signed = pki.sign_detached(pki.mime_body(TEXT), leaf, tool=tool, pss=True)
    assert _signer_info(signed)["signature_algorithm"]["algorithm"].native == "rsassa_pss"
    assert pki.openssl_verify_ok(signed, ca_file)
    assert not pki.openssl_verify_ok(_tamper(signed), ca_file)


def test_pss_rejected_where_unsupported(root: pki.Identity, leaf: pki.Identity) -> None:
    with pytest.raises(ValueError, match="keyopt"):
        pki.sign_detached(pki.mime_body(), leaf, tool="openssl-smime", pss=True)
    with pytest.raises(ValueError, match="RSA"):
        pki.sign_detached(
            pki.mime_body(), pki.make_leaf(root, "e@example.com", key_type="ec"), pss=True
        )


def test_envelope_and_certs_only(root: pki.Identity, leaf: pki.Identity, tmp_path: Path) -> None:
    entity = pki.mime_body(TEXT)
    enveloped = pki.envelope(entity, leaf.cert)
    assert b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;" in enveloped
    cert, key = leaf.write(tmp_path, "leaf")
    (tmp_path / "enc.eml").write_bytes(enveloped)
    plain = pki.run_openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "enc.eml", "-recip", cert, "-inkey", key
    )
    assert plain == entity
    bundle = pki.certs_only([leaf.cert, root.cert])
    assert b"Content-Type: application/pkcs7-mime; smime-type=certs-only;" in bundle
    assert set(pkcs7.load_der_pkcs7_certificates(_p7(bundle))) == {leaf.cert, root.cert}


def test_message_and_body_shape() -> None:
    body = pki.mime_body("Grüße\nzweite Zeile")
    assert (
        b"Content-Transfer-Encoding: quoted-printable\r\n" in body
        and b"Gr=C3=BC=C3=9Fe\r\n" in body
    )
    raw = pki.message(
        body,
        from_addr="Alice <alice@example.com>",
        subject="Grüße",
        extra_headers=[("X-Test", "1")],
    )
    parsed = email.message_from_bytes(raw)
    assert parsed["To"] == "secureme@inbound.example.net" and parsed["X-Test"] == "1"
    assert parsed["Message-ID"].endswith("@example.com>") and parsed["Date"]
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_payload(decode=True).decode() == "Grüße\r\nzweite Zeile\r\n"
    assert raw.count(b"MIME-Version") == 1
    with_version = pki.message(b"MIME-Version: 1.0\r\n" + body, from_addr="a@b.c")
    assert with_version.count(b"MIME-Version") == 1
