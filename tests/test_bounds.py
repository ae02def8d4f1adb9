"""Issue 10's hostile mail, one test per case: each ends in its verdict, decided by its bound.

Every case is the message the issue reports (rebuilt in ``tests/hostile.py``), judged by a real
collector with keys on the loopback DNS server. Each test shows the bound did the work: the
verdict names the bound, and where the expensive step is a DNS query the server counts none.
Next to each bound, a message just inside it is judged in full, so the bound is not simply
refusing everything. How long each case takes, before and after, is measured by
``bench/dos.py`` (no timing asserts here); that none of them harms a gunicorn worker is
``tests/test_hostile_gunicorn.py``.
"""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import pytest
from asn1crypto import keys

from smime_collector import dkimcheck, dnskeys, serving, smime
from smime_collector import message as mime
from smime_collector.deadline import Deadline, DeadlineExceeded
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict
from tests import hostile, pki
from tests.dnsserver import LoopbackDNS
from tests.helpers import post_batch, relay_event
from tests.hostile import Attacker
from tests.mailfactory import dkim_sign
from webapp import create_app

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[pki.Identity, Path]:
    root = pki.make_root("Bounds Root")
    path = tmp_path_factory.mktemp("bounds") / "root.pem"
    path.write_bytes(root.cert_pem())
    return root, path


@pytest.fixture(scope="module")
def attacker(dns_server: LoopbackDNS) -> Attacker:
    return Attacker(dns_server)


@pytest.fixture
def collector(make_settings, root) -> Collector:
    return (
        create_app(make_settings(trusted_certs=str(root[1])))
        .extensions["smime_collector"]
        .collector
    )


def judge(collector: Collector, raw: bytes) -> Verdict:
    return collector.read_smime_email(raw)


def assert_verdict(verdict: Verdict, outcome: Outcome, reason: str, words: str = "") -> None:
    assert (verdict.outcome, verdict.reason) == (outcome, reason), verdict
    assert words in verdict.detail, verdict.detail


def log_of(collector: Collector) -> str:
    return collector.settings.log_file.read_text("utf-8")


# -- DKIM keys: size and exponent, read from the DNS record before any arithmetic ------------


@pytest.mark.parametrize("bits", [16384, 8192, 4097])
def test_a_key_above_4096_bits_with_a_huge_exponent_is_refused_on_its_size(
    collector, attacker, dns, bits
) -> None:
    raw = attacker.huge_exponent(bits)
    assert len(raw) < 2000  # the 1.75 KB mail
    verdict = judge(collector, raw)
    assert_verdict(
        verdict, Outcome.REJECTED, "dkim-invalid", f"RSA key of {bits} bits, more than the bound"
    )


def test_a_huge_exponent_on_an_ordinary_modulus_is_refused(collector, attacker) -> None:
    raw = attacker.huge_exponent(2048, exponent_bits=2047)
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "dkim-invalid", "exponent of 2^32 or more")


def test_an_exponent_just_below_2_to_the_32_is_tried(collector, attacker) -> None:
    """Inside the bound, the key is used: the signature then simply does not verify."""
    selector = "exp-edge-" + secrets.token_hex(3)
    attacker.publish(selector, hostile.rsa_record(hostile.random_odd(2048), 2**32 - 1))
    verdict = judge(collector, attacker.sign(hostile.smime_shell(attacker.address), selector))
    assert_verdict(verdict, Outcome.REJECTED, "dkim-invalid", "signature does not verify")


def test_a_300000_bit_modulus_is_refused_on_its_size(collector, attacker) -> None:
    verdict = judge(collector, attacker.huge_modulus(300_000))
    assert_verdict(verdict, Outcome.REJECTED, "dkim-invalid", "RSA key of 300000 bits")


@pytest.mark.parametrize("record", ["huge", "pkcs1"])
def test_key_records_parse_without_arithmetic(record) -> None:
    """The bound is read from the DER: a 300,000-bit modulus as SubjectPublicKeyInfo or as a
    bare RSAPublicKey (which dkimpy also accepts) is refused by its length."""
    modulus = hostile.random_odd(300_000 if record == "huge" else 2048)
    txt = hostile.rsa_record(modulus, 65537).encode()
    if record == "pkcs1":
        bare = keys.RSAPublicKey({"modulus": modulus, "public_exponent": 65537}).dump()
        txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(bare)
    key = dkimcheck.parse_key_record(txt)
    if record == "huge":
        assert key == "RSA key of 300000 bits, more than the bound of 4096"
    else:
        assert key.key_size == 2048 and key.public_numbers().n == modulus


# -- DKIM signatures: aligned only, at most five, h= bounded ---------------------------------


