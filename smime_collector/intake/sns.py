"""Amazon SNS messages: their signature (SignatureVersion 1 and 2) and the HTTPS they need.

SNS signs each message it posts with the private key of a certificate it publishes at
``SigningCertURL``; the signed text is the message's own fields, ``Name\\nvalue\\n`` each, in a
fixed order that depends on ``Type``. Version 1 signs with SHA1withRSA, version 2 with
SHA256withRSA. Anyone can post a message naming a certificate URL of their own, so the URL must
match ``ses-signing-cert-url-pattern`` (by default only SNS's own hosts), it is fetched over TLS
(trusting ``ses-ca-bundle`` when set) without following redirects, and only then is the
signature checked. Certificates are cached per process by URL: SNS rotates them rarely and every
message names its own.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from smime_collector.deadline import Deadline, DeadlineExceeded
from smime_collector.intake.jsonbody import BadJSON

#: The fields each message type signs, in the order SNS signs them.
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
#: Fields that may be absent from a message of that type (a Notification without Subject).
OPTIONAL_FIELDS = frozenset({"Subject"})
DIGESTS: dict[str, hashes.HashAlgorithm] = {"1": hashes.SHA1(), "2": hashes.SHA256()}
#: Largest signing certificate accepted (SNS's are about 2 KB).
MAX_CERTIFICATE_BYTES = 64 * 1024
#: Largest answer read from a SubscribeURL (SNS answers with a short XML document).
MAX_CONFIRMATION_BYTES = 64 * 1024
#: Seconds one HTTPS fetch may take, cut further by the request's deadline.
FETCH_TIMEOUT_SECONDS = 10.0
#: Signing certificates kept per process.
CACHED_CERTIFICATES = 32

log = logging.getLogger(__name__)


class Forged(Exception):
    """The message is not from SNS: a certificate URL we must not fetch, or a bad signature."""


class Unavailable(Exception):
    """A certificate or confirmation URL could not be fetched now; SNS retries on 503."""


def fields(message: dict[str, Any]) -> dict[str, str]:
    """The message's signed fields and signature metadata, checked for presence and type."""
    kind = message.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_FIELDS:
        raise BadJSON(f"Type must be one of {', '.join(SIGNED_FIELDS)}")
    wanted = (*SIGNED_FIELDS[kind], "SignatureVersion", "Signature", "SigningCertURL")
    found: dict[str, str] = {}
    for name in wanted:
        value = message.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if name not in message:
            raise BadJSON(f"{name} is missing")
        if not isinstance(value, str):
            raise BadJSON(f"{name} must be a string")
        found[name] = value
    if found["SignatureVersion"] not in DIGESTS:
        raise BadJSON(f"SignatureVersion must be 1 or 2, not {found['SignatureVersion']!r}")
    return found


def string_to_sign(message: dict[str, str]) -> bytes:
    """The exact text SNS signed for this message."""
    return "".join(
        f"{name}\n{message[name]}\n" for name in SIGNED_FIELDS[message["Type"]] if name in message
    ).encode("utf-8")


class Fetcher:
    """HTTPS GETs to URLs the pattern allows, trusting ``ca_bundle`` (or the system's roots)."""

    def __init__(self, pattern: re.Pattern[str], ca_bundle: Path | None) -> None:
        self.pattern = pattern
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirects()
        )
        self._certificates: collections.OrderedDict[str, x509.Certificate] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def certificate_url_ok(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        return (
            parts.scheme == "https"
            and not parts.username
            and self.pattern.fullmatch(url) is not None
        )

    def subscribe_url_ok(self, url: str, signing_cert_url: str) -> bool:
        """A SubscribeURL passes when it is HTTPS and the message's own ``SigningCertURL``
        (which passed the pattern) still passes it moved to the SubscribeURL's host and port.

        The pattern describes certificate URLs, so only its host part can judge another URL;
        keeping the certificate's path lets a pattern that fixes a path (an operator's
        ``/certs/.+\\.pem``) judge the host all the same.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or "@" in parts.netloc or not parts.hostname:
            return False
        moved = urllib.parse.urlsplit(signing_cert_url)._replace(netloc=parts.netloc)
        return self.certificate_url_ok(moved.geturl())

    def get(self, url: str, deadline: Deadline, limit: int) -> bytes:
        """The body of ``url`` (at most ``limit`` bytes); :class:`Unavailable` on any failure."""
        try:
            timeout = deadline.timeout(FETCH_TIMEOUT_SECONDS)
            with self._opener.open(url, timeout=timeout) as answer:
                body = answer.read(limit + 1)
        except (OSError, urllib.error.URLError, DeadlineExceeded, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unavailable(f"cannot fetch {url}: {reason}") from None
        if len(body) > limit:
            raise Unavailable(f"{url} answered more than {limit} bytes")
        return body

    def certificate(self, url: str, deadline: Deadline) -> x509.Certificate:
        """The signing certificate at ``url``, fetched once per process."""
        if not self.certificate_url_ok(url):
            raise Forged(
                f"SigningCertURL {url[:200]!r} does not match ses-signing-cert-url-pattern"
            )
        with self._lock:
            cached = self._certificates.get(url)
            if cached is not None:
                self._certificates.move_to_end(url)
                return cached
        pem = self.get(url, deadline, MAX_CERTIFICATE_BYTES)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Unavailable(f"{url} did not answer with a PEM certificate") from None
        with self._lock:
            self._certificates[url] = cert
            while len(self._certificates) > CACHED_CERTIFICATES:
                self._certificates.popitem(last=False)
        log.info("| SNS signing certificate fetched from %s", url)
        return cert


def verify(message: dict[str, str], fetcher: Fetcher, deadline: Deadline) -> None:
    """Return when SNS signed ``message``; raise :class:`Forged` or :class:`Unavailable`."""
    cert = fetcher.certificate(message["SigningCertURL"], deadline)
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Forged("the signing certificate's key is not RSA")
    try:
        signature = _base64(message["Signature"])
        digest = DIGESTS[message["SignatureVersion"]]
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), digest)
    except (InvalidSignature, ValueError):
        raise Forged("the SNS signature does not verify") from None


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("Signature is not base64") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could leave the hosts the pattern allows: refuse it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
