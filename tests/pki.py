"""Test PKI and signed mail made with real tools: ``cryptography``, the ``openssl`` CLI, dkimpy.

What OpenSSL 3.0 (the version installed here) can do, checked by hand and by
``tests/test_support.py``:

- RSA PKCS#1 v1.5 and ECDSA signing: ``openssl cms``, ``openssl smime`` and
  ``cryptography``'s ``PKCS7SignatureBuilder`` all work.
- RSA-PSS: ``openssl cms -keyopt rsa_padding_mode:pss`` and ``cryptography``
  (``rsa_padding=PSS``) work. ``openssl smime`` has no ``-keyopt`` (it even exits 0 after
  "Unknown cipher: keyopt"), so ``pss=True`` with ``tool="openssl-smime"`` raises ValueError.
- ``-keyid`` (signer identified by subjectKeyIdentifier) exists only in ``openssl cms``.
- Ed25519 certificates are fine, but signing CMS with an Ed25519 key fails in OpenSSL 3.0
  ("no default digest" / "invalid digest"; support arrived in later releases), and
  ``cryptography`` refuses non-RSA/EC keys. ``sign_*`` then raises :class:`OpenSSLError`;
  :func:`openssl_cms_supports_ed25519` probes the installed OpenSSL so tests can skip.
- Ed25519 DKIM signing through dkimpy needs PyNaCl, which is not a project dependency.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import functools
import quopri
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.header import Header
from pathlib import Path
from typing import Literal, TypedDict, Unpack

import dkim
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
KeyType = Literal["rsa", "ec", "ed25519"]
Tool = Literal["openssl-cms", "openssl-smime", "cryptography"]
ABSENT = "absent"
"""Pass as ``key_usage`` or ``eku`` to :func:`make_leaf` to leave the extension out."""

CRLF = b"\r\n"
DEFAULT_TO = "secureme@inbound.example.net"
_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
_HASHES = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_NO_USAGE = dict.fromkeys(
    (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ),
    False,
)


def usage_extension(**flags: bool) -> x509.KeyUsage:
    """A keyUsage extension with only the named flags set."""
    return x509.KeyUsage(**{**_NO_USAGE, **flags})


class OpenSSLError(RuntimeError):
    """An ``openssl`` command exited non-zero; the message carries its command and stderr."""


# -- identities ------------------------------------------------------------------------------


@dataclass
class Identity:
    """A certificate, its private key and the issuers above it (root excluded)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def is_root(self) -> bool:
        """True for a self-issued certificate."""
        return self.cert.issuer == self.cert.subject

    @property
    def email(self) -> str | None:
        """The first rfc822Name SAN, else the subject emailAddress, else None."""
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = san.value.get_values_for_type(x509.RFC822Name)
        except x509.ExtensionNotFound:
            names = []
        subject = self.cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        found = [*names, *(str(attr.value) for attr in subject)]
        return found[0] if found else None

    def cert_pem(self) -> bytes:
        """The certificate alone, PEM."""
        return pem(self.cert)

    def chain_pem(self) -> bytes:
        """The issuers in ``chain``, PEM (empty for a root's direct children)."""
        return pem(*self.chain)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (PEM) into ``directory``."""
        directory = Path(directory)
        return (
            _write(directory, f"{stem}.crt", self.cert_pem()),
            _write(directory, f"{stem}.key", self.key_pem()),
        )


def pem(*certs: x509.Certificate) -> bytes:
    """Concatenated PEM of ``certs``."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key(
    key_type: KeyType = "rsa", *, rsa_bits: int = 2048, ec_curve: str = "P-256"
) -> PrivateKey:
    """A fresh private key of the given type."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if key_type == "ec":
        return ec.generate_private_key(_CURVES[ec_curve]())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key_type {key_type!r}")


def issue(
    subject: x509.Name,
    key: PrivateKey,
    issuer: Identity | None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None = None,
) -> Identity:
    """Build and sign a certificate; ``issuer=None`` makes it self-signed."""
    public = key.public_key()
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(public)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer:
        ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        builder = builder.add_extension(aki, critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    algorithm = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signer_key, algorithm)
    chain = [] if issuer is None else ([] if issuer.is_root else [issuer.cert]) + issuer.chain
    return Identity(cert=cert, key=key, chain=chain)


def _make_ca(cn: str, key_type: KeyType, parent: Identity | None) -> Identity:
    """A CA certificate valid from yesterday for ten years."""
    usage = usage_extension(key_cert_sign=True, crl_sign=True)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-collector tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    now = _now()
    return issue(
        subject,
        new_key(key_type),
        parent,
        [(x509.BasicConstraints(ca=True, path_length=None), True), (usage, True)],
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=3650),
    )


def make_root(cn: str = "Test Root CA", key_type: KeyType = "rsa") -> Identity:
    """A self-signed root CA (RSA-2048 by default, ``key_type="ec"`` for P-256)."""
    return _make_ca(cn, key_type, None)


def make_intermediate(parent: Identity, cn: str, key_type: KeyType = "rsa") -> Identity:
    """An intermediate CA issued by ``parent``."""
    return _make_ca(cn, key_type, parent)


def _default_usage(key: PrivateKey) -> dict[str, bool]:
    if isinstance(key, rsa.RSAPrivateKey):
        return {"digital_signature": True, "key_encipherment": True}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"digital_signature": True, "key_agreement": True}
    return {"digital_signature": True}


def make_leaf(
    issuer: Identity,
    email: str,
    *,
    key_type: KeyType = "rsa",
    rsa_bits: int = 2048,
    ec_curve: str = "P-256",
    cn: str | None = None,
    san: bool = True,
    subject_email: bool = False,
    key_usage: dict[str, bool] | str | None = None,
    eku: Sequence[x509.ObjectIdentifier | str] | str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
) -> Identity:
    """An end-entity S/MIME certificate for ``email`` issued by ``issuer``.

    Subject CN is ``cn`` (default: the email; ``cn=""`` omits it). ``key_usage`` is a dict
    of ``x509.KeyUsage`` flags (missing ones False) or :data:`ABSENT`; its default depends
    on the key type. ``eku`` is a list of OIDs (default emailProtection) or :data:`ABSENT`.
    """
    key = new_key(key_type, rsa_bits=rsa_bits, ec_curve=ec_curve)
    attrs = []
    if cn is None or cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn or email))
    if subject_email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True)
    ]
    if key_usage != ABSENT:
        flags = _default_usage(key) if key_usage is None else key_usage
        extensions.append((usage_extension(**flags), True))
    if eku != ABSENT:
        oids = [ExtendedKeyUsageOID.EMAIL_PROTECTION] if eku is None else eku
        usages = [
            o if isinstance(o, x509.ObjectIdentifier) else x509.ObjectIdentifier(o) for o in oids
        ]
        extensions.append((x509.ExtendedKeyUsage(usages), False))
    if san:
        # RFC 5280: the SAN must be critical when the subject is empty.
        extensions.append((x509.SubjectAlternativeName([x509.RFC822Name(email)]), not attrs))
    now = _now()
    return issue(
        x509.Name(attrs),
        key,
        issuer,
        extensions,
        not_before=not_before or now - dt.timedelta(days=1),
        not_after=not_after or now + dt.timedelta(days=365),
        serial=serial,
    )


# -- subprocess plumbing ---------------------------------------------------------------------


@contextmanager
def _workdir() -> Iterator[Path]:
    """A private temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pki-") as name:
        yield Path(name)


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def run_openssl(*args: str | Path, cwd: Path | None = None) -> bytes:
    """Run ``openssl *args`` (in ``cwd``); return stdout or raise :class:`OpenSSLError`."""
    cmd = ["openssl", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise OpenSSLError(f"{' '.join(cmd)}: exit {proc.returncode}: {stderr}")
    return proc.stdout


def _openssl_ok(*args: str | Path, cwd: Path) -> bool:
    """Like :func:`run_openssl` but report success as a bool."""
    try:
        run_openssl(*args, cwd=cwd)
    except OpenSSLError:
        return False
    return True


# -- MIME building ---------------------------------------------------------------------------


def _b64_lines(der: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(der)
    return CRLF.join(text[i : i + width] for i in range(0, len(text), width)) + CRLF


def _headers(*lines: str) -> bytes:
    return b"".join(line.encode() + CRLF for line in lines)


def _crlf(text: str) -> str:
    """``text`` with CRLF line ends and a final CRLF."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return "".join(line + "\r\n" for line in lines)


def mime_body(
    text: str = "Hello",
    *,
    charset: str = "utf-8",
    flowed: bool = True,
    language: str | None = "en-US",
    encoding: str | None = None,
) -> bytes:
    """A text/plain MIME entity as Thunderbird writes it (headers, blank line, CRLF body).

    ``encoding`` is "7bit", "8bit", "quoted-printable" or "base64"; by default 7bit for
    ASCII text and quoted-printable otherwise.
    """
    body = _crlf(text).encode(charset)
    if encoding is None:
        encoding = "7bit" if body.isascii() else "quoted-printable"
    if encoding == "quoted-printable":
        lines = body[:-2].split(CRLF)
        body = CRLF.join(quopri.encodestring(line).replace(b"\n", CRLF) for line in lines) + CRLF
    elif encoding == "base64":
        body = _b64_lines(body)
    elif encoding not in ("7bit", "8bit"):
        raise ValueError(f"unknown encoding {encoding!r}")
    ctype = f"text/plain; charset={charset}" + ("; format=flowed" if flowed else "")
    lines = [f"Content-Type: {ctype}", f"Content-Transfer-Encoding: {encoding}"]
    if language:
        lines.append(f"Content-Language: {language}")
    return _headers(*lines) + CRLF + body


def _pkcs7_mime(der: bytes, smime_type: str, filename: str, description: str) -> bytes:
    """An ``application/pkcs7-mime`` entity carrying ``der`` in base64."""
    return (
        _headers(
            f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="{filename}"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{filename}"',
            f"Content-Description: {description}",
        )
        + CRLF
        + _b64_lines(der)
    )


def _multipart_signed(entity: bytes, der: bytes, micalg: str) -> bytes:
    """``multipart/signed`` whose first part is exactly ``entity`` and second the p7s."""
    boundary = "------------ms" + "".join(str(secrets.randbelow(10)) for _ in range(24))
    if boundary.encode() in entity:
        return _multipart_signed(entity, der, micalg)
    delimiter = b"--" + boundary.encode()
    signature = _headers(
        'Content-Type: application/pkcs7-signature; name="smime.p7s"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="smime.p7s"',
        "Content-Description: S/MIME Cryptographic Signature",
    )
    return (
        _headers(
            'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            f'micalg={micalg}; boundary="{boundary}"'
        )
        + CRLF
        + b"This is a cryptographically signed message in MIME format." + CRLF + CRLF
        + delimiter + CRLF + entity
        + CRLF + delimiter + CRLF + signature + CRLF + _b64_lines(der)
        + CRLF + delimiter + b"--" + CRLF
    )  # fmt: skip


# -- S/MIME signing --------------------------------------------------------------------------


def micalg(digest: str, signer: Identity) -> str:
    """The ``micalg`` parameter for a signature (RFC 5751 names; Ed25519 uses SHA-512)."""
    if isinstance(signer.key, ed25519.Ed25519PrivateKey):
        digest = "sha512"
    return "sha-" + digest.removeprefix("sha")


@dataclass(frozen=True)
class _SignJob:
    """One signing request, normalised for the tool back-ends."""

    entity: bytes
    signer: Identity
    detached: bool
    digest: str
    certs: list[x509.Certificate]  # embedded besides the signer certificate
    keyid: bool
    nocerts: bool
    pss: bool


def _sign_openssl(command: str, job: _SignJob) -> bytes:
    """DER SignedData from ``openssl cms -sign`` or ``openssl smime -sign`` (binary mode)."""
    if command == "smime" and (job.keyid or job.pss):
        raise ValueError("openssl smime supports neither -keyid nor -keyopt; use openssl-cms")
    # RFC 8419 pairs Ed25519 with SHA-512; OpenSSL 3.0 still fails (see the module docstring).
    ed = isinstance(job.signer.key, ed25519.Ed25519PrivateKey)
    with _workdir() as tmp:
        args: list[str | Path] = [
            command, "-sign", "-binary", "-md", "sha512" if ed else job.digest,
            "-in", _write(tmp, "content", job.entity),
            "-signer", _write(tmp, "signer.pem", job.signer.cert_pem()),
            "-inkey", _write(tmp, "signer.key", job.signer.key_pem()),
            "-outform", "DER", "-out", "out.der",
        ]  # fmt: skip
        if not job.detached:
            args.append("-nodetach")
        if job.certs:
            args += ["-certfile", _write(tmp, "certs.pem", pem(*job.certs))]
        if job.nocerts:
            args.append("-nocerts")
        if job.keyid:
            args.append("-keyid")
        if job.pss:
            args += ["-keyopt", "rsa_padding_mode:pss"]
        run_openssl(*args, cwd=tmp)
        return (tmp / "out.der").read_bytes()


def _sign_cryptography(job: _SignJob) -> bytes:
    """DER SignedData from ``cryptography``'s ``PKCS7SignatureBuilder`` (binary mode)."""
    if job.keyid:
        raise ValueError("cryptography cannot identify the signer by subjectKeyIdentifier")
    algorithm = _HASHES[job.digest]()
    pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.DIGEST_LENGTH) if job.pss else None
    builder = pkcs7.PKCS7SignatureBuilder().set_data(job.entity)
    builder = builder.add_signer(job.signer.cert, job.signer.key, algorithm, rsa_padding=pss)
    for cert in job.certs:
        builder = builder.add_certificate(cert)
    options = [pkcs7.PKCS7Options.Binary]
    if job.detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    if job.nocerts:
        options.append(pkcs7.PKCS7Options.NoCerts)
    return builder.sign(serialization.Encoding.DER, options)


class SignOptions(TypedDict, total=False):
    """Keyword options shared by :func:`sign_der`, :func:`sign_detached`, :func:`sign_opaque`."""

    digest: str
    tool: Tool
    include_chain: bool
    keyid: bool
    nocerts: bool
    pss: bool
    extra_certs: Sequence[x509.Certificate]


def sign_der(
    entity: bytes,
    signer: Identity,
    *,
    detached: bool = True,
    digest: str = "sha256",
    tool: Tool = "openssl-cms",
    include_chain: bool = True,
    keyid: bool = False,
    nocerts: bool = False,
    pss: bool = False,
    extra_certs: Sequence[x509.Certificate] = (),
) -> bytes:
    """DER CMS SignedData over ``entity`` made by ``tool``.

    ``digest``: sha1/sha224/sha256/sha384/sha512. ``include_chain`` embeds ``signer.chain``;
    ``keyid`` identifies the signer by SKI (openssl-cms only); ``nocerts`` leaves the signer
    certificate out; ``pss`` uses RSA-PSS (openssl-cms, cryptography); ``extra_certs`` are
    embedded as well. Raises ValueError for combinations a tool cannot do.
    """
    if pss and not isinstance(signer.key, rsa.RSAPrivateKey):
        raise ValueError("pss=True needs an RSA signer")
    certs = [*(signer.chain if include_chain else ()), *extra_certs]
    job = _SignJob(entity, signer, detached, digest, certs, keyid, nocerts, pss)
    if tool == "cryptography":
        return _sign_cryptography(job)
    if tool in ("openssl-cms", "openssl-smime"):
        return _sign_openssl(tool.removeprefix("openssl-"), job)
    raise ValueError(f"unknown tool {tool!r}")


def sign_detached(entity: bytes, signer: Identity, **options: Unpack[SignOptions]) -> bytes:
    """``multipart/signed`` entity whose first part is exactly ``entity`` (see :func:`sign_der`)."""
    der = sign_der(entity, signer, detached=True, **options)
    return _multipart_signed(entity, der, micalg(options.get("digest", "sha256"), signer))


def sign_opaque(entity: bytes, signer: Identity, **options: Unpack[SignOptions]) -> bytes:
    """``application/pkcs7-mime; smime-type=signed-data`` entity embedding ``entity``."""
    der = sign_der(entity, signer, detached=False, **options)
    return _pkcs7_mime(der, "signed-data", "smime.p7m", "S/MIME Cryptographic Signature")


def envelope(entity: bytes, recipient_cert: x509.Certificate, cipher: str = "aes256") -> bytes:
    """``smime-type=enveloped-data`` entity: ``entity`` encrypted to ``recipient_cert``."""
    with _workdir() as tmp:
        run_openssl(
            "cms", "-encrypt", "-binary", f"-{cipher}",
            "-in", _write(tmp, "content", entity), "-outform", "DER", "-out", "out.der",
            _write(tmp, "recipient.pem", pem(recipient_cert)),
            cwd=tmp,
        )  # fmt: skip
        der = (tmp / "out.der").read_bytes()
    return _pkcs7_mime(der, "enveloped-data", "smime.p7m", "S/MIME Encrypted Message")


def certs_only(certs: Iterable[x509.Certificate]) -> bytes:
    """``smime-type=certs-only`` entity (degenerate SignedData from ``openssl crl2pkcs7``).

    The certificates are sorted by their DER bytes, so the SET OF is canonical DER.
    """
    ordered = sorted(certs, key=lambda c: c.public_bytes(serialization.Encoding.DER))
    with _workdir() as tmp:
        certfile = _write(tmp, "certs.pem", pem(*ordered))
        der = run_openssl("crl2pkcs7", "-nocrl", "-certfile", certfile, "-outform", "DER", cwd=tmp)
    return _pkcs7_mime(der, "certs-only", "smime.p7c", "S/MIME Certificates")


def message(
    entity: bytes,
    *,
    from_addr: str,
    to: str = DEFAULT_TO,
    subject: str = "test",
    date: dt.datetime | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A whole RFC 5322 message: top-level headers prepended to ``entity`` (CRLF).

    The entity's own header lines (Content-Type ...) become the message's; MIME-Version is
    added unless the entity already has one.
    """
    domain = email.utils.parseaddr(from_addr)[1].rpartition("@")[2] or "example.net"
    lines = [
        f"To: {to}",
        f"From: {from_addr}",
        f"Subject: {subject if subject.isascii() else Header(subject, 'utf-8').encode()}",
        f"Message-ID: {email.utils.make_msgid(domain=domain)}",
        f"Date: {email.utils.format_datetime(date or _now())}",
        *(f"{name}: {value}" for name, value in extra_headers),
    ]
    entity_headers = entity.split(CRLF + CRLF, 1)[0].lower()
    if (
        not entity_headers.startswith(b"mime-version:")
        and b"\r\nmime-version:" not in entity_headers
    ):
        lines.append("MIME-Version: 1.0")
    return _headers(*lines) + entity


# -- DKIM ------------------------------------------------------------------------------------


class DKIMKey:
    """A DKIM signing key (RSA, or Ed25519 which needs PyNaCl for dkimpy to sign)."""

    def __init__(self, key_type: Literal["rsa", "ed25519"] = "rsa", bits: int = 2048) -> None:
        self.key_type = key_type
        self.key = new_key(key_type, rsa_bits=bits)

    @staticmethod
    def record_name(domain: str, selector: str = "test") -> str:
        """The DNS name holding the key: ``<selector>._domainkey.<domain>``."""
        return f"{selector}._domainkey.{domain}"

    def txt_record(self) -> str:
        """The TXT value to publish: ``v=DKIM1; k=rsa; p=<base64>``."""
        public = self.key.public_key()
        if self.key_type == "ed25519":
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return f"v=DKIM1; k={self.key_type}; p={base64.b64encode(raw).decode()}"

    def _dkimpy_private(self) -> bytes:
        if self.key_type == "ed25519":
            raw = self.key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return base64.b64encode(raw)
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def sign(
        self,
        message: bytes,
        domain: str,
        selector: str = "test",
        include_headers: Sequence[str] | None = None,
        length: bool = False,
    ) -> bytes:
        """``message`` with a DKIM-Signature header (relaxed/simple, dkimpy) prepended."""
        headers = None if include_headers is None else [h.encode() for h in include_headers]
        algorithm = b"ed25519-sha256" if self.key_type == "ed25519" else b"rsa-sha256"
        signature = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            self._dkimpy_private(),
            signature_algorithm=algorithm,
            include_headers=headers,
            length=length,
            linesep=CRLF,
        )
        return signature + message


# -- OpenSSL cross-checks --------------------------------------------------------------------


def openssl_verify_ok(
    message: bytes,
    ca_pem_path: str | Path,
    *,
    attime: int | None = None,
    purpose: str | None = None,
) -> bool:
    """Whether ``openssl cms -verify -CAfile`` accepts a signed message or entity.

    ``attime`` (Unix time) and ``purpose`` are passed through; OpenSSL's default purpose is
    smimesign.
    """
    with _workdir() as tmp:
        args: list[str | Path] = ["cms", "-verify", "-in", _write(tmp, "msg.eml", message)]
        args += ["-CAfile", Path(ca_pem_path).resolve(), "-out", "content"]
        if attime is not None:
            args += ["-attime", str(attime)]
        if purpose:
            args += ["-purpose", purpose]
        return _openssl_ok(*args, cwd=tmp)


def openssl_encrypt_decrypt_roundtrip(cert_pem_path: str | Path, key_pem_path: str | Path) -> bool:
    """Encrypt a short text to the cert (``cms -encrypt -aes256``), decrypt with the key."""
    plain = b"round trip\r\n"
    cert, key = Path(cert_pem_path).resolve(), Path(key_pem_path).resolve()
    with _workdir() as tmp:
        content = _write(tmp, "plain", plain)
        encrypt = ["cms", "-encrypt", "-binary", "-aes256", "-in", content, "-out", "enc", cert]
        decrypt = ["cms", "-decrypt", "-binary", "-in", "enc", "-recip", cert, "-inkey", key]
        if not (_openssl_ok(*encrypt, cwd=tmp) and _openssl_ok(*decrypt, "-out", "dec", cwd=tmp)):
            return False
        return (tmp / "dec").read_bytes() == plain


@functools.cache
def openssl_cms_supports_ed25519() -> bool:
    """Whether the installed ``openssl cms -sign`` can sign with an Ed25519 key (3.0: no)."""
    root = make_root("Ed25519 probe", key_type="ed25519")
    try:
        sign_der(b"probe\r\n", root)
    except OpenSSLError:
        return False
    return True
