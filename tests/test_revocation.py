"""Revocation against real servers: CRLs over HTTP (``tests/crlserver.py``) and OCSP
(``openssl ocsp``), both on 127.0.0.1, plus the guards a fetch driven by mail must have.

Every case builds its own small PKI whose certificates name the servers' URLs, signs a message
with ``openssl cms`` and judges it through the real collector.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization

from smime_collector import guardedfetch, pathvalidation
from smime_collector.config import load_settings
from smime_collector.deadline import Deadline
from smime_collector.guardedfetch import FetchError, FetchPolicy
from smime_collector.revocation import (
    FetchCache,
    LocalCRLs,
    Revocation,
    RevocationSettings,
    Status,
)
from smime_collector.trust import load_anchors
from smime_collector.verdict import Outcome, Verdict
from tests import pki
from tests.conftest import write_ini
from tests.dnsserver import LoopbackDNS
from tests.helpers import cli_json, run_cli, visible_files
from tests.revocation_pki import (
    CRLServer,
    OCSPResponder,
    crl,
    issue,
    now,
    signed_message,
)
from tests.servers import free_port
from webapp import create_app

ALICE = "alice@revocation.example"


@pytest.fixture
def crl_server(tmp_path: Path) -> Iterator[CRLServer]:
    server = CRLServer.start(tmp_path / "crls")
    yield server
    server.stop()


@pytest.fixture
def responders() -> Iterator[list[OCSPResponder]]:
    started: list[OCSPResponder] = []
    yield started
    for responder in started:
        responder.stop()


@pytest.fixture
def judge(make_settings, tmp_path: Path) -> Callable[..., Verdict]:
    """Judge ``raw`` with ``anchor`` trusted and the given settings (fetching allowed to
    loopback unless a case says otherwise)."""

    def run(raw: bytes, anchor: pki.Identity, **overrides: str) -> Verdict:
        bundle = tmp_path / "anchor.pem"
        bundle.write_bytes(anchor.cert_pem())
        values = {
            "dkim": "off",
            "trusted_certs": str(bundle),
            "revocation": "hard",
            "revocation_fetch": "yes",
            "revocation_allow_private": "yes",
            "revocation_timeout": "2",
            **overrides,
        }
        return (
            create_app(make_settings(**values))
            .extensions["smime_collector"]
            .collector.read_smime_email(raw)
        )

    return run


def crl_pki(server: CRLServer, *, leaf_url: str | None = None) -> tuple[pki.Identity, ...]:
    """root → intermediate → Alice, each below the root with a CDP on ``server``."""
    root = issue("Revocation Root", None, ca=True)
    inter = issue("Revocation CA", root, ca=True, crl_url=server.url("root.crl"))
    alice = issue(ALICE, inter, ca=False, crl_url=leaf_url or server.url("inter.crl"))
    return root, inter, alice


def publish_good(server: CRLServer, root: pki.Identity, inter: pki.Identity) -> None:
    server.publish("root.crl", crl(root))
    server.publish("inter.crl", crl(inter))


def outcome(verdict: Verdict) -> tuple[str, str]:
    return verdict.outcome.value, verdict.reason


# -- CRLs over HTTP --------------------------------------------------------------------------


def test_good_crls_store_the_certificate(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    verdict = judge(signed_message(alice), root)
    assert outcome(verdict) == ("stored", "ok")
    assert sorted(crl_server.requests()) == ["/inter.crl", "/root.crl"]


def test_a_revoked_leaf_is_rejected(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server)
    crl_server.publish("root.crl", crl(root))
    crl_server.publish("inter.crl", crl(inter, [alice.cert]))
    verdict = judge(signed_message(alice), root, revocation="soft")
    assert outcome(verdict) == ("rejected", "revoked")
    assert ALICE in verdict.detail


def test_a_revoked_intermediate_is_rejected(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server)
    crl_server.publish("root.crl", crl(root, [inter.cert]))
    crl_server.publish("inter.crl", crl(inter))
    assert outcome(judge(signed_message(alice), root)) == ("rejected", "revoked")


def test_a_stale_crl_is_a_tempfail_in_hard_mode(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server)
    crl_server.publish("root.crl", crl(root))
    old = now() - dt.timedelta(days=10)
    crl_server.publish(
        "inter.crl", crl(inter, this_update=old, next_update=old + dt.timedelta(days=1))
    )
    verdict = judge(signed_message(alice), root)
    assert outcome(verdict) == ("tempfail", "revocation-unavailable")
    assert "nextUpdate" in verdict.detail


def test_an_oversize_crl_is_not_read(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    big = crl(inter, padding_entries=400)
    crl_server.publish("inter.crl", big)
    verdict = judge(signed_message(alice), root, revocation_max_bytes=str(len(big) - 1))
    assert outcome(verdict) == ("rejected", "revocation-unknown")
    assert "revocation-max-bytes" in verdict.detail


def test_a_redirect_is_not_followed(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server, leaf_url=None)
    alice = issue(ALICE, inter, ca=False, crl_url=crl_server.url("redirect/inter.crl"))
    publish_good(crl_server, root, inter)
    verdict = judge(signed_message(alice), root)
    assert outcome(verdict) == ("rejected", "revocation-unknown")
    assert "/inter.crl" not in crl_server.requests()  # the target was never asked for


def test_a_server_error_is_a_tempfail_in_hard_and_stored_in_soft(judge, crl_server) -> None:
    root, inter, _ = crl_pki(crl_server)
    alice = issue(ALICE, inter, ca=False, crl_url=crl_server.url("status/503"))
    publish_good(crl_server, root, inter)
    raw = signed_message(alice)
    assert outcome(judge(raw, root)) == ("tempfail", "revocation-unavailable")
    assert outcome(judge(raw, root, revocation="soft")) == ("stored", "ok")


def test_a_server_that_never_answers_is_bounded_by_the_timeout(judge, crl_server) -> None:
    root, inter, _ = crl_pki(crl_server)
    alice = issue(ALICE, inter, ca=False, crl_url=crl_server.url("hang"))
    publish_good(crl_server, root, inter)
    verdict = judge(signed_message(alice), root, revocation_timeout="1")
    assert outcome(verdict) == ("tempfail", "revocation-unavailable")
    assert "timed out" in verdict.detail


def test_no_source_at_all_is_unknown_in_hard_and_stored_in_soft(judge, crl_server) -> None:
    root = issue("Revocation Root", None, ca=True)
    inter = issue("Revocation CA", root, ca=True)
    alice = issue(ALICE, inter, ca=False)
    raw = signed_message(alice)
    assert outcome(judge(raw, root)) == ("rejected", "revocation-unknown")
    assert outcome(judge(raw, root, revocation="soft")) == ("stored", "ok")
    assert outcome(judge(raw, root, revocation="off")) == ("unchanged", "ok")


def test_soft_mode_logs_a_warning_and_counts_it(judge, crl_server, make_settings) -> None:
    from smime_collector import metrics

    root, inter, _ = crl_pki(crl_server)
    alice = issue(ALICE, inter, ca=False, crl_url=crl_server.url("status/500"))
    publish_good(crl_server, root, inter)
    before = metrics.REVOCATION_UNKNOWN._value.get()
    assert outcome(judge(signed_message(alice), root, revocation="soft")) == ("stored", "ok")
    assert metrics.REVOCATION_UNKNOWN._value.get() == before + 1
    log = make_settings().log_file.read_text()
    warned = [line for line in log.splitlines() if "| revocation status not established" in line]
    assert len(warned) == 1 and ",WARNING," in warned[0]


def test_with_fetch_off_only_the_local_crls_count(judge, crl_server, tmp_path) -> None:
    root, inter, alice = crl_pki(crl_server)
    local = tmp_path / "local-crls"
    local.mkdir()
    (local / "root.crl").write_bytes(crl(root))
    (local / "inter.crl").write_bytes(crl(inter, [alice.cert]))
    verdict = judge(signed_message(alice), root, revocation_fetch="no", revocation_crls=str(local))
    assert outcome(verdict) == ("rejected", "revoked")
    assert crl_server.requests() == []


# -- the guards ------------------------------------------------------------------------------


def test_a_cdp_naming_a_private_address_is_not_fetched(judge, crl_server) -> None:
    root, inter, alice = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    verdict = judge(signed_message(alice), root, revocation_allow_private="no")
    assert outcome(verdict) == ("rejected", "revocation-unknown")
    assert "may not be fetched" in verdict.detail
    assert crl_server.requests() == []


def test_a_cdp_whose_name_resolves_to_a_private_address_is_not_fetched(
    judge, crl_server, dns: LoopbackDNS
) -> None:
    name = "crl.revocation.example"
    dns.add_a(name, "127.0.0.1")
    root = issue("Revocation Root", None, ca=True)
    inter = issue("Revocation CA", root, ca=True, crl_url=crl_server.url("root.crl", name))
    alice = issue(ALICE, inter, ca=False, crl_url=crl_server.url("inter.crl", name))
    publish_good(crl_server, root, inter)
    raw = signed_message(alice)
    verdict = judge(raw, root, revocation_allow_private="no")
    assert outcome(verdict) == ("rejected", "revocation-unknown")
    assert "127.0.0.1 is loopback" in verdict.detail
    assert crl_server.requests() == []
    assert outcome(judge(raw, root)) == ("stored", "ok")  # allowed: fetched by name
    assert sorted(crl_server.requests()) == ["/inter.crl", "/root.crl"]
    dns.remove(name)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "224.0.0.1", "240.0.0.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "ff02::1", "::",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1"],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    policy = FetchPolicy(timeout=1, max_bytes=1000)
    with pytest.raises(FetchError) as caught:
        guardedfetch.fetch(f"http://[{address}]/x.crl" if ":" in address else
                           f"http://{address}/x.crl", policy, Deadline.never())  # fmt: skip
    assert not caught.value.transient
    assert "may not be fetched" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x.crl", "ldap://example.com/cn=x", "file:///etc/passwd"]
)
def test_only_http_and_https_are_fetched(url: str) -> None:
    with pytest.raises(FetchError, match="only http and https"):
        guardedfetch.fetch(url, FetchPolicy(timeout=1, max_bytes=1000), Deadline.never())


def test_a_spent_deadline_fetches_nothing(crl_server) -> None:
    crl_server.publish("x.crl", b"data")
    spent = Deadline.after(0)
    with pytest.raises(FetchError, match="budget"):
        guardedfetch.fetch(crl_server.url("x.crl"), FetchPolicy(1, 1000, allow_private=True), spent)
    assert crl_server.requests() == []


def test_concurrent_requests_for_one_url_fetch_it_once(crl_server) -> None:
    crl_server.publish("x.crl", b"x" * 100)
    cache = FetchCache()
    policy = FetchPolicy(timeout=5, max_bytes=1000, allow_private=True)
    url = crl_server.url("x.crl")
    gate = threading.Barrier(8)
    results: list[bytes] = []

    def worker() -> None:
        gate.wait()
        results.append(
            cache.get(
                url,
                lambda: guardedfetch.fetch(url, policy, Deadline.never()),
                lambda _: now().timestamp() + 60,
                wait=5,
            )
        )

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [b"x" * 100] * 8
    assert crl_server.requests().count("/x.crl") == 1
    cache.get(url, lambda: b"never", lambda _: None, wait=1)
    assert crl_server.requests().count("/x.crl") == 1  # kept until its nextUpdate


def test_a_crl_is_fetched_once_per_process_until_its_next_update(
    judge, crl_server, make_settings, tmp_path
) -> None:
    root, inter, alice = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    bundle = tmp_path / "anchor.pem"
    bundle.write_bytes(root.cert_pem())
    settings = make_settings(dkim="off", trusted_certs=str(bundle), revocation="hard",
                             revocation_fetch="yes", revocation_allow_private="yes")  # fmt: skip
    collector = create_app(settings).extensions["smime_collector"].collector
    raw = signed_message(alice)
    assert collector.read_smime_email(raw).outcome is Outcome.STORED
    assert collector.read_smime_email(raw).outcome is Outcome.UNCHANGED
    assert sorted(crl_server.requests()) == ["/inter.crl", "/root.crl"]


# -- OCSP ------------------------------------------------------------------------------------


def ocsp_pki(server: CRLServer, port: int) -> tuple[pki.Identity, ...]:
    """Alice's certificate has only an OCSP URL; her CA's status comes from a CRL."""
    root = issue("Revocation Root", None, ca=True)
    inter = issue("Revocation CA", root, ca=True, crl_url=server.url("root.crl"))
    alice = issue(ALICE, inter, ca=False, ocsp_url=f"http://127.0.0.1:{port}/")
    server.publish("root.crl", crl(root))
    return root, inter, alice


def test_ocsp_only_good(judge, crl_server, responders, tmp_path) -> None:
    port = free_port()
    root, inter, alice = ocsp_pki(crl_server, port)
    responders.append(OCSPResponder.start(tmp_path / "ocsp", inter, port, good=[alice.cert]))
    assert outcome(judge(signed_message(alice), root)) == ("stored", "ok")


def test_ocsp_revoked(judge, crl_server, responders, tmp_path) -> None:
    port = free_port()
    root, inter, alice = ocsp_pki(crl_server, port)
    responders.append(OCSPResponder.start(tmp_path / "ocsp", inter, port, revoked=[alice.cert]))
    verdict = judge(signed_message(alice), root, revocation="soft")
    assert outcome(verdict) == ("rejected", "revoked")


def test_a_revoked_certificate_is_named_by_its_place_in_the_path(
    judge, crl_server, responders, tmp_path
) -> None:
    """The detail (log, /ui, recheck's JSON) names the certificate that was revoked and its
    place in the path, whichever protocol found it: a leaf is never "the trust anchor", an
    intermediate never "the end-entity certificate"."""
    port = free_port()
    root = issue("Revocation Root", None, ca=True)
    crl_inter = issue("CRL CA", root, ca=True, crl_url=crl_server.url("root.crl"))
    ocsp_inter = issue("OCSP CA", root, ca=True, ocsp_url=f"http://127.0.0.1:{port}/")
    crl_leaf = issue(ALICE, crl_inter, ca=False, crl_url=crl_server.url("crl-ca.crl"))
    ocsp_port = free_port()
    ocsp_leaf = issue(
        "bob@revocation.example", crl_inter, ca=False, ocsp_url=f"http://127.0.0.1:{ocsp_port}/"
    )
    below_ocsp = issue(
        "carol@revocation.example", ocsp_inter, ca=False, crl_url=crl_server.url("ocsp-ca.crl")
    )
    crl_server.publish("ocsp-ca.crl", crl(ocsp_inter))
    responders.append(
        OCSPResponder.start(tmp_path / "root-ocsp", root, port, revoked=[ocsp_inter.cert])
    )
    responders.append(
        OCSPResponder.start(tmp_path / "ocsp", crl_inter, ocsp_port, revoked=[ocsp_leaf.cert])
    )
    cases = [
        # (signer, what the CRLs revoke, the certificate named, its place, the protocol)
        (crl_leaf, [], [crl_leaf.cert], ALICE, "end-entity certificate", "CRL"),
        (crl_leaf, [crl_inter.cert], [], "CRL CA", "intermediate CA certificate", "CRL"),
        (ocsp_leaf, [], [], "bob@revocation.example", "end-entity certificate", "OCSP"),
        (below_ocsp, [], [], "OCSP CA", "intermediate CA certificate", "OCSP"),
    ]
    misnamed = []
    for signer, root_revokes, inter_revokes, name, place, protocol in cases:
        crl_server.publish("root.crl", crl(root, root_revokes))
        crl_server.publish("crl-ca.crl", crl(crl_inter, inter_revokes))
        verdict = judge(signed_message(signer), root)
        assert outcome(verdict) == ("rejected", "revoked"), (name, verdict.detail)
        others = [w for w in ("trust anchor", "end-entity", "intermediate") if w not in place]
        if not (
            verdict.detail.startswith(f"{name}: {protocol}")
            and f"the {place} was revoked" in verdict.detail
            and not any(other in verdict.detail for other in others)
        ):
            misnamed.append(verdict.detail)
    assert misnamed == []


def test_ocsp_response_signed_by_the_wrong_key(judge, crl_server, responders, tmp_path) -> None:
    port = free_port()
    root, inter, alice = ocsp_pki(crl_server, port)
    impostor = issue("Impostor Responder", None, ca=True)
    responders.append(
        OCSPResponder.start(tmp_path / "ocsp", inter, port, good=[alice.cert], signer=impostor)
    )
    verdict = judge(signed_message(alice), root)
    assert outcome(verdict) == ("rejected", "revocation-unknown")
    assert "OCSP" in verdict.detail


def test_ocsp_responder_down_soft_stores_hard_tempfails(judge, crl_server) -> None:
    port = free_port()  # nothing listens there
    root, _, alice = ocsp_pki(crl_server, port)
    raw = signed_message(alice)
    assert outcome(judge(raw, root)) == ("tempfail", "revocation-unavailable")
    assert outcome(judge(raw, root, revocation="soft")) == ("stored", "ok")


# -- byte-exact certificates -----------------------------------------------------------------


def _with_subject_unique_id(issuer: pki.Identity, template: pki.Identity) -> bytes:
    """``template``'s certificate re-issued with a subjectUniqueID whose asn1crypto
    re-encoding differs from its DER (the unused-bit count of the BIT STRING is normalised)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    der = template.cert.public_bytes(serialization.Encoding.DER)
    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    fields = [tbs[name].dump() for name in ("version", "serial_number", "signature", "issuer",
                                            "validity", "subject", "subject_public_key_info")]  # fmt: skip
    body = b"".join(fields) + b"\x82\x02\x05\x20" + tbs["extensions"].dump()
    tbs_der = b"\x30" + _length(len(body)) + body
    signature = issuer.key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA256())
    algorithm = asn1_x509.Certificate.load(der)["signature_algorithm"].dump()
    bits = b"\x03" + _length(len(signature) + 1) + b"\x00" + signature
    content = tbs_der + algorithm + bits
    return b"\x30" + _length(len(content)) + content


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def test_a_certificate_is_stored_as_the_bytes_that_arrived(judge, tmp_path) -> None:
    from cryptography import x509

    root = issue("Exact Root", None, ca=True)
    template = issue(ALICE, root, ca=False)
    exact = _with_subject_unique_id(root, template)
    assert asn1_x509.Certificate.load(exact).dump(force=True) != exact  # re-encoding differs
    alice = pki.Identity(cert=x509.load_der_x509_certificate(exact), key=template.key)
    verdict = judge(signed_message(alice), root, revocation="off")
    assert outcome(verdict) == ("stored", "ok")
    kind, _, stored = asn1_pem.unarmor(Path(verdict.location).read_bytes())
    assert kind == "CERTIFICATE"
    assert stored == exact


