"""The Mailgun, Postmark, SendGrid and raw doors through Flask's test client and the real
pipeline: the corpus stored byte-exact through each, every authentication failure, malformed
bodies named, tempfail and retry, Mailgun's token memory (on both store backends, and across
two hosts sharing one database)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import psycopg
import pytest
from prometheus_client import REGISTRY

from tests.intakes import (
    Case,
    basic,
    mailgun_fields,
    multipart,
    postmark_json,
    sendgrid_fields,
    store_fingerprint,
    stored_fingerprint,
    urlencoded,
)
from tests.paths import SPARKY
from tests.postgres import PASSWORD
from webapp import create_app

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
POSTMARK = "postmark:s3cret pass"
SENDGRID = "sendgrid:an0ther:pass"
RAW = "raw-door-token"
DOORS = {
    "mailgun-signing-key": KEY,
    "postmark-basic-auth": POSTMARK,
    "sendgrid-basic-auth": SENDGRID,
    "raw-token": RAW,
}


@pytest.fixture
def door(make_settings, recording_client):
    """``door(case, **settings)`` → (test client, recording collector, certificate folder)
    with every door configured."""

    def build(case: Case | None = None, **extra: str):
        return recording_client(make_settings(**(case.settings if case else {}), **DOORS, **extra))

    return build


def send_mailgun_multipart(client, raw: bytes, **kw):
    body, ctype = multipart(mailgun_fields(raw, KEY, **kw))
    return client.post("/mailgun/mime", data=body, content_type=ctype)


def send_mailgun_urlencoded(client, raw: bytes, **kw):
    body, ctype = urlencoded(mailgun_fields(raw, KEY, **kw))
    return client.post("/mailgun/mime", data=body, content_type=ctype)


def send_postmark(client, raw: bytes):
    return client.post("/postmark", json=postmark_json(raw), headers=basic(POSTMARK))


def send_sendgrid(client, raw: bytes):
    body, ctype = multipart(sendgrid_fields(raw))
    return client.post("/sendgrid", data=body, content_type=ctype, headers=basic(SENDGRID))


def send_raw(client, raw: bytes):
    headers = {"Authorization": f"Bearer {RAW}"}
    return client.post("/raw", data=raw, content_type="message/rfc822", headers=headers)


SENDERS: dict[str, tuple[str, Callable]] = {
    "mailgun-multipart": ("mailgun", send_mailgun_multipart),
    "mailgun-urlencoded": ("mailgun", send_mailgun_urlencoded),
    "postmark": ("postmark", send_postmark),
    "sendgrid": ("sendgrid", send_sendgrid),
    "raw": ("raw", send_raw),
}
#: JSON carries text: Postmark's RawEmail cannot hold bytes that are not UTF-8.
CANNOT_CARRY = {("postmark", "8bit")}


@pytest.mark.parametrize(
    ("sender", "case_name"),
    [
        (sender, case)
        for sender in SENDERS
        for case in ("bob", "alice", "8bit")
        if (sender, case) not in CANNOT_CARRY  # see test_postmark_refuses_8bit_bytes_*
    ],
)
def test_every_door_stores_the_certificate_from_the_exact_bytes(door, cases, sender, case_name):
    case = cases[case_name]
    intake, send = SENDERS[sender]
    client, collector, certs = door(case)
    response = send(client, case.raw)
    assert response.status_code == 200, response.get_json()
    [delivery] = collector.deliveries
    assert delivery.raw == case.raw
    assert delivery.intake == intake
    assert stored_fingerprint(certs, case.email) == case.fingerprint


def test_raw_answers_with_the_verdict(door, cases) -> None:
    client, _, _ = door(cases["bob"])
    first = send_raw(client, cases["bob"].raw)
    assert first.get_json() == {"outcome": "stored", "reason": "ok", "email": cases["bob"].email}
    again = send_raw(client, cases["bob"].raw).get_json()
    assert again["outcome"] == "unchanged"
    unsigned = send_raw(client, (SPARKY / "signed-from-bob-no-dkim.eml").read_bytes())
    assert unsigned.status_code == 200
    assert unsigned.get_json() == {
        "outcome": "rejected",
        "reason": "dkim-missing",
        "email": cases["bob"].email,
    }


@pytest.mark.parametrize("sender", ["mailgun-multipart", "postmark", "sendgrid"])
def test_a_rejected_message_is_a_final_200(door, cases, sender) -> None:
    _, send = SENDERS[sender]
    client, collector, certs = door(cases["bob"])
    response = send(client, (SPARKY / "signed-from-bob-no-dkim.eml").read_bytes())
    assert response.status_code == 200
    assert len(collector.deliveries) == 1
    assert stored_fingerprint(certs, cases["bob"].email) is None


def test_postmark_refuses_8bit_bytes_inside_json_naming_the_byte(door, cases) -> None:
    case = cases["8bit"]
    client, collector, _ = door(case)
    text = json.dumps({"RawEmail": case.raw.decode("latin-1")}, ensure_ascii=False)
    response = client.post(
        "/postmark", data=text.encode("latin-1"), content_type="application/json",
        headers=basic(POSTMARK),
    )  # fmt: skip
    assert response.status_code == 400
    message = response.get_json()["message"]
    assert "not valid UTF-8 (byte " in message and "8-bit" in message
    assert collector.deliveries == []


def test_postmark_8bit_transcoded_by_a_provider_is_rejected_not_stored(door, cases) -> None:
    """A provider that turns Latin-1 into UTF-8 changes the signed bytes: the signatures say so."""
    case = cases["8bit"]
    client, collector, certs = door(case)
    body = postmark_json(None, RawEmail=case.raw.decode("latin-1"))
    response = client.post("/postmark", json=body, headers=basic(POSTMARK))
    assert response.status_code == 200
    [delivery] = collector.deliveries
    assert delivery.raw != case.raw
    assert stored_fingerprint(certs, case.email) is None
    log = certs.parent.joinpath("webapp.log").read_text("utf-8")
    assert "outcome=rejected,reason=dkim-invalid" in log


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"signature": b"0" * 64},
        {"signature": b""},
        {"token": b"another-token-than-the-one-signed"},
        {"timestamp": b"1"},
    ],
    ids=["wrong-signature", "empty-signature", "token-swapped", "timestamp-swapped"],
)
def test_mailgun_forged_signature_is_401_and_not_judged(door, cases, change) -> None:
    client, collector, _ = door(cases["bob"])
    fields = {**mailgun_fields(cases["bob"].raw, KEY), **change}
    body, ctype = multipart(fields)
    response = client.post("/mailgun/mime", data=body, content_type=ctype)
    assert response.status_code == 401
    assert "Mailgun-Signature" in response.headers["WWW-Authenticate"]
    assert collector.deliveries == []


@pytest.mark.parametrize("missing", ["timestamp", "token", "signature"])
def test_mailgun_unsigned_is_401(door, cases, missing) -> None:
    client, collector, _ = door(cases["bob"])
    fields = mailgun_fields(cases["bob"].raw, KEY)
    del fields[missing]
    body, ctype = multipart(fields)
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 401
    assert collector.deliveries == []


def test_mailgun_signed_with_another_key_is_401(door, cases) -> None:
    client, collector, _ = door(cases["bob"])
    body, ctype = multipart(mailgun_fields(cases["bob"].raw, "some other key"))
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 401
    assert collector.deliveries == []


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_mailgun_timestamp_more_than_5_minutes_away_is_401(door, cases, offset) -> None:
    client, collector, _ = door(cases["bob"])
    response = send_mailgun_multipart(client, cases["bob"].raw, timestamp=int(time.time()) + offset)
    assert response.status_code == 401
    assert "more than 300 s" in response.get_json()["message"]
    assert collector.deliveries == []


def test_mailgun_timestamp_within_5_minutes_is_accepted(door, cases) -> None:
    client, _, _ = door(cases["bob"])
    response = send_mailgun_multipart(client, cases["bob"].raw, timestamp=int(time.time()) - 240)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "credentials"),
    [
        ("/postmark", None),
        ("/postmark", basic("postmark:wrong")),
        ("/postmark", basic("someone:s3cret pass")),
        ("/postmark", {"Authorization": "Bearer " + POSTMARK}),
        ("/postmark", {"Authorization": "Basic %%%not-base64"}),
        ("/sendgrid", None),
        ("/sendgrid", basic(POSTMARK)),
        ("/sendgrid", basic("sendgrid:an0ther")),
    ],
)
def test_basic_auth_doors_refuse_wrong_credentials(door, cases, path, credentials) -> None:
    client, collector, _ = door(cases["bob"])
    response = client.post(path, json=postmark_json(cases["bob"].raw), headers=credentials or {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert collector.deliveries == []


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {RAW}", f"Bearer {RAW}x"])
def test_raw_refuses_a_wrong_token(door, cases, header) -> None:
    client, collector, _ = door(cases["bob"])
    headers = {"Authorization": header} if header else {}
    response = client.post(
        "/raw", data=cases["bob"].raw, content_type="message/rfc822", headers=headers
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert collector.deliveries == []


@pytest.mark.parametrize("path", ["/mailgun/mime", "/postmark", "/sendgrid", "/ses", "/raw"])
def test_a_door_without_its_secret_does_not_exist(make_settings, path) -> None:
    client = create_app(make_settings()).test_client()
    assert client.post(path, data=b"x").status_code == 404
    assert client.get(path).status_code == 404


# -- malformed input --------------------------------------------------------------------------


def test_mailgun_without_body_mime_names_the_field(door, cases) -> None:
    client, collector, _ = door(cases["bob"])
    body, ctype = multipart(mailgun_fields(None, KEY))
    response = client.post("/mailgun/mime", data=body, content_type=ctype)
    assert response.status_code == 400
    assert "body-mime is missing" in response.get_json()["message"]
    assert collector.deliveries == []


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"{}", "application/json", "Content-Type must be multipart/form-data or"),
        (b"x", "multipart/form-data", "needs a boundary"),
        (b"--b\r\nno disposition\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b",
         "not valid multipart/form-data"),
        (b"--b\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nunterminated",
         "multipart/form-data; boundary=b", "not valid multipart/form-data"),
        (b"&".join(b"f%d=1" % i for i in range(1001)), "application/x-www-form-urlencoded",
         "more than 1000 fields"),
        (b"timestamp=1&token=%FF&signature=x", "application/x-www-form-urlencoded",
         "token is not valid UTF-8"),
    ],
)  # fmt: skip
def test_mailgun_malformed_forms_are_400_naming_the_problem(door, body, ctype, needle) -> None:
    client, collector, _ = door()
    response = client.post("/mailgun/mime", data=body, content_type=ctype)
    assert response.status_code == 400
    assert needle in response.get_json()["message"]
    assert collector.deliveries == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"TextBody": "hello"}, 'turn on "Include raw email content"'),
        ({"RawEmail": 5}, "RawEmail must be a string"),
        ({"RawEmail": "\ud800"}, "lone surrogate"),
        ([1], "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_postmark_malformed_is_400_naming_the_field(door, body, needle) -> None:
    client, collector, _ = door()
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.post(
        "/postmark", data=data, content_type="application/json", headers=basic(POSTMARK)
    )
    assert response.status_code == 400
    assert needle in response.get_json()["message"]
    assert collector.deliveries == []


def test_postmark_wants_json(door) -> None:
    client, _, _ = door()
    response = client.post(
        "/postmark", data="x", content_type="text/plain", headers=basic(POSTMARK)
    )
    assert response.status_code == 400
    assert "application/json" in response.get_json()["message"]


def test_sendgrid_without_the_raw_message_names_the_setting(door) -> None:
    client, collector, _ = door()
    body, ctype = multipart(sendgrid_fields(None) | {"text": b"hello"})
    response = client.post("/sendgrid", data=body, content_type=ctype, headers=basic(SENDGRID))
    assert response.status_code == 400
    assert 'turn on "POST the raw, full MIME message"' in response.get_json()["message"]
    assert collector.deliveries == []


def test_sendgrid_wants_multipart(door, cases) -> None:
    client, _, _ = door()
    body, ctype = urlencoded(sendgrid_fields(cases["bob"].raw))
    response = client.post("/sendgrid", data=body, content_type=ctype, headers=basic(SENDGRID))
    assert response.status_code == 400
    assert "multipart/form-data" in response.get_json()["message"]


def test_sendgrid_email_sent_as_a_file_part_is_read_too(door, cases) -> None:
    client, collector, _ = door(cases["alice"])
    body, ctype = multipart(sendgrid_fields(cases["alice"].raw), files=("email",))
    response = client.post("/sendgrid", data=body, content_type=ctype, headers=basic(SENDGRID))
    assert response.status_code == 200
    assert collector.deliveries[0].raw == cases["alice"].raw


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"", "message/rfc822", "request body is empty"),
        (b"From: a@b\r\n\r\nx", "text/plain", "Content-Type must be message/rfc822"),
    ],
)
def test_raw_malformed_is_400(door, body, ctype, needle) -> None:
    client, collector, _ = door()
    headers = {"Authorization": f"Bearer {RAW}"}
    response = client.post("/raw", data=body, content_type=ctype, headers=headers)
    assert response.status_code == 400
    assert needle in response.get_json()["message"]
    assert collector.deliveries == []


@pytest.mark.parametrize("sender", list(SENDERS))
def test_every_door_has_the_size_limit(door, cases, sender) -> None:
    _, send = SENDERS[sender]
    client, collector, _ = door(cases["bob"], max_request_bytes="2000")
    assert send(client, cases["bob"].raw).status_code == 413
    assert collector.deliveries == []


# -- tempfail, retry, replay ------------------------------------------------------------------


@pytest.mark.parametrize("sender", list(SENDERS))
def test_tempfail_is_503_and_the_retry_stores(door, cases, dns, sender) -> None:
    _, send = SENDERS[sender]
    case = cases["bob"]
    client, collector, certs = door(case)
    dns.mode = "servfail"
    response = send(client, case.raw)
    assert response.status_code == 503
    assert stored_fingerprint(certs, case.email) is None
    dns.mode = "normal"
    assert send(client, case.raw).status_code == 200
    assert len(collector.deliveries) == 2
    assert stored_fingerprint(certs, case.email) == case.fingerprint


def test_mailgun_token_replay_gets_the_same_answer_without_judging(door, cases, store_keys) -> None:
    case = cases["bob"]
    client, collector, _ = door(case, **store_keys)
    fields = mailgun_fields(case.raw, KEY)
    body, ctype = multipart(fields)
    first = client.post("/mailgun/mime", data=body, content_type=ctype)
    replay = client.post("/mailgun/mime", data=body, content_type=ctype)
    assert (first.status_code, first.get_json()) == (replay.status_code, replay.get_json())
    assert len(collector.deliveries) == 1
    swapped, ctype = multipart({**fields, "body-mime": b"From: x@example.org\r\n\r\nforged"})
    assert client.post("/mailgun/mime", data=swapped, content_type=ctype).status_code == 200
    assert len(collector.deliveries) == 1  # the token was answered: the new body is not judged


@pytest.mark.parametrize("age", [301, 86400])
def test_mailgun_answered_token_with_an_old_timestamp_is_401(door, cases, store_keys, age) -> None:
    """A capture replayed after its timestamp went stale is refused like any stale request,
    even though its token was answered while fresh: the clock is checked before the memory."""
    case = cases["bob"]
    client, collector, _ = door(case, **store_keys)
    token = "token-answered-while-fresh"
    fresh, ctype = multipart(mailgun_fields(case.raw, KEY, token=token))
    assert client.post("/mailgun/mime", data=fresh, content_type=ctype).status_code == 200
    stale, ctype = multipart(
        mailgun_fields(case.raw, KEY, token=token, timestamp=int(time.time()) - age)
    )
    response = client.post("/mailgun/mime", data=stale, content_type=ctype)
    assert response.status_code == 401
    assert "more than 300 s" in response.get_json()["message"]
    assert len(collector.deliveries) == 1


def test_mailgun_token_memory_is_shared_by_every_worker(
    door, make_settings, cases, store_keys
) -> None:
    """Two apps on one store, as two gunicorn workers: a replay reaching the other one is not
    judged again either."""
    case = cases["bob"]
    client, collector, _ = door(case, **store_keys)
    other, other_collector, _ = door(case, **store_keys)
    body, ctype = multipart(mailgun_fields(case.raw, KEY))
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 200
    assert other.post("/mailgun/mime", data=body, content_type=ctype).status_code == 200
    assert len(collector.deliveries) + len(other_collector.deliveries) == 1


def test_a_mailgun_replay_to_another_host_gets_the_remembered_answer(
    door, cases, database, tmp_path
) -> None:
    """Two hosts (each its own folder and log) behind one load balancer, sharing one
    PostgreSQL: the token host A answered reaches host B, which answers the same without
    judging, even with another body under the same signature."""
    case = cases["bob"]
    host_a, judged_a, _ = door(case, **database)
    host_b, judged_b, _ = door(
        case,
        **database,
        user_certs_dir=str(tmp_path / "host-b" / "certs"),
        log_file=str(tmp_path / "host-b" / "webapp.log"),
    )
    fields = mailgun_fields(case.raw, KEY)
    body, ctype = multipart(fields)
    first = host_a.post("/mailgun/mime", data=body, content_type=ctype)
    assert first.status_code == 200
    assert store_fingerprint(judged_b, case.email) == case.fingerprint, "one database"
    replay = host_b.post("/mailgun/mime", data=body, content_type=ctype)
    assert (replay.status_code, replay.get_json()) == (first.status_code, first.get_json())
    swapped, ctype = multipart({**fields, "body-mime": b"From: x@example.org\r\n\r\nforged"})
    assert host_b.post("/mailgun/mime", data=swapped, content_type=ctype).status_code == 200
    assert (len(judged_a.deliveries), judged_b.deliveries) == (1, [])
    log_b = (tmp_path / "host-b" / "webapp.log").read_text("utf-8")
    assert log_b.count("token already answered (stored, ok)") == 2


def test_an_unusable_answer_memory_means_judging_again(door, cases, store_keys) -> None:
    """A damaged memory file, or a database whose answer table is gone: each delivery is
    judged as new and gets the answer judging gives, never a 500 or a 503."""
    case = cases["bob"]
    client, collector, certs = door(case, **store_keys)
    if store_keys:
        with psycopg.connect(store_keys["database-url"], password=PASSWORD) as conn:
            conn.execute("DROP TABLE answers")
    else:
        certs.mkdir(parents=True, exist_ok=True)
        (certs / ".answers.sqlite3").write_bytes(b"this is not a database" * 100)
    body, ctype = multipart(mailgun_fields(case.raw, KEY))
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 200
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 200
    assert len(collector.deliveries) == 2
    assert store_fingerprint(collector, case.email) == case.fingerprint


def test_mailgun_tempfail_is_not_remembered(door, cases, dns, store_keys) -> None:
    case = cases["bob"]
    client, collector, _ = door(case, **store_keys)
    body, ctype = multipart(mailgun_fields(case.raw, KEY))
    dns.mode = "servfail"
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 503
    dns.mode = "normal"
    assert client.post("/mailgun/mime", data=body, content_type=ctype).status_code == 200
    assert len(collector.deliveries) == 2
    assert store_fingerprint(collector, case.email) == case.fingerprint


def _requests(status: str) -> float:
    return REGISTRY.get_sample_value("smime_requests_total", {"status": status}) or 0.0


def test_every_intake_route_is_counted_in_request_metrics(door, cases) -> None:
    client, _, _ = door(cases["alice"])
    before = {s: _requests(s) for s in ("200", "400", "401")}
    for sender in SENDERS:
        assert SENDERS[sender][1](client, cases["alice"].raw).status_code == 200
    assert client.post("/postmark", json={}, headers=basic(POSTMARK)).status_code == 400
    assert client.post("/raw", data=b"x", content_type="message/rfc822").status_code == 401
    client.get("/healthz")
    assert _requests("200") == before["200"] + len(SENDERS)
    assert _requests("400") == before["400"] + 1
    assert _requests("401") == before["401"] + 1
