"""DKIM through the whole pipeline: every signature, From: coverage, l=, alignment, DNS, keys.

Messages are real: S/MIME signed by ``openssl cms``, DKIM signed by dkimpy (or by dkimpy's own
``gen_header`` where ``dkim.sign`` refuses), keys served by the loopback DNS server. Where a
case is rejected for a policy reason, the test first shows that dkimpy itself accepts the
signature, so the rejection is the collector's decision and not a broken fixture.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dkim
import pytest

from smime_collector import dkimcheck, dnskeys
from smime_collector.dkimcheck import aligned
from smime_collector.dnskeys import KeyResolver
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict
from tests.helpers import post_batch, relay_event
from tests.mailfactory import (
    MailFactory,
    SigningKey,
    dkim_sign,
    dkim_sign_without_from,
    rsa_key,
    weak_rsa_key,
)
from webapp import create_app

ALICE = "alice@example.com"
SUB = "user@mail.example.com"


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory: pytest.TempPathFactory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("dkim-pki"))


@pytest.fixture
def make_app(make_settings, mail: MailFactory) -> Callable[..., object]:
    def build(**overrides: str):
        return create_app(make_settings(trusted_certs=str(mail.ca_file), **overrides))

    return build


@pytest.fixture
def collector(make_app) -> Collector:
    return make_app().extensions["smime_collector"].collector


def judge(collector: Collector, raw: bytes) -> Verdict:
    return collector.read_smime_email(raw)


def stored_files(collector: Collector) -> list[str]:
    return sorted(p.name for p in collector.store.folder.glob("*.crt"))


def assert_rejected(collector: Collector, raw: bytes, reason: str) -> Verdict:
    verdict = judge(collector, raw)
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, reason), verdict
    assert stored_files(collector) == []
    return verdict


def assert_stored(collector: Collector, raw: bytes, address: str) -> Verdict:
    verdict = judge(collector, raw)
    assert (verdict.outcome, verdict.reason, verdict.email) == (Outcome.STORED, "ok", address)
    assert stored_files(collector) == [f"{address}.crt"]
    return verdict


def dkimpy_accepts(raw: bytes, mail: MailFactory, **options: int) -> bool:
    """dkimpy's own verdict on the first signature, keys from the loopback DNS server."""
    return bool(dkim.verify(raw, dnsfunc=mail.dns.dkim_dnsfunc(), **options))


def signature_tags(raw: bytes) -> dict[bytes, bytes]:
    """The tags of the first (topmost) DKIM-Signature, as dkimpy parses them."""
    headers, _ = dkim.rfc822_parse(raw)
    value = next(v for k, v in headers if k.lower() == b"dkim-signature")
    return dkim.util.parse_tag_value(value)


