"""The relay endpoint through Flask's test client: shape checks, auth, batches, status codes."""

from __future__ import annotations

import json

import pytest

from tests.corpus import sparky_rows
from tests.helpers import TOKEN_HEADER, logged_verdicts, post_batch, relay_event
from webapp import create_app

BOB = sparky_rows()[0]
BOB_TIME = "2018-11-22T15:09:16Z"


@pytest.fixture
def client(make_settings):
    return create_app(make_settings(verify_time=BOB_TIME)).test_client()


def _post(client, body, content_type="application/json", token="test-token"):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers[TOKEN_HEADER] = token
    return client.post("/", data=body, headers=headers)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_400(client, ctype) -> None:
    response = _post(client, "[]", content_type=ctype)
    assert response.status_code == 400
    assert response.get_json() == {"message": "Unknown Content-Type in request headers"}


def test_content_type_parameters_are_allowed(client) -> None:
    response = _post(client, "[]", content_type="application/json; charset=utf-8")
    assert response.status_code == 200


@pytest.mark.parametrize("token", [None, "", "wrong", "test-token ", "TEST-TOKEN"])
def test_wrong_or_missing_token_is_401(client, token) -> None:
    response = _post(client, "[]", token=token)
    assert response.status_code == 401
    assert response.get_json() == {
        "message": "Invalid X-MessageSystems-Webhook-Token in request headers"
    }


def test_empty_token_setting_disables_the_check_with_a_warning(make_settings) -> None:
    settings = make_settings(x_messagesystems_webhook_token="")
    client = create_app(settings).test_client()
    assert _post(client, "[]", token=None).status_code == 200
    assert "x-messagesystems-webhook-token is empty" in settings.log_file.read_text()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"\xff\xfe[]", "UTF-8"),
        (b"[{", "not valid JSON"),
        (b"{}", "JSON array"),
        (b'"text"', "JSON array"),
        (b"[1]", "[0].msys is missing"),
        (b'[{"msys": []}]', "[0].msys must be an object"),
        (b'[{"msys": {}}]', "[0].msys.relay_message is missing"),
        (b'[{"msys": {"relay_message": {}}}]', "[0].msys.relay_message.content is missing"),
        (
            b'[{"msys": {"relay_message": {"content": {}}}}]',
            "content.email_rfc822 is missing",
        ),
        (
            b'[{"msys": {"relay_message": {"content": {"email_rfc822": 5}}}}]',
            "content.email_rfc822 must be a string",
        ),
        (
            b'[{"msys": {"relay_message": {"content": {"email_rfc822": "x",'
            b' "email_rfc822_is_base64": "yes"}}}}]',
            "email_rfc822_is_base64 must be a boolean",
        ),
        (
            b'[{"msys": {"relay_message": {"content": {"email_rfc822": "%%%",'
            b' "email_rfc822_is_base64": true}}}}]',
            "email_rfc822 is not valid base64",
        ),
    ],
)
def test_malformed_batches_are_400_naming_the_problem(client, body, needle) -> None:
    response = _post(client, body)
    assert response.status_code == 400
    assert needle in response.get_json()["message"]


def test_a_bad_batch_item_judges_nothing(client) -> None:
    """The whole batch is validated first: a 400 means no message was processed."""
    events = [relay_event(BOB.raw), {"msys": {}}]
    assert post_batch(client, events).status_code == 400
    assert not (
        client.application.extensions["smime_collector"].collector.store.folder / f"{BOB.email}.crt"
    ).exists()


def test_base64_relay_content_is_decoded(client) -> None:
    response = post_batch(client, [relay_event(BOB.raw, as_base64=True)])
    assert response.status_code == 200
    store = client.application.extensions["smime_collector"].collector.store
    assert (store.folder / f"{BOB.email}.crt").is_file()


def test_bad_message_does_not_stop_the_good_one(client) -> None:
    junk = relay_event(b"this is not an email at all")
    response = post_batch(client, [junk, relay_event(BOB.raw), relay_event(b"")])
    assert response.status_code == 200
    assert response.get_json() == {"message": "OK", "count": 3}
    log_file = client.application.extensions["smime_collector"].collector.settings.log_file
    assert [v[:2] for v in logged_verdicts(log_file)] == [
        ("rejected", "malformed"),
        ("stored", "ok"),
        ("rejected", "malformed"),
    ]


