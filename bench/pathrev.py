"""Path validation and revocation, cold and warm, and the seed's real Gmail message.

- The seed's Gmail message (``../shared/corpus/sparkysecure/signed-from-bob.eml``): the whole
  pipeline in-process, DKIM against the loopback DNS server serving Gmail's 2016 key, judged at
  its receipt time; certificate already stored, so every pass is ``unchanged``. The seed spent
  ~20 ms per message (48 messages/s); the target is 20 times that.
- Path validation of that message's chain (pyhanko-certvalidator against the 109 shipped
  roots): cold (empty path cache) and warm (a validated path for the same certificates, trust
  snapshot and time window).
- Revocation of a generated chain (root, intermediate, leaf), both CRLs served over HTTP by
  ``tests/crlserver.py`` on 127.0.0.1: cold (empty fetch cache: two fetches and two CRL
  verifications) and warm (CRLs cached until their nextUpdate: verification only).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.serialization import Encoding

from bench import REPO
from bench.workspace import Workspace
from smime_collector import pathvalidation
from smime_collector.config import load_settings
from smime_collector.deadline import Deadline
from smime_collector.message import parse_message
from smime_collector.revocation import FetchCache, Revocation, RevocationSettings, Status
from smime_collector.smime import find_signature, verify_signed_data
from smime_collector.trust import load_anchors
from tests.dnsserver import load_zone_file

SPARKY = REPO.parent / "shared" / "corpus" / "sparkysecure"
GMAIL_MESSAGE = SPARKY / "signed-from-bob.eml"
GMAIL_RECEIVED = "2018-11-30T18:57:08Z"
SEED_RATE = 48.0  # the seed's messages/s in-process (~20 ms each)


@dataclass
class PathRevResult:
    gmail_per_message: float
    gmail_verdict: str
    path_cold: float
    path_warm: float
    revocation_cold: float
    revocation_warm: float


def _timed(step, repeats: int) -> float:
    """Best per-call time of ``repeats`` calls (the least disturbed by neighbours)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def gmail_collector(ws: Workspace):
    """A collector for Bob's message: shipped trust bundle, Gmail's key on the loopback DNS."""
    for name, value in load_zone_file(SPARKY / "dns-zone.txt").items():
        ws.dns.add_txt(name, value)
    folder = ws.path("gmail", "webapp.ini").parent
    shutil.copyfile(REPO / "smime-ca-bundle.pem", folder / "bundle.pem")
    ini = folder / "webapp.ini"
    ini.write_text(
        "[webapp]\n"
        "user-certs-dir = certs\n"
        "trusted-certs = bundle.pem\n"
        "log-file = webapp.log\n"
        "dkim = require\n"
        f"dns-nameservers = {ws.dns.nameserver}\n"
        f"verify-time = {GMAIL_RECEIVED}\n"
        "revocation = soft\n"
        "revocation-fetch = no\n"
    )
    return ws.collector(load_settings(ini))


def measure(ws: Workspace, messages: int, repeats: int) -> PathRevResult:
    raw = GMAIL_MESSAGE.read_bytes()
    collector = gmail_collector(ws)
    first = collector.read_smime_email(raw)
    collector.read_smime_email(raw)  # warm: DKIM key cached, certificate stored, path cached

    def pass_() -> None:
        for _ in range(messages):
            collector.read_smime_email(raw)

    gmail = _timed(pass_, repeats) / messages

    part = find_signature(parse_message(raw).top)
    signed = verify_signed_data(part)
    leaf = signed.signers[0].cert
    anchors = load_anchors([REPO / "smime-ca-bundle.pem"])
    at = collector.settings.verify_time

    def validate() -> None:
        found = pathvalidation.validate(leaf, signed.certificates, anchors, at, False)
        assert isinstance(found, pathvalidation.ValidPath), found

    def cold_path() -> None:
        pathvalidation.CACHE.clear()
        validate()

    path_cold = _timed(cold_path, repeats * 5)
    validate()
    path_warm = _timed(validate, repeats * 50)
    rev_cold, rev_warm = _revocation(ws, repeats)
    return PathRevResult(gmail, first.outcome.value, path_cold, path_warm, rev_cold, rev_warm)


def _revocation(ws: Workspace, repeats: int) -> tuple[float, float]:
    from tests.revocation_pki import CRLServer, crl, issue

    server = CRLServer.start(ws.path("crlserver", "x").parent)
    try:
        root = issue("Bench Revocation Root", None, ca=True)
        inter = issue("Bench Revocation CA", root, ca=True, crl_url=server.url("root.crl"))
        leaf = issue("bench@example.org", inter, ca=False, crl_url=server.url("inter.crl"))
        server.publish("root.crl", crl(root))
        server.publish("inter.crl", crl(inter))
        bundle = ws.path("crlserver", "anchor.pem")
        bundle.write_bytes(root.cert_pem())
        anchors = load_anchors([bundle])
        bag = [leaf.cert, inter.cert]
        ders = [c.public_bytes(Encoding.DER) for c in bag]
        at = datetime.now(UTC)
        found = pathvalidation.validate(leaf.cert, bag, anchors, at, False)
        assert isinstance(found, pathvalidation.ValidPath), found
        settings = RevocationSettings(mode="hard", fetch=True, allow_private=True, timeout=5)
        checker = Revocation(settings)

        def check() -> None:
            finding = checker.status(found, ders, [], anchors, at, False, Deadline.never())
            assert finding.status is Status.GOOD, finding

        def cold() -> None:
            checker.cache = FetchCache()
            check()

        rev_cold = _timed(cold, repeats * 5)
        check()
        rev_warm = _timed(check, repeats * 20)
        return rev_cold, rev_warm
    finally:
        server.stop()
