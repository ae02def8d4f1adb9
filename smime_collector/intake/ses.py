"""Amazon SES receipt rules through an SNS HTTPS subscription (``POST /ses``).

An SES receipt rule with an SNS action publishes each message to a topic; the topic posts it
here. The SNS envelope is checked first (:mod:`smime_collector.intake.sns`: signature, signing
certificate from an allowed URL), then its topic against ``ses-topic-arns``. Inside is the SES
notification, whose ``content`` is the raw message: base64 when the action's encoding is Base64,
which this door requires (UTF-8 encoding would change every 8-bit byte that is not UTF-8).

SNS delivers at least once and retries a 5xx (by default three times, 20 s apart), so a
notification's ``MessageId`` that already got a final answer gets it again without being judged.
A ``SubscriptionConfirmation`` is confirmed by fetching its ``SubscribeURL`` (only on a host the
certificate URL pattern allows). Messages over SNS's 150 KB limit need the S3 action, which this
door does not cover.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Envelope
from smime_collector.intake import answers, sns
from smime_collector.intake.common import (
    bad_request,
    door,
    judge,
    ok,
    provider_answer,
    read_body,
    retry,
    state,
)
from smime_collector.intake.jsonbody import (
    BadJSON,
    base64_bytes,
    json_object,
    string_field,
    text,
    texts,
)
from smime_collector.verdict import Verdict

INTAKE = "ses"
PATH = "/ses"
FETCHER_KEY = "smime_collector.ses.fetcher"

log = logging.getLogger(__name__)
blueprint = Blueprint(INTAKE, __name__)


def enabled(settings: Settings) -> bool:
    return bool(settings.ses_topic_arns)


def install(app: Flask, settings: Settings) -> None:
    app.extensions[FETCHER_KEY] = sns.Fetcher(
        settings.ses_signing_cert_url_pattern, settings.ses_ca_bundle
    )
    app.register_blueprint(blueprint)


def answer(verdict: Verdict) -> tuple[Response, int]:
    """The one place a verdict becomes SNS's answer: 503 makes SNS retry the notification."""
    return provider_answer(verdict)


def refused(why: str) -> tuple[Response, int]:
    """403: not from SNS, or not a topic of ours. SNS does not retry a 4xx."""
    log.warning("| refused: %s", why)
    return jsonify(message=why), 403


@blueprint.post(PATH)
@door(log)
def ses(deadline: Deadline) -> tuple[Response, int]:
    fetcher: sns.Fetcher = current_app.extensions[FETCHER_KEY]
    try:
        message = sns.fields(json_object(read_body(), "an SNS message"))
    except BadJSON as exc:
        return bad_request(log, str(exc))
    try:
        sns.verify(message, fetcher, deadline)
    except sns.Forged as exc:
        return refused(str(exc))
    except sns.Unavailable as exc:
        log.warning("| cannot check the SNS signature now: %s", exc)
        return retry()
    topic = message["TopicArn"]
    if topic not in state().settings.ses_topic_arns:
        return refused(f"topic {topic[:200]!r} is not in ses-topic-arns")
    log.info("| SNS %s %s from %s", message["Type"], message["MessageId"], topic)
    if message["Type"] == "SubscriptionConfirmation":
        return confirm(message["SubscribeURL"], message["SigningCertURL"], fetcher, deadline)
    if message["Type"] == "UnsubscribeConfirmation":
        log.warning("| the subscription to %s was removed; not confirming it again", topic)
        return ok()
    return notification(message, deadline)


def confirm(
    url: str, signing_cert_url: str, fetcher: sns.Fetcher, deadline: Deadline
) -> tuple[Response, int]:
    if not fetcher.subscribe_url_ok(url, signing_cert_url):
        return refused(
            f"SubscribeURL {url[:200]!r} is not on a host ses-signing-cert-url-pattern allows"
        )
    try:
        fetcher.get(url, deadline, sns.MAX_CONFIRMATION_BYTES)
    except sns.Unavailable as exc:
        log.warning("| subscription not confirmed: %s", exc)
        return retry()
    log.info("| subscription confirmed")
    return jsonify(message="Subscription confirmed"), 200


def notification(message: dict[str, str], deadline: Deadline) -> tuple[Response, int]:
    remembered = answers.recall(INTAKE, message["MessageId"], "MessageId", log)
    if remembered is not None:
        return answer(remembered)
    try:
        raw, envelope = ses_content(message["Message"])
    except BadJSON as exc:
        return bad_request(log, str(exc))
    verdict = judge(raw, INTAKE, envelope, deadline)
    answers.remember(INTAKE, message["MessageId"], verdict)
    return answer(verdict)


def ses_content(message: str) -> tuple[bytes, Envelope]:
    """The raw message and envelope of an SES ``Received`` notification (SNS ``Message``)."""
    notice = json_object(message.encode("utf-8"), "SES's notification", "Message")
    kind = notice.get("notificationType")
    if kind != "Received":
        raise BadJSON(f"Message.notificationType must be Received, not {str(kind)[:40]!r}")
    action = _object(_object(notice, "receipt", "Message"), "action", "Message.receipt")
    encoding = str(action.get("encoding", "")).upper()
    if "content" not in notice:
        raise BadJSON(
            "Message.content is missing: use an SNS action (the S3 action, for messages over "
            "150 KB, is not covered)"
        )
    content = string_field(notice, "content", "Message")
    if encoding != "BASE64":
        raise BadJSON(
            f"Message.receipt.action.encoding is {encoding or 'missing'}: set the SES receipt "
            "rule's SNS action encoding to Base64 (UTF-8 changes 8-bit bytes)"
        )
    return base64_bytes(content, "Message.content"), _envelope(notice.get("mail"))


def _object(obj: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise BadJSON(f"{where}.{name} must be an object")
    return value


def _envelope(mail: Any) -> Envelope:
    """SES's ``mail`` object, for the log only."""
    if not isinstance(mail, dict):
        return Envelope()
    return Envelope(
        text(mail.get("source")), texts(mail.get("destination")), text(mail.get("messageId"))
    )
