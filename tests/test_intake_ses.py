"""The Amazon SES door: SNS messages signed (versions 1 and 2) with a test key whose certificate
a real HTTPS server on loopback serves, reached through ses-signing-cert-url-pattern and
trusted through ses-ca-bundle. MessageIds are deduplicated on both store backends, and across two
hosts sharing one database."""

from __future__ import annotations

import json

import pytest

from smime_collector.intake import sns
from tests import pki
from tests.intakes import (
    TOPIC,
    SNSSigner,
    ses_notification,
    store_fingerprint,
    stored_fingerprint,
    subscription_confirmation,
)
from tests.paths import SPARKY

SNS_CONTENT_TYPE = "text/plain; charset=UTF-8"  # what SNS sends


@pytest.fixture
def https(https_server):
    return https_server


@pytest.fixture
def signer(sns_signer):
    return sns_signer


@pytest.fixture
def ses(make_settings, https, recording_client):
    """``ses(case, **settings)`` → (client, recording collector, certificate folder) with the
    SES door configured to trust the loopback HTTPS server's certificates."""

    def build(case=None, **extra: str):
        values = {
            "ses-topic-arns": f"arn:aws:sns:us-east-1:1:other, {TOPIC}",
            "ses-signing-cert-url-pattern": rf"^https://127\.0\.0\.1:{https.port}/.+\.pem$",
            "ses-ca-bundle": str(https.ca_file),
            **(case.settings if case else {}),
            **extra,
        }
        return recording_client(make_settings(**values))

    return build


def post(client, message: dict):
    return client.post("/ses", data=json.dumps(message), content_type=SNS_CONTENT_TYPE)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("case_name", ["bob", "alice", "8bit"])
def test_a_signed_notification_stores_the_certificate_byte_exact(
    ses, signer, cases, case_name, version
) -> None:
    case = cases[case_name]
    client, collector, certs = ses(case)
    response = post(client, signer.sign(ses_notification(case.raw), version))
    assert response.status_code == 200, response.get_json()
    [delivery] = collector.deliveries
    assert (delivery.raw, delivery.intake) == (case.raw, "ses")
    assert delivery.envelope.provider_id == "o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1"
    assert stored_fingerprint(certs, case.email) == case.fingerprint


def test_a_signature_by_another_key_is_403_and_not_judged(ses, https, cases) -> None:
    forger = SNSSigner(pki.make_root("Forger"), f"{https.base}/SimpleNotificationService-t.pem")
    client, collector, _ = ses(cases["bob"])
    response = post(client, forger.sign(ses_notification(cases["bob"].raw)))
    assert response.status_code == 403
    assert "does not verify" in response.get_json()["message"]
    assert collector.deliveries == []


@pytest.mark.parametrize("field", ["Message", "TopicArn", "MessageId", "Timestamp", "Type"])
def test_a_field_changed_after_signing_is_403(ses, signer, cases, field) -> None:
    client, collector, _ = ses(cases["bob"])
    signed = signer.sign(ses_notification(cases["bob"].raw))
    other = ses_notification(cases["alice"].raw, topic="arn:aws:sns:us-east-1:1:other")
    other |= {"Type": "SubscriptionConfirmation", "Timestamp": "2026-11-29T11:11:11.000Z"}
    changed = {**signed, field: other[field]}
    if field == "Type":
        changed |= {"SubscribeURL": f"{signer.cert_url}?x", "Token": "t"}
    assert post(client, changed).status_code == 403
    assert collector.deliveries == []


def test_a_certificate_url_outside_the_pattern_is_never_fetched(ses, signer, https, cases) -> None:
    client, collector, _ = ses(cases["bob"])
    before = len(https.requested())
    for url in (
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        f"http://127.0.0.1:{https.port}/SimpleNotificationService-t.pem",
        f"https://user@127.0.0.1:{https.port}/SimpleNotificationService-t.pem",
    ):
        message = signer.sign(ses_notification(cases["bob"].raw)) | {"SigningCertURL": url}
        response = post(client, message)
        assert response.status_code == 403
        assert "ses-signing-cert-url-pattern" in response.get_json()["message"]
    assert len(https.requested()) == before
    assert collector.deliveries == []


def test_the_default_pattern_allows_only_sns_hosts(make_settings) -> None:
    pattern = make_settings().ses_signing_cert_url_pattern
    assert pattern.fullmatch("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem")
    assert pattern.fullmatch(
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    )
    for url in (
        "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
        "http://sns.us-east-1.amazonaws.com/x.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com/x.pem.txt",
    ):
        assert not pattern.fullmatch(url), url


