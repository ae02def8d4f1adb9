"""Operator routes: ``/healthz``, ``/metrics`` and certificate lookup (``/certs``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from smime_collector import __version__, metrics
from smime_collector.intake.common import bearer_denied, bearer_ok, state
from smime_collector.lookup import parse_duration, stored_pem
from smime_collector.store import StoreUnavailable

log = logging.getLogger(__name__)
blueprint = Blueprint("ops", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Readiness without secrets: anchors loaded, store writable, version. No addresses."""
    collector = state().collector
    anchors = len(collector.anchors.current())
    store = collector.store.health()
    failing = [name for name, ok in (("trust-anchors", anchors > 0), ("store", store.ok)) if not ok]
    body: dict[str, object] = {
        "status": "fail" if failing else "ok",
        "version": __version__,
        "trust_anchors": anchors,
        "store": collector.store.kind,
        "store_ok": store.ok,
    }
    if failing:
        body["failing"] = failing
        return jsonify(body), 503
    return jsonify(body), 200


@blueprint.get("/metrics")
def metrics_route() -> Response | tuple[Response, int]:
    token = state().settings.metrics_token
    if token and not bearer_ok(token):
        return bearer_denied()
    body, content_type = metrics.exposition(state().collector.store)
    return Response(body, content_type=content_type)


def _lookup_denied() -> tuple[Response, int] | None:
    """Lookup routes exist only when a lookup-token is configured, and need it as Bearer."""
    token = state().settings.lookup_token
    if not token:
        return jsonify(message="Not Found"), 404
    if not bearer_ok(token):
        return bearer_denied()
    return None


@blueprint.get("/certs")
def certs_list() -> tuple[Response, int]:
    if denied := _lookup_denied():
        return denied
    expiring = request.args.get("expiring-within")
    before = None
    if expiring is not None:
        window = parse_duration(expiring)
        if window is None:
            return jsonify(message="expiring-within must look like 30d, 12h or 90m"), 400
        before = datetime.now(UTC) + window
    try:
        entries = state().collector.store.list(before)
    except StoreUnavailable as exc:
        return store_unavailable(exc)
    return jsonify(certificates=[e.as_dict() for e in entries], count=len(entries)), 200


def store_unavailable(exc: StoreUnavailable) -> tuple[Response, int]:
    """The store cannot answer now: 503, so a caller retries instead of concluding "none"."""
    log.warning("certificate lookup: store unavailable: %s", exc)
    return jsonify(message="Certificate store unavailable; retry later"), 503


@blueprint.get("/certs/<path:address>")
def certs_one(address: str) -> Response | tuple[Response, int]:
    if denied := _lookup_denied():
        return denied
    try:
        pem = stored_pem(state().collector.store, address)
    except StoreUnavailable as exc:
        return store_unavailable(exc)
    if pem is None:
        return jsonify(message="No certificate stored for this address"), 404
    return Response(pem, content_type="application/pem-certificate-chain")
