"""Trust anchors: several bundles, distrust-after dates, reload on change, the shipped default."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import smime_collector
from smime_collector.config import DEFAULTS, Settings
from smime_collector.resources import SHIPPED_BUNDLE
from smime_collector.trust import TrustAnchors, fingerprint, load_anchors, sidecar_path
from tests import pki
from tests.paths import REPO
from webapp import create_app

NOW = datetime.now(UTC)
CUTOFF = (NOW - timedelta(days=30)).replace(microsecond=0)


@pytest.fixture(scope="module")
def roots() -> tuple[pki.Identity, pki.Identity]:
    return pki.make_root("Public Email Root"), pki.make_root("Private Company CA")


def _judge(settings: Settings, raw: bytes):
    return create_app(settings).extensions["smime_collector"].collector.read_smime_email(raw)


def _signed(issuer: pki.Identity, email: str, not_before: datetime | None = None) -> bytes:
    leaf = pki.make_leaf(issuer, email, not_before=not_before)
    entity = pki.sign_detached(pki.mime_body("hello"), leaf)
    return pki.message(entity, from_addr=email)


def _bundle(
    path: Path, *identities: pki.Identity, distrust: dict[str, datetime] | None = None
) -> Path:
    path.write_bytes(b"".join(i.cert_pem() for i in identities))
    if distrust is not None:
        entries = {
            fingerprint(i.cert): {
                "label": "test",
                "date": distrust[i.cert.subject.rfc4514_string()].strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for i in identities
            if i.cert.subject.rfc4514_string() in distrust
        }
        sidecar_path(path).write_text(
            json.dumps(
                {"source": "test", "roots": len(identities), "email_distrust_after": entries}
            )
        )
    return path


def test_default_trust_is_the_shipped_email_bundle() -> None:
    assert DEFAULTS["trusted-certs"] == "shipped"
    (bundle,) = Settings.from_mapping({}).trusted_certs
    assert bundle.name == "smime-ca-bundle.pem"
    assert bundle.is_file()
    assert bundle.parent == Path(smime_collector.__file__).parent / "data"


def test_shipped_names_the_package_bundle_beside_other_files(tmp_path) -> None:
    settings = Settings.from_mapping({"trusted-certs": "shipped, our-ca.pem"}, tmp_path)
    assert settings.trusted_certs == (SHIPPED_BUNDLE, tmp_path / "our-ca.pem")


def test_a_private_ca_is_added_with_a_second_bundle(tmp_path, make_settings, roots) -> None:
    public, private = roots
    raw = _signed(private, "staff@company.example")
    public_only = _bundle(tmp_path / "public.pem", public)
    private_pem = _bundle(tmp_path / "private.pem", private)
    assert (
        _judge(make_settings(dkim="off", trusted_certs=str(public_only)), raw).reason == "untrusted"
    )
    both = f"{public_only}, {private_pem}"
    verdict = _judge(make_settings(dkim="off", trusted_certs=both), raw)
    assert (verdict.outcome, verdict.reason) == ("stored", "ok")


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(timedelta(days=1), "untrusted"), (timedelta(0), "ok"), (-timedelta(days=1), "ok")],
    ids=["issued-after-cutoff", "issued-at-cutoff", "issued-before-cutoff"],
)
def test_distrust_after_compares_the_end_entity_not_before(
    tmp_path, make_settings, roots, offset, reason
) -> None:
    public, _ = roots
    bundle = _bundle(
        tmp_path / "roots.pem", public, distrust={public.cert.subject.rfc4514_string(): CUTOFF}
    )
    intermediate = pki.make_intermediate(public, "Issuing CA")  # issued now, after the cutoff
    raw = _signed(intermediate, "user@example.org", not_before=CUTOFF + offset)
    verdict = _judge(make_settings(dkim="off", trusted_certs=str(bundle)), raw)
    assert verdict.reason == reason
    if reason == "untrusted":
        assert "distrusted" in verdict.detail


def test_a_broken_sidecar_is_a_config_error(tmp_path, make_settings, roots) -> None:
    bundle = _bundle(tmp_path / "roots.pem", roots[0])
    sidecar_path(bundle).write_text("{not json")
    with pytest.raises(Exception, match="distrust-after sidecar"):
        create_app(make_settings(trusted_certs=str(bundle)))


def test_anchors_reload_when_the_bundle_changes(tmp_path, roots) -> None:
    public, private = roots
    bundle = _bundle(tmp_path / "roots.pem", public)
    anchors = TrustAnchors([bundle], check_interval=0)
    first = anchors.current()
    assert anchors.current() is first  # unchanged file: the same snapshot, nothing reloaded
    _bundle(bundle, public, private)
    stamp = time.time() + 5
    os.utime(bundle, (stamp, stamp))
    second = anchors.current()
    assert second is not first and len(second) == 2
    bundle.write_text("garbage")  # a half-written file keeps the last good anchors
    os.utime(bundle, (stamp + 5, stamp + 5))
    assert anchors.current() is second


def test_anchors_are_not_reread_per_request(tmp_path, roots) -> None:
    bundle = _bundle(tmp_path / "roots.pem", roots[0])
    anchors = TrustAnchors([bundle], check_interval=3600)
    first = anchors.current()
    _bundle(bundle, *roots)
    assert anchors.current() is first


def test_the_checkout_keeps_the_bundle_at_its_old_path(tmp_path) -> None:
    """``trusted-certs = smime-ca-bundle.pem`` in a checkout's webapp.ini (1.0's default) still
    finds the shipped bundle and its distrust-after sidecar."""
    settings = Settings.from_mapping({"trusted-certs": "smime-ca-bundle.pem"}, REPO, "test")
    old = load_anchors(list(settings.trusted_certs))
    shipped = load_anchors(list(Settings.from_mapping({}, tmp_path, "test").trusted_certs))
    assert len(old) == len(shipped) > 100
    assert old.distrust_after == shipped.distrust_after != {}