def test_without_the_ca_bundle_the_certificate_cannot_be_fetched_so_503(
    ses, signer, cases, make_settings, https, recording_client
) -> None:
    """The loopback server's CA is not among the system's roots: TLS fails, SNS retries."""
    settings = make_settings(
        **cases["alice"].settings,
        ses_topic_arns=TOPIC,
        ses_signing_cert_url_pattern=rf"^https://127\.0\.0\.1:{https.port}/.+\.pem$",
    )
    client, collector, _ = recording_client(settings)
    assert post(client, signer.sign(ses_notification(cases["alice"].raw))).status_code == 503
    assert collector.deliveries == []


def test_the_signing_certificate_is_fetched_once(ses, signer, https, cases) -> None:
    client, collector, _ = ses(cases["alice"])
    before = https.requested().count("/SimpleNotificationService-t.pem")
    for _ in range(3):
        assert post(client, signer.sign(ses_notification(cases["alice"].raw))).status_code == 200
    assert https.requested().count("/SimpleNotificationService-t.pem") == before + 1
    assert len(collector.deliveries) == 3


def test_a_topic_not_in_the_list_is_403(ses, signer, cases) -> None:
    client, collector, _ = ses(cases["bob"])
    message = ses_notification(cases["bob"].raw, topic="arn:aws:sns:eu-west-1:666:evil")
    response = post(client, signer.sign(message))
    assert response.status_code == 403
    assert "ses-topic-arns" in response.get_json()["message"]
    assert collector.deliveries == []


def test_utf8_encoding_is_400_asking_for_base64(ses, signer, cases) -> None:
    client, collector, _ = ses(cases["bob"])
    response = post(client, signer.sign(ses_notification(cases["bob"].raw, encoding="UTF8")))
    assert response.status_code == 400
    assert "encoding to Base64" in response.get_json()["message"]
    assert collector.deliveries == []


def test_the_signature_is_checked_before_anything_else(ses, https, cases) -> None:
    forger = SNSSigner(pki.make_root("Forger"), f"{https.base}/SimpleNotificationService-t.pem")
    client, _, _ = ses(cases["bob"])
    message = ses_notification(cases["bob"].raw, encoding="UTF8", topic="arn:aws:sns:x:1:y")
    assert post(client, forger.sign(message)).status_code == 403


def test_an_s3_action_notification_is_400_saying_it_is_not_covered(ses, signer, cases) -> None:
    client, collector, _ = ses(cases["bob"])
    message = ses_notification(cases["bob"].raw)
    notice = json.loads(message["Message"])
    del notice["content"]
    notice["receipt"]["action"] = {"type": "S3", "bucketName": "b", "objectKey": "k"}
    response = post(client, signer.sign({**message, "Message": json.dumps(notice)}))
    assert response.status_code == 400
    assert "S3 action" in response.get_json()["message"]
    assert collector.deliveries == []


def test_a_message_id_answered_once_is_not_judged_again(ses, signer, cases, store_keys) -> None:
    client, collector, _ = ses(cases["bob"], **store_keys)
    message = signer.sign(ses_notification(cases["bob"].raw))
    first, again = post(client, message), post(client, message)
    assert first.status_code == again.status_code == 200
    assert len(collector.deliveries) == 1


def test_a_message_id_answered_by_another_host_is_not_judged_again(
    ses, signer, cases, database, tmp_path
) -> None:
    """SNS retries reach any host behind the load balancer; hosts share one database."""
    host_a, judged_a, _ = ses(cases["bob"], **database)
    host_b, judged_b, _ = ses(
        cases["bob"],
        **database,
        user_certs_dir=str(tmp_path / "host-b" / "certs"),
        log_file=str(tmp_path / "host-b" / "webapp.log"),
    )
    message = signer.sign(ses_notification(cases["bob"].raw))
    assert post(host_a, message).status_code == post(host_b, message).status_code == 200
    assert (len(judged_a.deliveries), judged_b.deliveries) == (1, [])


def test_tempfail_is_503_and_the_retry_with_the_same_message_id_stores(
    ses, signer, cases, dns, store_keys
) -> None:
    case = cases["bob"]
    client, collector, _ = ses(case, **store_keys)
    message = signer.sign(ses_notification(case.raw))
    dns.mode = "servfail"
    assert post(client, message).status_code == 503
    dns.mode = "normal"
    assert post(client, message).status_code == 200
    assert len(collector.deliveries) == 2
    assert store_fingerprint(collector, case.email) == case.fingerprint


def test_a_rejected_message_is_a_final_200(ses, signer, cases) -> None:
    client, collector, certs = ses(cases["bob"])
    raw = (SPARKY / "signed-from-bob-no-dkim.eml").read_bytes()
    assert post(client, signer.sign(ses_notification(raw))).status_code == 200
    assert len(collector.deliveries) == 1
    assert stored_fingerprint(certs, cases["bob"].email) is None


