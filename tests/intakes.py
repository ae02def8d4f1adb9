"""What the doors' tests share: the corpus messages as cases, and each provider's request shape.

A :class:`Case` is one real signed message with the settings it needs and the certificate it
must store: Bob's Gmail message (DKIM key from the corpus zone on the loopback DNS, judged at
its Date), Alice's Thunderbird message (TestCA.pem as anchor, dkim off), and a generated
message whose signed body holds 8-bit bytes that are not UTF-8 (ISO-8859-1), DKIM-signed with
``c=relaxed/simple`` so that any changed byte fails both DKIM and the S/MIME signature.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_collector.delivery import Delivery
from smime_collector.pipeline import Collector
from smime_collector.verdict import Verdict
from tests import pki
from tests.corpus import sparky_rows
from tests.mailfactory import MailFactory, dkim_sign
from tests.paths import THUNDERBIRD

ALICE_FILE = "alice.dsig.SHA256.multipart.eml"
EIGHT_BIT_TEXT = "Grüße aus Köln: bitte verschlüsselt antworten, ça va.\n"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    settings: dict[str, str]
    email: str
    fingerprint: str


def bob() -> Case:
    row = sparky_rows()[0]
    assert row.name == "signed-from-bob.eml" and row.outcome == "stored"
    at = row.verify_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Case("bob", row.raw, {"verify-time": at}, row.email, row.fingerprint)


def alice() -> Case:
    with (THUNDERBIRD / "MANIFEST.details.tsv").open(encoding="utf-8") as handle:
        rows = {r["file"]: r for r in csv.DictReader(handle, delimiter="\t")}
    settings = {"trusted-certs": str(THUNDERBIRD / "TestCA.pem"), "dkim": "off"}
    raw = (THUNDERBIRD / ALICE_FILE).read_bytes()
    return Case("alice", raw, settings, "alice@example.com", rows[ALICE_FILE]["signer_cert_sha256"])


def eight_bit(factory: MailFactory) -> Case:
    """A signed, DKIM-signed message whose body is 8-bit ISO-8859-1 (never valid UTF-8)."""
    address = "carla@eight-bit.example"
    signer = factory.identity(address)
    entity = pki.sign_detached(
        pki.mime_body(EIGHT_BIT_TEXT, charset="iso-8859-1", encoding="8bit"), signer
    )
    raw = pki.message(entity, from_addr=address)
    key = factory.dkim_key("eight-bit.example")
    raw = dkim_sign(raw, key, "eight-bit.example", factory.selector)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # pragma: no cover - the case would prove nothing
        raise AssertionError("the 8-bit case must not be valid UTF-8")
    fingerprint = signer.cert.fingerprint(hashes.SHA256()).hex()
    return Case("8bit", raw, {"trusted-certs": str(factory.ca_file)}, address, fingerprint)


def crlf(raw: bytes) -> bytes:
    """SMTP's line ends: what any SMTP client puts on the wire."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def stored_fingerprint(certs: Path, email: str) -> str | None:
    path = certs / f"{email}.crt"
    if not path.is_file():
        return None
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def store_fingerprint(collector: Collector, email: str) -> str | None:
    """The SHA-256 of ``email``'s certificate in the collector's store, whichever backend."""
    cert = collector.store.get(email)
    return None if cert is None else cert.fingerprint(hashes.SHA256()).hex()


class Recording(Collector):
    """The real pipeline, keeping what each door handed it, to compare with what was sent."""

    deliveries: list[Delivery]

    def judge(self, delivery: Delivery, deadline: Any = None) -> Verdict:
        self.deliveries.append(delivery)
        return super().judge(delivery, deadline)


def recording(settings: Any) -> Recording:
    collector = Recording.build(settings)
    collector.deliveries = []
    return collector


# -- Mailgun ----------------------------------------------------------------------------------


def mailgun_fields(
    raw: bytes | None,
    key: str,
    *,
    timestamp: int | None = None,
    token: str | None = None,
) -> dict[str, bytes]:
    """What a Mailgun route's forward() to a ``mime`` URL posts, signed with ``key``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    fields = {
        "recipient": b"secureme@inbound.example.net",
        "sender": b"sender@example.org",
        "subject": b"test",
        "timestamp": stamp.encode(),
        "token": token.encode(),
        "signature": signature.encode(),
    }
    if raw is not None:
        fields["body-mime"] = raw
    return fields


def multipart(fields: dict[str, bytes], files: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body carrying each value byte for byte, and its Content-Type."""
    boundary = "----collector" + secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        assert boundary.encode() not in value
        filename = f'; filename="{name}.eml"' if name in files else ""
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
            + value
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def urlencoded(fields: dict[str, bytes]) -> tuple[bytes, str]:
    return urllib.parse.urlencode(fields).encode("ascii"), "application/x-www-form-urlencoded"