# -- a stored certificate found revoked later ------------------------------------------------


def _ini(tmp_path: Path, anchor: pki.Identity, **values: str) -> Path:
    bundle = tmp_path / "anchor.pem"
    bundle.write_bytes(anchor.cert_pem())
    return write_ini(
        tmp_path / "recheck.ini",
        {
            "user-certs-dir": str(tmp_path / "certs"),
            "log-file": str(tmp_path / "recheck.log"),
            "trusted-certs": str(bundle),
            "dkim": "off",
            "revocation": "hard",
            "revocation-fetch": "yes",
            "revocation-allow-private": "yes",
            "revocation-timeout": "2",
            "lookup-token": "look",
            **values,
        },
    )


def test_recheck_moves_a_revoked_certificate_aside(crl_server, tmp_path) -> None:
    root, inter, alice = crl_pki(crl_server)
    bob = issue("bob@revocation.example", inter, ca=False, crl_url=crl_server.url("inter.crl"))
    publish_good(crl_server, root, inter)
    ini = _ini(tmp_path, root)
    messages = tmp_path / "in"
    messages.mkdir()
    (messages / "alice.eml").write_bytes(signed_message(alice))
    (messages / "bob.eml").write_bytes(signed_message(bob))
    code, lines = cli_json("--config", ini, messages)
    assert code == 0 and {line["outcome"] for line in lines} == {"stored"}

    code, states = cli_json("--config", ini, "--recheck")
    assert code == 0
    assert {(s["email"], s["state"]) for s in states} == {
        (ALICE, "valid"),
        ("bob@revocation.example", "valid"),
    }

    crl_server.publish("inter.crl", crl(inter, [alice.cert]))
    code, states = cli_json("--config", ini, "--recheck")
    assert code == 1
    assert {(s["email"], s["state"]) for s in states} == {
        (ALICE, "revoked"),
        ("bob@revocation.example", "valid"),
    }
    folder = tmp_path / "certs"
    assert visible_files(folder) == ["bob@revocation.example.crt"]
    sha = alice.cert.fingerprint(hashes.SHA256()).hex()
    marker = json.loads((folder / ".history" / f"{ALICE}.{sha}.revoked").read_text())
    assert marker["state"] == "revoked" and marker["found"] and "revoked" in marker["detail"]
    assert (folder / ".history" / f"{ALICE}.{sha}.crt").exists()

    app = create_app(load_settings(ini))
    client = app.test_client()
    auth = {"Authorization": "Bearer look"}
    listed = client.get("/certs", headers=auth).get_json()
    assert [e["email"] for e in listed["certificates"]] == ["bob@revocation.example"]
    assert client.get(f"/certs/{ALICE}", headers=auth).status_code == 404
    # The revoked certificate is not stored again, even where its status cannot be fetched.
    verdict = app.extensions["smime_collector"].collector.read_smime_email(signed_message(alice))
    assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "revoked")