def test_a_subscription_is_confirmed_by_fetching_its_subscribe_url(ses, signer, https) -> None:
    client, collector, _ = ses()
    url = f"{https.base}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc123"
    response = post(client, signer.sign(subscription_confirmation(url)))
    assert response.status_code == 200
    assert f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc123" in https.requested()
    assert collector.deliveries == []


def test_a_subscribe_url_on_another_host_is_403_and_not_fetched(ses, signer, https) -> None:
    client, _, _ = ses()
    url = "https://sns.evil.example/?Action=ConfirmSubscription&Token=abc"
    response = post(client, signer.sign(subscription_confirmation(url)))
    assert response.status_code == 403  # fetching it would have failed: 503
    assert "is not on a host" in response.get_json()["message"]


def test_a_pattern_that_fixes_the_path_still_confirms_subscriptions(ses, https, cases) -> None:
    """An operator pattern naming the certificates' folder: the SubscribeURL (another path on
    the same host and port) is judged by the pattern's host part, so SNS's confirmation is
    fetched, while one on another host or port, or over plain HTTP, is refused unfetched."""
    (https.folder / "certs").mkdir(exist_ok=True)
    signer = SNSSigner(https.root, f"{https.base}/certs/SimpleNotificationService-t.pem")
    (https.folder / "certs" / "SimpleNotificationService-t.pem").write_bytes(
        signer.identity.cert_pem()
    )
    pattern = rf"^https://127\.0\.0\.1:{https.port}/certs/.+\.pem$"
    client, collector, _ = ses(ses_signing_cert_url_pattern=pattern)
    query = f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=fixed-path"
    response = post(client, signer.sign(subscription_confirmation(f"{https.base}{query}")))
    assert response.status_code == 200, response.get_json()
    assert query in https.requested()
    before = len(https.requested())
    for url in (
        f"https://localhost:{https.port}{query}",
        f"https://127.0.0.1:{https.port + 1}{query}",
        f"http://127.0.0.1:{https.port}{query}",
        f"https://user@127.0.0.1:{https.port}{query}",
    ):
        response = post(client, signer.sign(subscription_confirmation(url)))
        assert response.status_code == 403, url
        assert "is not on a host" in response.get_json()["message"]
    assert len(https.requested()) == before  # none of them fetched
    assert collector.deliveries == []


def test_the_default_pattern_allows_subscribe_urls_on_sns_hosts_only(make_settings) -> None:
    fetcher = sns.Fetcher(make_settings().ses_signing_cert_url_pattern, None)
    cert_url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa.pem"
    query = "/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:t&Token=abc"
    for url in ("https://sns.us-east-1.amazonaws.com", "https://sns.cn-north-1.amazonaws.com.cn"):
        assert fetcher.subscribe_url_ok(url + query, cert_url), url
    for url in (
        "https://sns.us-east-1.amazonaws.com.evil.example",
        "http://sns.us-east-1.amazonaws.com",
        "https://evil.example/sns.us-east-1.amazonaws.com",
        "https://user@sns.us-east-1.amazonaws.com",
        "https://@sns.us-east-1.amazonaws.com",
        "https://sns.us-east-1.amazonaws.com\\@evil.example",
    ):
        assert not fetcher.subscribe_url_ok(url + query, cert_url), url


def test_a_subscribe_url_that_fails_is_503(ses, signer, https) -> None:
    client, _, _ = ses()
    url = f"{https.base}/no-such-document"
    assert post(client, signer.sign(subscription_confirmation(url))).status_code == 503


def test_an_unsubscribe_confirmation_is_acknowledged(ses, signer, https) -> None:
    client, collector, _ = ses()
    message = subscription_confirmation(f"{https.base}/?Action=ConfirmSubscription")
    message["Type"] = "UnsubscribeConfirmation"
    assert post(client, signer.sign(message)).status_code == 200
    assert collector.deliveries == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"Type": "Surprise"}', "Type must be one of"),
        (b'{"Type": "Notification"}', "Message is missing"),
        (b"\xff", "not valid UTF-8"),
    ],
)
def test_malformed_sns_bodies_are_400_naming_the_field(ses, body, needle) -> None:
    client, _, _ = ses()
    response = client.post("/ses", data=body, content_type=SNS_CONTENT_TYPE)
    assert response.status_code == 400
    assert needle in response.get_json()["message"]


def test_an_unknown_signature_version_is_400(ses, signer, cases) -> None:
    client, _, _ = ses()
    message = signer.sign(ses_notification(cases["bob"].raw)) | {"SignatureVersion": "3"}
    response = post(client, message)
    assert response.status_code == 400
    assert "SignatureVersion must be 1 or 2" in response.get_json()["message"]