@pytest.mark.parametrize(
    ("tag", "value"),
    [(rb"i=@attacker\.example;", b"i=attacker.example;"), (rb"t=\d+;", b"t=" + b"9" * 5000 + b";")],
    ids=["i-equal-to-d", "t-of-5000-digits"],
)
def test_tags_that_crash_dkimpys_validation_are_dkim_invalid(
    collector, attacker, tag, value
) -> None:
    """dkimpy's own field check raises IndexError or ValueError on these: caught where read."""
    signed = attacker.sign(hostile.smime_shell(attacker.address))
    raw, count = re.subn(tag, value, signed, count=1)
    assert count == 1
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "dkim-invalid", "tags dkimpy cannot validate")
    assert TRACEBACK not in log_of(collector)


def test_twenty_silent_selectors_cost_at_most_five_lookups(collector, attacker, dns) -> None:
    raw = attacker.silent_selectors(20)
    dns.mode = "drop"
    dns.reset_queries()
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.TEMPFAIL, "dns-error", "15 more aligned signatures")
    asked = {name for name, _ in dns.query_log}
    assert len(asked) == dkimcheck.MAX_SIGNATURES_EVALUATED


def test_a_thousand_third_party_selectors_cost_no_dns_query(collector, attacker, dns) -> None:
    raw = attacker.third_party_selectors(1000)
    assert len(raw) < mime.MAX_HEADER_BLOCK_BYTES
    dns.reset_queries()
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "dkim-misaligned", "d=victim0.example")
    assert dns.queries == 0


def test_8000_junk_signatures_are_over_the_header_bound(collector, attacker, dns) -> None:
    dns.reset_queries()
    verdict = judge(collector, attacker.junk_signatures(8000))
    assert_verdict(
        verdict, Outcome.REJECTED, "malformed", "header block longer than the bound of 262144"
    )
    assert dns.queries == 0


def test_3500_junk_signatures_under_the_bound_are_five_evaluated(collector, attacker, dns) -> None:
    raw = attacker.junk_signatures(3500)
    assert len(raw) < mime.MAX_HEADER_BLOCK_BYTES
    dns.reset_queries()
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "dkim-invalid", "3495 more aligned signatures")
    assert dns.queries == 0, "the junk fails its field checks before any lookup"


def test_a_header_folded_over_400000_lines_is_over_the_header_bound(collector, attacker) -> None:
    verdict = judge(collector, attacker.folded_header(400_000))
    assert_verdict(verdict, Outcome.REJECTED, "malformed", "header block longer than the bound")


def test_a_header_folded_over_60000_lines_is_judged_in_full(collector, attacker) -> None:
    """Under the bound the genuine signature verifies: the junk S/MIME part decides."""
    raw = attacker.folded_header(60_000)
    assert len(raw) < mime.MAX_HEADER_BLOCK_BYTES
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "bad-signature")
    assert f"from={attacker.address},DKIM passed" in log_of(collector)


def test_h_naming_10000_absent_headers_is_refused_before_any_lookup(
    collector, attacker, dns
) -> None:
    dns.reset_queries()
    verdict = judge(collector, attacker.absent_h(10_000))
    assert_verdict(
        verdict, Outcome.REJECTED, "dkim-invalid", "h= names 10001 header fields, more than"
    )
    assert dns.queries == 0


def test_h_naming_64_headers_is_verified(collector, attacker) -> None:
    names = ["from", *(f"x-absent-{i}" for i in range(dkimcheck.MAX_SIGNED_HEADERS - 1))]
    raw = dkim_sign(
        hostile.smime_shell(attacker.address),
        attacker.key,
        attacker.domain,
        attacker.selector,
        include_headers=names,
    )
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "bad-signature")  # DKIM passed; CMS is junk
    assert "DKIM passed" in log_of(collector)


def test_absent_keys_are_remembered_so_a_retry_asks_dns_nothing(collector, attacker, dns) -> None:
    raw = attacker.sign(hostile.smime_shell(attacker.address), "nokey-" + secrets.token_hex(3))
    dns.reset_queries()
    first, again = judge(collector, raw), judge(collector, raw)
    for verdict in (first, again):
        assert_verdict(verdict, Outcome.REJECTED, "dkim-invalid", "no key is published")
    assert dns.queries == 1


def test_a_spent_deadline_sends_no_query(dns) -> None:
    resolver = dnskeys.KeyResolver([("127.0.0.1", dns.port)], 5.0)
    clock = [100.0]
    deadline = Deadline(100.0, lambda: clock[0])
    dns.reset_queries()
    with pytest.raises(DeadlineExceeded):
        resolver.txt("s._domainkey.example.com", deadline=deadline)
    assert dns.queries == 0


