"""A temporary workspace: DNS on loopback serving the corpus' DKIM keys, INI files, collectors.

Every file the benchmark writes at run time lives in one temporary folder, removed at the end.
INI files name their folders relatively (they are resolved against the INI's own folder), so
no file the benchmark writes carries an absolute path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus import Corpus, extra_roots, write_bundle
from smime_collector import resources
from smime_collector.config import Settings, load_settings
from smime_collector.logsetup import attach
from smime_collector.pipeline import Collector
from smime_collector.store import FolderStore
from tests.dnsserver import LoopbackDNS

TOKEN = "bench token"
SHIPPED_BUNDLE = resources.SHIPPED_BUNDLE


@dataclass
class Workspace:
    folder: Path
    corpus: Corpus
    dns: LoopbackDNS
    _bundles: dict[int, Path] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        target = self.folder.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def bundle(self, roots: int) -> Path:
        """A trust bundle of ``roots`` anchors: the shipped ones, the bench root, filler roots."""
        if roots not in self._bundles:
            shipped = SHIPPED_BUNDLE.read_bytes()
            have = shipped.count(b"-----BEGIN CERTIFICATE-----") + 1
            filler = extra_roots(max(0, roots - have)) if roots > have else []
            path = self.path(f"bundle-{roots}.pem")
            count = write_bundle(path, [shipped, self.corpus.root_pem(), *filler])
            if count != max(roots, have):
                raise RuntimeError(f"bundle holds {count} roots, not {roots}")
            self._bundles[roots] = path
        return self._bundles[roots]

    def write_ini(
        self, name: str, roots: int, log_level: str = "INFO", extra: dict[str, str] | None = None
    ) -> Path:
        """``<name>/webapp.ini`` with ``certs``, ``webapp.log`` and the bundle beside it;
        ``extra`` keys are added or override."""
        folder = self.path(name, "webapp.ini").parent
        bundle = self.bundle(roots)
        shutil.copyfile(bundle, folder / "bundle.pem")
        ini = folder / "webapp.ini"
        values = {
            "x-messagesystems-webhook-token": TOKEN,
            "user-certs-dir": "certs",
            "trusted-certs": "bundle.pem",
            "log-file": "webapp.log",
            "log-level": log_level,
            "dkim": "require",
            "dkim-alignment": "relaxed",
            "dns-nameservers": self.dns.nameserver,
            "dns-timeout": "5",
            **(extra or {}),
        }
        ini.write_text("[webapp]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
        return ini

    def settings(self, name: str, roots: int = 150) -> Settings:
        return load_settings(self.write_ini(name, roots))

    def collector(self, settings: Settings) -> Collector:
        """A collector as the service builds it, logging at the settings' level to a file."""
        return Collector.build(settings, attach("webapp", settings.log_file, settings.log_level))


def with_store(collector: Collector, folder: Path) -> Collector:
    """The same collector (anchors, warm DNS cache, log) writing to another folder."""
    store = FolderStore(folder)
    store.ensure()
    return dataclasses.replace(collector, store=store)


@contextlib.contextmanager
def workspace(corpus: Corpus) -> Iterator[Workspace]:
    """Temporary folder plus loopback DNS; both gone afterwards, even on error."""
    folder = Path(tempfile.mkdtemp(prefix="smime-bench-"))
    dns = LoopbackDNS(corpus.dns_records, ttl=3600)
    try:
        dns.start()
        yield Workspace(folder, corpus, dns)
    finally:
        dns.stop()
        close_log_handlers()
        shutil.rmtree(folder, ignore_errors=True)


def close_log_handlers() -> None:
    logger = logging.getLogger("webapp")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
