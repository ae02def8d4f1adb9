"""``check-config``: every check an operator needs before going live, one line each.

It loads the configuration and the trust anchors, probes the store as ``/healthz`` does, checks
that the log is writable and that ``dns-nameservers`` answer, and lists risky settings that
still work. ``readSMIMEsig.py --check-config`` and ``smime-collector check-config`` print it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from smime_collector import logsetup
from smime_collector.config import ConfigError, Settings, load_settings
from smime_collector.dnskeys import DNSTempError, KeyResolver
from smime_collector.store import open_store
from smime_collector.trust import TrustError, load_anchors

EXIT_OK, EXIT_FAILED = 0, 2
CHECK_DNS_NAME = "example.com"


def load(config: str | None) -> Settings:
    """``--config``, else $WEBAPP_INI, else ./webapp.ini; built-in defaults when none exists."""
    if config is None and "WEBAPP_INI" not in os.environ and not Path("webapp.ini").exists():
        return Settings.from_mapping({}, environ=os.environ)
    return load_settings(config)


def check_config(config: str | None, out: TextIO) -> int:
    """Say what is wrong with the configuration, one line per check; exit 0 only if all pass."""
    try:
        settings = load(config)
    except ConfigError as exc:
        print(f"FAIL config: {exc}", file=out)
        return EXIT_FAILED
    results = [("config", True, f"{settings.source} loaded")]
    try:
        anchors = load_anchors(list(settings.trusted_certs))
        results.append(("trusted-certs", True, f"{len(anchors)} trust anchors loaded"))
    except TrustError as exc:
        results.append(("trusted-certs", False, str(exc).removeprefix("trusted-certs: ")))
    # The store line says why a database refused; the driver's own warnings saying it again
    # would otherwise reach standard error through Python's last-resort handler.
    logsetup.adopt_foreign_loggers()
    opened = open_store(settings)
    try:
        store = opened.health()  # the probe /healthz uses too
    finally:
        opened.close()
    results.append(("store", store.ok, store.detail))
    results.append(_check_log_writable(settings.log_file))
    results.append(_check_dns(settings))
    for key, ok, detail in results:
        print(f"{'ok' if ok else 'FAIL'} {key}: {detail}", file=out)
    for key, why in settings.risks():
        print(f"WARN {key}: {why}", file=out)
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_FAILED


def _check_log_writable(path: Path | None) -> tuple[str, bool, str]:
    if path is None:
        return "log-file", True, "logging to standard error"
    try:
        logsetup.touch_log_file(path)
    except OSError as exc:
        return "log-file", False, f"{path} is not writable: {exc.strerror or exc}"
    return "log-file", True, f"{path} is writable"


def _check_dns(settings: Settings) -> tuple[str, bool, str]:
    servers = ", ".join(f"{h}:{p}" for h, p in settings.dns_nameservers) or "system resolver"
    resolver = KeyResolver(list(settings.dns_nameservers), settings.dns_timeout)
    try:
        answer = resolver.txt(CHECK_DNS_NAME)
    except DNSTempError as exc:
        return "dns-nameservers", False, f"{servers}: {exc}"
    what = "a TXT record" if answer is not None else "no TXT record (the server answered)"
    return "dns-nameservers", True, f"{servers} answered {CHECK_DNS_NAME} with {what}"
