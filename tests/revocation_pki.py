"""A PKI with CRL distribution points and OCSP URLs, and the real servers that answer them.

The CRL server is ``tests/crlserver.py`` and the OCSP responder is ``openssl ocsp``, both run
as subprocesses on 127.0.0.1 and stopped by pid. CRLs are made with ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from tests import pki
from tests.paths import REPO
from tests.servers import (
    free_port,  # noqa: F401 - the tests pick OCSP ports with it
    stop_process,
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def issue(
    cn: str,
    issuer: pki.Identity | None,
    *,
    ca: bool,
    email: str | None = None,
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: dt.datetime | None = None,
) -> pki.Identity:
    """A CA or an S/MIME end-entity certificate whose revocation sources are the URLs given."""
    key = pki.new_key("rsa")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-collector revocation tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    start = not_before or now() - dt.timedelta(days=30)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=ca, path_length=None), True)
    ]
    if ca:
        usage = pki.usage_extension(key_cert_sign=True, crl_sign=True)
    else:
        usage = pki.usage_extension(digital_signature=True, key_encipherment=True)
        extensions.append(
            (x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        )
        extensions.append((x509.SubjectAlternativeName([x509.RFC822Name(email or cn)]), False))
    extensions.append((usage, True))
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        extensions.append((x509.CRLDistributionPoints([point]), False))
    if ocsp_url:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        extensions.append((x509.AuthorityInformationAccess([access]), False))
    return pki.issue(
        subject,
        key,
        issuer,
        extensions,
        not_before=start,
        not_after=start + dt.timedelta(days=3650 if ca else 365),
    )


def crl(
    issuer: pki.Identity,
    revoked: list[x509.Certificate] = (),  # type: ignore[assignment]
    *,
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    padding_entries: int = 0,
) -> bytes:
    """A DER CRL by ``issuer`` revoking ``revoked`` (plus ``padding_entries`` made-up serials,
    for an oversize CRL)."""
    start = this_update or now() - dt.timedelta(hours=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(start)
        .next_update(next_update or now() + dt.timedelta(days=7))
    )
    ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
    )
    builder = builder.add_extension(x509.CRLNumber(1), False)
    entries = [c.serial_number for c in revoked] + [10**20 + n for n in range(padding_entries)]
    for serial in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(start - dt.timedelta(days=1))
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def signed_message(signer: pki.Identity) -> bytes:
    entity = pki.sign_detached(pki.mime_body("hello, revocation"), signer)
    return pki.message(entity, from_addr=signer.email or "nobody@example.org")


# -- servers ---------------------------------------------------------------------------------


@dataclass
class CRLServer:
    """``tests/crlserver.py`` serving ``folder``; ``url(name)`` is where ``name`` is served."""

    folder: Path
    process: subprocess.Popen
    port: int

    @classmethod
    def start(cls, folder: Path) -> CRLServer:
        folder.mkdir(parents=True, exist_ok=True)
        port_file = folder / "port"
        process = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "crlserver.py"), str(folder), str(port_file)]
        )
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the CRL server did not start")
            time.sleep(0.02)
        return cls(folder, process, int(port_file.read_text()))

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    def publish(self, name: str, data: bytes) -> None:
        (self.folder / name).write_bytes(data)

    def requests(self) -> list[str]:
        log = self.folder / "requests.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        stop_process(self.process, 10)


@dataclass
class OCSPResponder:
    """``openssl ocsp`` answering for ``issuer`` from an OpenSSL index file."""

    process: subprocess.Popen
    port: int
    folder: Path = field(repr=False)

    @classmethod
    def start(
        cls,
        folder: Path,
        issuer: pki.Identity,
        port: int,
        *,
        good: list[x509.Certificate] = (),  # type: ignore[assignment]
        revoked: list[x509.Certificate] = (),  # type: ignore[assignment]
        signer: pki.Identity | None = None,
    ) -> OCSPResponder:
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for cert in good:
            lines.append(_index_line("V", cert, ""))
        for cert in revoked:
            lines.append(
                _index_line("R", cert, (now() - dt.timedelta(days=1)).strftime("%y%m%d%H%M%SZ"))
            )
        (folder / "index.txt").write_text("".join(lines))
        (folder / "index.txt.attr").write_text("unique_subject = no\n")
        responder = signer or issuer
        ca, _ = issuer.write(folder, "ca")
        rcert, rkey = responder.write(folder, "responder")
        # openssl ocsp has no option to bind one address; clients here only use 127.0.0.1.
        # Readiness is read from its log: OpenSSL 3.0's responder hangs for good on a
        # connection that closes without a request, so it cannot be probed by connecting.
        log = folder / "ocsp.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                ["openssl", "ocsp", "-index", "index.txt", "-port", str(port),
                 "-CA", ca, "-rsigner", rcert, "-rkey", rkey, "-nmin", "60", "-ignore_err"],
                cwd=folder, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while b"waiting for OCSP client connections" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"openssl ocsp did not start: {log.read_text()}")
            time.sleep(0.05)
        return cls(process, port, folder)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_process(self.process, 10)


def _index_line(status: str, cert: x509.Certificate, revoked_at: str) -> str:
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    subject = "/" + "/".join(f"{attr.rfc4514_attribute_name}={attr.value}" for attr in cert.subject)
    return f"{status}\t{expiry}\t{revoked_at}\t{cert.serial_number:X}\tunknown\t{subject}\n"
