"""An exception nobody expected is judged by the stage it escapes from (smime_collector.stages).

A bug is planted in one stage of the real pipeline (a subclass whose step raises for a marked
message, as a library raising on odd input would): a stage that reads the sender's bytes
rejects the message with that stage's reason and logs the traceback at ERROR; a dependency's
failure is ``tempfail``; the batch answers 200 or 503 accordingly and the app serves on.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from smime_collector.deadline import DeadlineExceeded
from smime_collector.dnskeys import DNSTempError
from smime_collector.guardedfetch import FetchError
from smime_collector.logsetup import attach
from smime_collector.pipeline import Collector
from smime_collector.stages import UNTRUSTED_INPUT_REASONS
from smime_collector.verdict import Outcome
from tests.helpers import logged_verdicts, post_batch, relay_event
from tests.mailfactory import MailFactory
from webapp import create_app

MARK = b"X-Plant: "
ALICE = "alice@stages.example"


class PlantedCollector(Collector):
    """Raises ``planted[stage]`` inside that stage for a message carrying ``X-Plant: <stage>``."""

    planted: dict[str, BaseException] = {}

    def _trigger(self, raw: bytes, stage: str) -> None:
        if MARK + stage.encode() in raw:
            raise self.planted[stage]

    def _log_parts(self, msg):
        self._trigger(msg.raw, "parse")
        return super()._log_parts(msg)

    def _check_dkim(self, parsed, deadline):
        self._trigger(parsed.raw, "dkim")
        return super()._check_dkim(parsed, deadline)

    def _choose_certificate(self, signer, signed, msg, at: datetime, deadline):
        self._trigger(msg.raw, "chain")
        return super()._choose_certificate(signer, signed, msg, at, deadline)


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("stages-pki"))


def planted(mail: MailFactory, stage: str) -> bytes:
    return mail.signed(ALICE).replace(b"\r\nFrom:", b"\r\n" + MARK + stage.encode() + b"\r\nFrom:")


@pytest.fixture
def app(make_settings, mail):
    settings = make_settings(trusted_certs=str(mail.ca_file))
    collector = PlantedCollector.build(settings, attach("webapp", settings.log_file))
    return create_app(settings, collector)


@pytest.mark.parametrize(("stage", "reason"), [("parse", "malformed"), ("dkim", "dkim-invalid")])
def test_a_bug_while_reading_the_message_rejects_it(app, mail, stage, reason) -> None:
    PlantedCollector.planted = {stage: IndexError("list index out of range")}
    client = app.test_client()
    good = mail.signed(ALICE)
    assert (
        post_batch(client, [relay_event(planted(mail, stage)), relay_event(good)]).status_code
        == 200
    )
    log_file = app.extensions["smime_collector"].collector.settings.log_file
    assert [v[:2] for v in logged_verdicts(log_file)] == [("rejected", reason), ("stored", "ok")]
    text = log_file.read_text("utf-8")
    line = (
        rf",ERROR,[\w.:-]+,\| unexpected IndexError in the {stage} stage; the message is rejected"
    )
    assert re.search(line, text), text[-2000:]
    assert "Traceback (most recent call last)" in text


def test_a_bug_in_the_certificate_stage_is_bad_signature(app, mail) -> None:
    PlantedCollector.planted = {"chain": ValueError("odd certificate")}
    verdict = app.extensions["smime_collector"].collector.read_smime_email(planted(mail, "chain"))
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, UNTRUSTED_INPUT_REASONS["chain"])
    assert "ValueError: odd certificate" in verdict.detail


@pytest.mark.parametrize(
    "error", [DNSTempError("resolver gone"), DeadlineExceeded("budget spent")], ids=str
)
def test_a_dependency_failing_inside_a_stage_is_tempfail(app, mail, error) -> None:
    PlantedCollector.planted = {"dkim": error}
    client = app.test_client()
    batch = [relay_event(planted(mail, "dkim")), relay_event(mail.signed(ALICE))]
    response = post_batch(client, batch)
    assert response.status_code == 503
    assert response.get_json() == {"message": "Temporary failure; please retry", "count": 2}
    log_file = app.extensions["smime_collector"].collector.settings.log_file
    assert logged_verdicts(log_file) == [("tempfail", "dns-error", ALICE)]  # the rest waits
    assert "Traceback" not in log_file.read_text("utf-8")


@pytest.mark.parametrize(
    "error",
    [FetchError("crl.example: timed out", transient=True), DeadlineExceeded("budget spent")],
    ids=str,
)
def test_a_revocation_server_failing_in_the_chain_stage_is_tempfail(app, mail, error) -> None:
    PlantedCollector.planted = {"chain": error}
    verdict = app.extensions["smime_collector"].collector.read_smime_email(planted(mail, "chain"))
    assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, "revocation-unavailable")