def test_same_certificate_twice_is_unchanged(client) -> None:
    assert post_batch(client, [relay_event(BOB.raw), relay_event(BOB.raw)]).status_code == 200
    log_file = client.application.extensions["smime_collector"].collector.settings.log_file
    assert [v[0] for v in logged_verdicts(log_file)] == ["stored", "unchanged"]


def test_dns_failure_is_503_and_the_retry_stores(client, dns) -> None:
    dns.mode = "servfail"
    assert post_batch(client, [relay_event(BOB.raw)]).status_code == 503
    store = client.application.extensions["smime_collector"].collector.store
    assert not (store.folder / f"{BOB.email}.crt").exists()
    dns.mode = "normal"
    assert post_batch(client, [relay_event(BOB.raw)]).status_code == 200
    assert (store.folder / f"{BOB.email}.crt").exists()


def test_dns_timeout_is_503(client, dns) -> None:
    dns.mode = "drop"
    response = post_batch(client, [relay_event(BOB.raw)])
    assert response.status_code == 503
    log_file = client.application.extensions["smime_collector"].collector.settings.log_file
    assert logged_verdicts(log_file)[-1][:2] == ("tempfail", "dns-error")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/", 405), ("GET", "/nope", 404), ("POST", "/x", 404), ("PUT", "/", 405)],
)
def test_other_paths_and_methods_answer_json(client, method, path, status) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert isinstance(response.get_json()["message"], str)


def test_body_over_the_limit_is_413(make_settings) -> None:
    client = create_app(make_settings(max_request_bytes="1000")).test_client()
    response = _post(client, json.dumps([relay_event(BOB.raw)]))
    assert response.status_code == 413
    assert "message" in response.get_json()


def _requests_with_status(status: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("smime_requests_total", {"status": status}) or 0.0


def test_every_relay_answer_is_counted_in_metrics(make_settings) -> None:
    """Answers from error handlers (413) count like the others: metrics follow the status."""
    client = create_app(make_settings(max_request_bytes="1000")).test_client()
    before = {s: _requests_with_status(s) for s in ("200", "401", "413")}
    assert _post(client, "[]").status_code == 200
    assert _post(client, "[]", token="wrong").status_code == 401
    assert _post(client, json.dumps([relay_event(BOB.raw)])).status_code == 413
    client.get("/healthz")
    for status in before:
        assert _requests_with_status(status) == before[status] + 1, status


def _event_with_number(digits: int) -> bytes:
    """A well-formed event whose msg_from (any JSON value) is an integer of ``digits`` digits."""
    return (
        b'[{"msys": {"relay_message": {"msg_from": '
        + b"7" * digits
        + b', "content": {"email_rfc822": ""}}}}]'
    )


def test_a_json_integer_of_more_than_4300_digits_is_400(client) -> None:
    """Python refuses to convert it (int_max_str_digits); that ValueError was a 503."""
    assert _post(client, _event_with_number(4300)).status_code == 200
    response = _post(client, _event_with_number(4301))
    assert response.status_code == 400
    assert response.get_json() == {
        "message": "request body is not valid JSON: Exceeds the limit (4300 digits) for "
        "integer string conversion: value has 4301 digits"
    }


def test_a_batch_of_more_than_100_events_is_413_and_judges_nothing(client) -> None:
    from smime_collector.intake.sparkpost import MAX_BATCH_ITEMS

    junk = relay_event(b"this is not an email at all")
    assert post_batch(client, [junk] * MAX_BATCH_ITEMS).status_code == 200
    response = post_batch(client, [junk] * (MAX_BATCH_ITEMS + 1))
    assert response.status_code == 413
    assert response.get_json() == {
        "message": "the batch holds 101 relay events, more than the bound of 100; "
        "send at most 100 per request"
    }
    log_file = client.application.extensions["smime_collector"].collector.settings.log_file
    assert len(logged_verdicts(log_file)) == MAX_BATCH_ITEMS  # the first batch only