def test_recheck_never_removes_on_a_transient_failure(crl_server, tmp_path) -> None:
    root, inter, alice = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    ini = _ini(tmp_path, root)
    (tmp_path / "alice.eml").write_bytes(signed_message(alice))
    assert cli_json("--config", ini, tmp_path / "alice.eml")[0] == 0
    crl_server.stop()  # the CRL server is down
    proc = run_cli("--config", ini, "--recheck")
    assert proc.returncode == 75
    assert proc.stdout.startswith(f"{ALICE}: unknown (")
    assert visible_files(tmp_path / "certs") == [f"{ALICE}.crt"]


def test_a_revoked_stored_certificate_never_blocks_its_owners_new_one(
    crl_server, make_settings, tmp_path
) -> None:
    root, inter, _ = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    url = crl_server.url("inter.crl")
    newer = issue(ALICE, inter, ca=False, crl_url=url, not_before=now() - dt.timedelta(days=10))
    older = issue(ALICE, inter, ca=False, crl_url=url, not_before=now() - dt.timedelta(days=20))
    bundle = tmp_path / "anchor.pem"
    bundle.write_bytes(root.cert_pem())
    settings = make_settings(dkim="off", trusted_certs=str(bundle), revocation="hard",
                             revocation_fetch="yes", revocation_allow_private="yes")  # fmt: skip

    def collector():  # a fresh process's collector: an empty CRL cache
        return create_app(settings).extensions["smime_collector"].collector

    assert collector().read_smime_email(signed_message(newer)).outcome is Outcome.STORED
    assert collector().read_smime_email(signed_message(older)).reason == "older-than-stored"
    crl_server.publish("inter.crl", crl(inter, [newer.cert]))
    verdict = collector().read_smime_email(signed_message(older))
    assert (verdict.outcome, verdict.reason) == (Outcome.STORED, "ok")
    stored = asn1_pem.unarmor(Path(verdict.location).read_bytes())[2]
    assert stored == older.cert.public_bytes(serialization.Encoding.DER)
    sha = newer.cert.fingerprint(hashes.SHA256()).hex()
    assert (tmp_path / "certs" / ".history" / f"{ALICE}.{sha}.revoked").exists()