# -- Postmark and SendGrid --------------------------------------------------------------------


def postmark_json(raw: bytes | None, **extra: Any) -> dict[str, Any]:
    """Postmark's inbound JSON (the fields the door reads, and some it ignores)."""
    body: dict[str, Any] = {
        "From": "sender@example.org",
        "To": "secureme@inbound.example.net",
        "OriginalRecipient": "secureme@inbound.example.net",
        "MessageID": "22c74902-a0c1-4511-804f-341342852c90",
        "Subject": "test",
        "TextBody": "...",
        **extra,
    }
    if raw is not None:
        body["RawEmail"] = raw.decode("utf-8")
    return body


def basic(user_password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}


def sendgrid_fields(raw: bytes | None) -> dict[str, bytes]:
    """SendGrid Inbound Parse with "POST the raw, full MIME message" on."""
    fields = {
        "envelope": json.dumps(
            {"to": ["secureme@inbound.example.net"], "from": "sender@example.org"}
        ).encode(),
        "from": b"Sender <sender@example.org>",
        "to": b"secureme@inbound.example.net",
        "subject": b"test",
        "charsets": b'{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}',
        "spam_score": b"0.0",
    }
    if raw is not None:
        fields["email"] = raw
    return fields


# -- Amazon SES through SNS -------------------------------------------------------------------


# The fields SNS signs, in its documented order, written out here and not imported from
# smime_collector.intake.sns: this signer stands in for AWS, so a mistake in the door's own
# table fails the tests instead of being shared by them.
SNS_SIGNED = {
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
SNS_SIGNED["UnsubscribeConfirmation"] = SNS_SIGNED["SubscriptionConfirmation"]
TOPIC = "arn:aws:sns:eu-west-1:123456789012:smime-collector"


def server_identity(issuer: pki.Identity, cn: str = "127.0.0.1") -> pki.Identity:
    """A TLS server certificate for 127.0.0.1 and localhost, issued by ``issuer``."""
    now = pki._now()
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    return pki.issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
        pki.new_key(),
        issuer,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectAlternativeName(names), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )


@dataclass
class SNSSigner:
    """A test signing key and certificate (issued by ``issuer``), used as SNS uses its own."""

    issuer: pki.Identity
    cert_url: str
    identity: pki.Identity = field(init=False)

    def __post_init__(self) -> None:
        now = pki._now()
        self.identity = pki.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")]),
            pki.new_key(),
            self.issuer,
            [(x509.BasicConstraints(ca=False, path_length=None), True)],
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=30),
        )

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        signed = "".join(
            f"{name}\n{message[name]}\n" for name in SNS_SIGNED[message["Type"]] if name in message
        ).encode()
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        key = self.identity.key
        assert isinstance(key, rsa.RSAPrivateKey)
        signature = key.sign(signed, padding.PKCS1v15(), digest)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.cert_url,
        }


def ses_notification(
    raw: bytes, *, encoding: str = "BASE64", topic: str = TOPIC, message_id: str | None = None
) -> dict[str, Any]:
    """An unsigned SNS Notification carrying SES's Received notification for ``raw``."""
    content = base64.b64encode(raw).decode() if encoding == "BASE64" else raw.decode("utf-8")
    notice = {
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-11-29T10:00:00.000Z",
            "source": "sender@example.org",
            "messageId": "o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1",
            "destination": ["secureme@inbound.example.net"],
        },
        "receipt": {
            "recipients": ["secureme@inbound.example.net"],
            "action": {"type": "SNS", "topicArn": topic, "encoding": encoding},
        },
        "content": content,
    }
    return {
        "Type": "Notification",
        "MessageId": message_id or f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-4f1b",
        "TopicArn": topic,
        "Subject": "Amazon SES Email Receipt Notification",
        "Message": json.dumps(notice),
        "Timestamp": "2026-11-29T10:00:00.000Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }


def subscription_confirmation(subscribe_url: str, topic: str = TOPIC) -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": secrets.token_hex(8),
        "Token": secrets.token_hex(32),
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-11-29T10:00:00.000Z",
    }