def test_one_messages_dns_budget_fits_inside_the_request(dns) -> None:
    clock = [1000.0]
    request = Deadline(1000.0 + 60, lambda: clock[0])
    budget = dkimcheck.dns_budget(request)
    assert budget.remaining() == dkimcheck.MESSAGE_DNS_BUDGET_SECONDS
    short = Deadline(1000.0 + 3, lambda: clock[0])
    assert dkimcheck.dns_budget(short).remaining() == 3
    clock[0] += 3
    assert dkimcheck.dns_budget(short).expired


# -- CMS signed attributes -------------------------------------------------------------------


def _signed_by_attacker(attacker: Attacker, root: pki.Identity, build) -> bytes:
    leaf = pki.make_leaf(root, attacker.address)
    content = pki.mime_body("hello\n")
    der = build(content, leaf)
    return attacker.sign(hostile.detached_message(content, der, attacker.address))


def test_90000_signed_attributes_are_over_the_byte_bound(collector, attacker, root) -> None:
    raw = _signed_by_attacker(
        attacker, root[0], lambda c, leaf: hostile.many_attributes(c, leaf, 90_000)
    )
    assert len(raw) < 2 * smime.MAX_SIGNATURE_BYTES
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "malformed", "exceed the bound of 16384")


def test_65_signed_attributes_are_over_the_count_bound(collector, attacker, root) -> None:
    extra = smime.MAX_SIGNED_ATTRIBUTES - 1  # with contentType and messageDigest: 65
    raw = _signed_by_attacker(
        attacker, root[0], lambda c, leaf: hostile.many_attributes(c, leaf, extra)
    )
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "malformed", "65 signed attributes exceed")


def test_64_signed_attributes_are_verified_and_stored(collector, attacker, root) -> None:
    extra = smime.MAX_SIGNED_ATTRIBUTES - 2
    raw = _signed_by_attacker(
        attacker, root[0], lambda c, leaf: hostile.many_attributes(c, leaf, extra)
    )
    assert_verdict(judge(collector, raw), Outcome.STORED, "ok")


@pytest.mark.parametrize("which", ["message-digest", "content-type"])
def test_an_attribute_with_an_empty_set_of_values_is_bad_signature(
    collector, attacker, root, which
) -> None:
    """Poison message: asn1crypto gives an empty SET, indexing it raised IndexError, which
    was internal-error and retried for ever."""
    raw = _signed_by_attacker(
        attacker, root[0], lambda c, leaf: hostile.empty_value_set(c, leaf, which)
    )
    client = create_app(collector.settings).test_client()
    assert post_batch(client, [relay_event(raw)]).status_code == 200
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "bad-signature", "one value each, not")
    assert TRACEBACK not in log_of(collector)


# -- the header block and MIME ---------------------------------------------------------------


def test_a_header_block_starting_with_whitespace_is_malformed(collector, attacker) -> None:
    """Poison message: dkimpy raised IndexError on it while ``email`` accepted it."""
    raw = attacker.leading_whitespace()
    client = create_app(collector.settings).test_client()
    assert post_batch(client, [relay_event(raw)]).status_code == 200
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "malformed", "starts with whitespace")
    assert TRACEBACK not in log_of(collector)


def test_nesting_19_deep_is_malformed(collector) -> None:
    raw = hostile.nested_message("n@nest.example", 19, 10_000)
    verdict = judge(collector, raw)
    assert_verdict(verdict, Outcome.REJECTED, "malformed", "deeper than the bound of 8")


def test_mime_parts_are_views_of_the_message_never_copies() -> None:
    """Every entity, however deep, points into the one message buffer."""
    raw = hostile.nested_message("n@nest.example", mime.MAX_DEPTH, 100_000)
    parsed = mime.parse_message(raw)
    entities = list(parsed.top.walk())
    assert len(entities) == mime.MAX_DEPTH + 1
    for entity in entities:
        assert entity.buf is parsed.raw
        assert entity.raw.obj is parsed.raw and entity.body.obj is parsed.raw
    leaf = entities[-1]
    assert bytes(leaf.body).startswith(b"x" * 998)


@pytest.mark.parametrize(
    ("timeout", "budget"), [(None, 20.0), ("25", 20.0), ("60", 55.0), ("8", 4.0), ("1", 0.5)]
)
def test_a_request_is_given_the_worker_timeout_less_a_margin(timeout, budget) -> None:
    environ = {} if timeout is None else {"GUNICORN_TIMEOUT": timeout}
    assert serving.request_budget(environ) == budget