def test_local_crls_are_read_again_when_they_change(tmp_path) -> None:
    root = issue("Local Root", None, ca=True)
    folder = tmp_path / "crls"
    folder.mkdir()
    first = crl(root)
    (folder / "root.crl").write_bytes(first)
    local = LocalCRLs([folder], check_interval=0)
    assert local.crls() == [first]
    newer = crl(root, [issue("x@example.org", root, ca=False).cert])
    (folder / "root.crl").write_bytes(newer)
    os.utime(folder / "root.crl", (1, 2))  # a different mtime even within one clock tick
    assert local.crls() == [newer]
    (folder / "root.crl").write_bytes(b"half-written")
    os.utime(folder / "root.crl", (3, 4))
    assert local.crls() == [newer]  # a broken file keeps the last good CRLs


def test_a_verified_answer_is_reused_only_for_the_same_crls(tmp_path) -> None:
    root = issue("Reuse Root", None, ca=True)
    inter = issue("Reuse CA", root, ca=True)
    alice = issue(ALICE, inter, ca=False)
    bundle = tmp_path / "anchor.pem"
    bundle.write_bytes(root.cert_pem())
    anchors = load_anchors([bundle])
    bag = [alice.cert, inter.cert]
    ders = [c.public_bytes(serialization.Encoding.DER) for c in bag]
    at = now()
    path = pathvalidation.validate(alice.cert, bag, anchors, at, False)
    checker = Revocation(RevocationSettings(mode="hard", fetch=False))
    good = [crl(root), crl(inter)]
    first = checker.status(path, ders, good, anchors, at, False, Deadline.never())
    again = checker.status(path, ders, good, anchors, at, False, Deadline.never())
    assert first.status is again.status is Status.GOOD
    revoking = [crl(root), crl(inter, [alice.cert])]
    later = checker.status(path, ders, revoking, anchors, at, False, Deadline.never())
    assert later.status is Status.REVOKED
    stale = checker.status(path, ders, good, anchors, at + dt.timedelta(days=30), False,
                           Deadline.never())  # fmt: skip
    assert stale.status is Status.UNAVAILABLE  # past the CRLs' nextUpdate: not reused