def insert_header(raw: bytes, line: bytes, where: str) -> bytes:
    """Add a header line at the "top", right "after-from", or at the "bottom" of the header."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if where == "top":
        lines.insert(0, line)
    elif where == "after-from":
        lines.insert(next(i for i, x in enumerate(lines) if x.startswith(b"From:")) + 1, line)
    else:
        lines.append(line)
    return b"\r\n".join(lines) + sep + body


# -- every signature is checked --------------------------------------------------------------


def test_a_valid_aligned_signature_is_stored(collector, mail) -> None:
    raw = mail.signed(ALICE)
    assert dkimpy_accepts(raw, mail)
    verdict = assert_stored(collector, raw, ALICE)
    assert "DKIM passed" in collector.settings.log_file.read_text()
    assert verdict.location == str(collector.store.folder / f"{ALICE}.crt")


@pytest.mark.parametrize("broken", ["unknown-selector", "wrong-key"])
def test_a_broken_first_signature_does_not_hide_a_good_second(collector, mail, broken) -> None:
    good = mail.signed(ALICE)
    selector = f"{mail.selector}-{broken}"
    if broken == "wrong-key":  # signed with one key while the selector publishes another
        mail.publish("example.com", rsa_key(1024), selector=selector)
    raw = dkim_sign(good, rsa_key(1024), "example.com", selector)
    assert raw.index(f"s={selector};".encode()) < raw.index(f"s={mail.selector};".encode()), (
        "the broken signature must come first"
    )
    assert not dkimpy_accepts(raw, mail), "dkimpy alone looks only at the first signature"
    assert_stored(collector, raw, ALICE)


def test_the_broken_signature_alone_is_dkim_invalid(collector, mail) -> None:
    plain = mail.smime(ALICE, mail.identity(ALICE))
    raw = dkim_sign(plain, rsa_key(1024), "example.com", f"{mail.selector}-missing")
    verdict = assert_rejected(collector, raw, "dkim-invalid")
    assert (
        f"no key is published at {mail.selector}-missing._domainkey.example.com" in verdict.detail
    )


@pytest.mark.parametrize("misaligned_first", [True, False], ids=["other-first", "other-second"])
def test_a_valid_signature_of_another_domain_does_not_block_the_aligned_one(
    collector, mail, misaligned_first
) -> None:
    plain = mail.smime(ALICE, mail.identity(ALICE))
    other, own = mail.dkim_key("other.example"), mail.dkim_key("example.com")
    if misaligned_first:
        raw = dkim_sign(
            dkim_sign(plain, own, "example.com", mail.selector),
            other,
            "other.example",
            mail.selector,
        )
    else:
        raw = dkim_sign(
            dkim_sign(plain, other, "other.example", mail.selector),
            own,
            "example.com",
            mail.selector,
        )
    assert dkimpy_accepts(raw, mail)
    assert_stored(collector, raw, ALICE)


# -- From: must be covered ------------------------------------------------------------------


def test_dkim_sign_refuses_to_leave_from_out(mail) -> None:
    """Why the next test builds its signature through gen_header instead of dkim.sign."""
    raw = mail.smime(ALICE, mail.identity(ALICE))
    with pytest.raises(dkim.ParameterError, match="From"):
        dkim_sign(
            raw,
            mail.dkim_key("example.com"),
            "example.com",
            mail.selector,
            include_headers=["to", "subject"],
        )


def test_a_signature_whose_h_lacks_from_is_dkim_invalid(collector, mail) -> None:
    plain = mail.smime(ALICE, mail.identity(ALICE))
    raw = dkim_sign_without_from(plain, mail.dkim_key("example.com"), "example.com", mail.selector)
    assert b"from" not in signature_tags(raw)[b"h"].lower()
    assert dkimpy_accepts(raw, mail), "the signature itself is genuine"
    verdict = assert_rejected(collector, raw, "dkim-invalid")
    assert "does not cover the From: header" in verdict.detail


# -- exactly one From: ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "after-from", "bottom"])
def test_a_second_from_added_after_signing_is_malformed(collector, mail, where) -> None:
    raw = insert_header(mail.signed(ALICE), b"From: mallory@example.com", where)
    verdict = assert_rejected(collector, raw, "malformed")
    assert "2 From: headers" in verdict.detail


def test_a_second_from_is_malformed_even_when_both_are_signed(collector, mail) -> None:
    plain = insert_header(
        mail.smime(ALICE, mail.identity(ALICE)), b"From: alice@example.com", "top"
    )
    raw = dkim_sign(plain, mail.dkim_key("example.com"), "example.com", mail.selector)
    assert dkimpy_accepts(raw, mail), "the signature covers both From: headers"
    assert_rejected(collector, raw, "malformed")


def test_a_from_with_two_addresses_is_malformed(collector, mail) -> None:
    two = f"{ALICE}, bob@example.com"
    raw = dkim_sign(
        mail.smime(two, mail.identity(ALICE)),
        mail.dkim_key("example.com"),
        "example.com",
        mail.selector,
    )
    assert dkimpy_accepts(raw, mail)
    verdict = assert_rejected(collector, raw, "malformed")
    assert "2 addresses" in verdict.detail


def test_a_from_only_dkimpy_sees_is_malformed(collector, mail) -> None:
    """A bare CR before CRLF is a blank line to ``email`` (end of header) but not to dkimpy."""
    raw = mail.signed(ALICE)
    head, _, body = raw.partition(b"\r\n\r\n")
    raw = head + b"\r\nX-Pad: b\r\r\nFrom: mallory@example.com\r\n\r\n" + body
    verdict = assert_rejected(collector, raw, "malformed")
    assert "bare CR" in verdict.detail  # refused by the parser, before DKIM reads anything


def test_a_utf8_display_name_is_read_alike_by_both_parsers(collector, mail) -> None:
    plain = mail.smime("Jürgen Ünal <juergen@example.com>", mail.identity("juergen@example.com"))
    raw = dkim_sign(plain, mail.dkim_key("example.com"), "example.com", mail.selector)
    assert b"From: J\xc3\xbcrgen" in raw
    assert_stored(collector, raw, "juergen@example.com")


# -- l= ---------------------------------------------------------------------------------------

FORGED_PART = (
    b"\r\n--forged\r\nContent-Type: text/plain\r\n\r\n"
    b"Added after signing: nothing authenticates this.\r\n--forged--\r\n"
)


def test_l_shorter_than_the_body_is_dkim_invalid_and_logged(collector, mail) -> None:
    raw = mail.signed(ALICE, length=True) + FORGED_PART
    assert int(signature_tags(raw)[b"l"]) < len(raw.split(b"\r\n\r\n", 1)[1])
    assert dkimpy_accepts(raw, mail), "dkimpy verifies the signed prefix only"
    verdict = assert_rejected(collector, raw, "dkim-invalid")
    assert "l= tag" in verdict.detail
    log = collector.settings.log_file.read_text()
    assert "(l= tag)" in log and "dkim-invalid" in log


def test_l_equal_to_the_body_length_is_accepted(collector, mail) -> None:
    raw = mail.signed(ALICE, length=True)
    assert dkimpy_accepts(raw, mail)
    assert_stored(collector, raw, ALICE)


# -- alignment ------------------------------------------------------------------------------


def test_relaxed_alignment_accepts_a_parent_domain(collector, mail) -> None:
    assert_stored(collector, mail.signed(SUB, dkim_domain="example.com"), SUB)


def test_strict_alignment_rejects_a_parent_domain(make_app, mail) -> None:
    collector = make_app(dkim_alignment="strict").extensions["smime_collector"].collector
    raw = mail.signed(SUB, dkim_domain="example.com")
    verdict = assert_rejected(collector, raw, "dkim-misaligned")
    assert "d=example.com" in verdict.detail


def test_strict_alignment_accepts_the_exact_domain(make_app, mail) -> None:
    collector = make_app(dkim_alignment="strict").extensions["smime_collector"].collector
    assert_stored(collector, mail.signed(SUB), SUB)


@pytest.mark.parametrize("mode", ["relaxed", "strict"])
@pytest.mark.parametrize("domain", ["other.example", "com", "notexample.com", "example.co.uk"])
def test_other_domains_never_align(make_app, mail, mode, domain, dns) -> None:
    collector = make_app(dkim_alignment=mode).extensions["smime_collector"].collector
    raw = mail.signed(ALICE, dkim_domain=domain)
    assert dkimpy_accepts(raw, mail)
    dns.reset_queries()
    verdict = assert_rejected(collector, raw, "dkim-misaligned")
    assert f"d={domain}" in verdict.detail
    assert dns.queries == 0, "a signature that cannot align costs no DNS query"


# DMARC (RFC 7489 section 3.1.1): relaxed means the same organisational domain, found with the
# Public Suffix List; a public suffix (co.uk, github.io) is nobody's organisational domain.
DMARC_CASES = [
    # (From: address, d=, aligned when relaxed)
    ("user@mail.example.com", "example.com", True),
    ("alice@example.com", "mail.example.com", True),  # DMARC's ordinary case, once refused
    ("user@a.mail.example.com", "b.example.com", True),
    ("x@bank.co.uk", "co.uk", False),
    ("x@mail.bank.co.uk", "bank.co.uk", True),
    ("x@bank.co.uk", "other.co.uk", False),
    ("x@alice.github.io", "github.io", False),
    ("x@alice.github.io", "bob.github.io", False),
    ("x@mail.alice.github.io", "alice.github.io", True),
]


@pytest.mark.parametrize(("address", "domain", "relaxed"), DMARC_CASES)
@pytest.mark.parametrize("mode", ["relaxed", "strict"])
def test_alignment_follows_dmarc_and_the_public_suffix_list(
    make_app, mail, address, domain, relaxed, mode
) -> None:
    collector = make_app(dkim_alignment=mode).extensions["smime_collector"].collector
    raw = mail.signed(address, dkim_domain=domain)
    assert dkimpy_accepts(raw, mail), "the signature itself is genuine"
    if relaxed and mode == "relaxed":
        assert_stored(collector, raw, address)
    else:
        assert_rejected(collector, raw, "dkim-misaligned")


@pytest.mark.parametrize(
    ("d", "from_domain", "mode", "expected"),
    [
        ("example.com", "example.com", "strict", True),
        ("EXAMPLE.com.", "example.COM", "strict", True),
        ("example.com", "mail.example.com", "relaxed", True),
        ("example.com", "a.b.example.com", "relaxed", True),
        ("example.com", "mail.example.com", "strict", False),
        ("com", "example.com", "relaxed", False),
        ("com.", "example.com", "relaxed", False),
        ("ample.com", "example.com", "relaxed", False),
        ("mail.example.com", "example.com", "relaxed", True),
        ("mail.example.com", "example.com", "strict", False),
        ("co.uk", "bank.co.uk", "relaxed", False),
        ("bank.co.uk", "BANK.co.uk", "strict", True),
        ("github.io", "alice.github.io", "relaxed", False),
        ("alice.github.io", "bob.github.io", "relaxed", False),
        ("", "example.com", "relaxed", False),
    ],
)
def test_aligned(d, from_domain, mode, expected) -> None:
    assert aligned(d, from_domain, mode) is expected


# -- DNS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["drop", "servfail"])
def test_dns_timeout_or_servfail_is_tempfail(make_app, mail, dns, mode) -> None:
    app = make_app()
    raw = mail.signed(ALICE)
    dns.mode = mode
    verdict = app.extensions["smime_collector"].collector.read_smime_email(raw)
    assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, "dns-error")
    assert post_batch(app.test_client(), [relay_event(raw)]).status_code == 503
    assert stored_files(app.extensions["smime_collector"].collector) == []
    dns.mode = "normal"
    assert post_batch(app.test_client(), [relay_event(raw)]).status_code == 200
    assert stored_files(app.extensions["smime_collector"].collector) == [f"{ALICE}.crt"]


def test_a_key_that_is_not_published_is_dkim_invalid(collector, mail, dns) -> None:
    raw = mail.signed("carol@unpublished.example")
    dns.remove(mail.record_name("unpublished.example"))
    assert_rejected(collector, raw, "dkim-invalid")


@pytest.mark.parametrize(
    "record",
    ["v=DKIM1; k=rsa; p=!!!", "v=DKIM1; k=rsa; p=", "v=DKIM1; k=rsa; p=AAAA", "garbage"],
    ids=["not-base64", "revoked", "not-a-key", "no-tags"],
)
def test_a_key_record_that_does_not_parse_is_dkim_invalid(collector, mail, record) -> None:
    raw = mail.signed("dave@badkey.example")
    mail.dns.add_txt(mail.record_name("badkey.example"), record)
    assert_rejected(collector, raw, "dkim-invalid")


def test_keys_are_cached_per_process_for_their_ttl(make_app, mail, dns) -> None:
    collector = make_app().extensions["smime_collector"].collector
    first, second = mail.signed("e@cached.example"), mail.signed("f@cached.example")
    dns.reset_queries()
    assert_stored(collector, first, "e@cached.example")
    assert dns.queries == 1
    assert judge(collector, second).outcome is Outcome.STORED
    assert dns.queries == 1, "the second message must use the cached key"
    assert collector.resolver.stats.lookups == 1
    assert collector.resolver.stats.cache_hits == 1


def test_a_cached_key_expires_with_its_ttl(make_app, mail, dns) -> None:
    collector = make_app().extensions["smime_collector"].collector
    first, second = mail.signed("g@short.example"), mail.signed("h@short.example")
    mail.publish("short.example", mail.dkim_key("short.example"), ttl=1)
    dns.reset_queries()
    assert judge(collector, first).outcome is Outcome.STORED
    assert dns.queries == 1
    time.sleep(1.2)
    assert judge(collector, second).outcome is Outcome.STORED
    assert dns.queries == 2
    assert collector.resolver.stats.lookups == 2


class _CountingResolver(KeyResolver):
    """The real cache code; only the network lookup is replaced by a synthetic answer."""

    def __init__(self, ttl: int = 300) -> None:
        super().__init__([("127.0.0.1", 9)], 1.0)
        self.ttl = ttl
        self.asked: list[str] = []

    def _query(self, key: str, wait: float) -> tuple[bytes | None, int]:
        self.asked.append(key)
        return f"v=DKIM1; p={key}".encode(), self.ttl


def test_the_key_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    resolver = _CountingResolver()
    bound = dnskeys.MAX_CACHE_ENTRIES
    names = [f"s._domainkey.d{i}.example" for i in range(bound + 50)]
    resolver.txt(names[0])
    for name in names[1:]:
        resolver.txt(name)
        resolver.txt(names[0])  # keep the first one recently used
        assert len(resolver._cache) <= bound
    assert len(resolver._cache) == bound
    assert len(resolver.asked) == len(names)
    resolver.txt(names[0])
    resolver.txt(names[-1])
    assert len(resolver.asked) == len(names), "recent entries are still cached"
    resolver.txt(names[1])
    assert resolver.asked[-1] == names[1], "the oldest entries were evicted"


def test_the_cache_honours_the_ttl_but_never_beyond_max_ttl(monkeypatch) -> None:
    resolver = _CountingResolver(ttl=10**9)  # a record claiming a TTL of 31 years
    clock = [1000.0]
    monkeypatch.setattr(dnskeys.time, "monotonic", lambda: clock[0])
    resolver.txt("a._domainkey.example")
    clock[0] += dnskeys.MAX_TTL - 1
    resolver.txt("a._domainkey.example")
    assert len(resolver.asked) == 1
    clock[0] += 2
    resolver.txt("a._domainkey.example")
    assert len(resolver.asked) == 2


# -- weak keys and algorithms ---------------------------------------------------------------


@pytest.fixture(scope="module")
def weak_keys() -> dict[int, SigningKey]:
    return {bits: weak_rsa_key(bits) for bits in (512, 768)}


@pytest.mark.parametrize("bits", [512, 768])
def test_a_weak_rsa_key_is_dkim_invalid(collector, mail, weak_keys, bits) -> None:
    domain = f"weak{bits}.example"
    key = weak_keys[bits]
    mail.publish(domain, key)
    raw = dkim_sign(
        mail.smime(f"w@{domain}", mail.identity(f"w@{domain}")), key, domain, mail.selector
    )
    assert dkimpy_accepts(raw, mail, minkey=256), "the signature itself is genuine"
    verdict = assert_rejected(collector, raw, "dkim-invalid")
    assert f"too small: {bits}" in verdict.detail


def test_a_1024_bit_key_is_the_minimum_accepted(collector, mail) -> None:
    key = rsa_key(1024)
    mail.publish("k1024.example", key)
    raw = dkim_sign(
        mail.smime("k@k1024.example", mail.identity("k@k1024.example")),
        key,
        "k1024.example",
        mail.selector,
    )
    assert dkimcheck.MIN_KEY_BITS == 1024
    assert_stored(collector, raw, "k@k1024.example")


def test_rsa_sha1_is_dkim_invalid(collector, mail) -> None:
    plain = mail.smime(ALICE, mail.identity(ALICE))
    raw = dkim_sign(
        plain, mail.dkim_key("example.com"), "example.com", mail.selector, algorithm=b"rsa-sha1"
    )
    assert b"a=rsa-sha1" in raw
    assert dkimpy_accepts(raw, mail)
    verdict = assert_rejected(collector, raw, "dkim-invalid")
    assert "rsa-sha1" in verdict.detail


def test_no_signature_at_all_is_dkim_missing(collector, mail) -> None:
    assert_rejected(collector, mail.smime(ALICE, mail.identity(ALICE)), "dkim-missing")