def test_recheck_with_the_database_store(crl_server, tmp_path, database) -> None:
    """--recheck through the CertStore interface: the same with store = postgresql."""
    root, inter, alice = crl_pki(crl_server)
    publish_good(crl_server, root, inter)
    ini = _ini(tmp_path, root, **database)
    (tmp_path / "alice.eml").write_bytes(signed_message(alice))
    code, lines = cli_json("--config", ini, tmp_path / "alice.eml")
    assert code == 0 and lines[0]["location"] == f"postgresql:{ALICE}"
    code, states = cli_json("--config", ini, "--recheck")
    assert (code, [(s["email"], s["state"]) for s in states]) == (0, [(ALICE, "valid")])

    crl_server.publish("inter.crl", crl(inter, [alice.cert]))
    code, states = cli_json("--config", ini, "--recheck")
    assert (code, [(s["email"], s["state"]) for s in states]) == (1, [(ALICE, "revoked")])
    app = create_app(load_settings(ini))
    collector = app.extensions["smime_collector"].collector
    try:
        store = collector.store
        assert store.get(ALICE) is None and store.is_revoked(ALICE, alice.cert)
        assert [e.event for e in store.history(ALICE)] == ["revoked"]
        auth = {"Authorization": "Bearer look"}
        assert app.test_client().get("/certs", headers=auth).get_json()["count"] == 0
        verdict = collector.read_smime_email(signed_message(alice))
        assert (verdict.outcome, verdict.reason) == (Outcome.REJECTED, "revoked")
    finally:
        collector.store.close()
