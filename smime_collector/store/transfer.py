"""Moving certificates between stores: ``--export DIR`` and ``--import DIR``.

Both are one operation, :func:`copy`, from one store into another: every address's current
certificate goes through the target's ``save``, so the same :func:`supersede` rule decides
(a newer certificate already in the target stays; an older one is replaced and kept in its
history), and every history entry is appended verbatim, with its original time and reason,
unless the target already has it. Running either twice changes nothing the second time.

Exporting writes the folder layout (``<address>.crt`` plus ``.history/``) from whichever store
is configured, so consumers that read files keep working beside a database; importing loads
such a folder (the seed's, or an export) into the configured store.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from smime_collector.store.base import CertStore, StoreUnavailable
from smime_collector.store.folder import FolderStore
from smime_collector.trust import CORRUPT_CERTIFICATE

log = logging.getLogger(__name__)


@dataclass
class Transfer:
    """What a copy did: outcomes of the current certificates, history entries added, and the
    addresses the target could not take (with why)."""

    source: str
    target: str
    addresses: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    history: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(self.outcomes.items())) or "none"
        text = (
            f"{self.addresses} addresses from {self.source} to {self.target}: "
            f"certificates {outcomes}; {self.history} history entries added"
        )
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "target": self.target,
            "addresses": self.addresses,
            "outcomes": dict(self.outcomes),
            "history_added": self.history,
            "skipped": [{"email": a, "why": why} for a, why in self.skipped],
        }


def copy(source: CertStore, target: CertStore) -> Transfer:
    """Copy everything ``source`` holds into ``target``; see the module's docstring.

    Raises :class:`StoreUnavailable` when either store fails: the copy stops there, and running
    it again resumes it (what was copied is ``unchanged`` or already in the history).
    """
    report = Transfer(source.description, target.description)
    for record in source.dump():
        report.addresses += 1
        problem = target.unsafe(record.address)
        if problem:
            report.skipped.append((record.address, problem))
            continue
        if record.current is not None:
            try:
                cert = x509.load_der_x509_certificate(record.current)
            except CORRUPT_CERTIFICATE as exc:
                report.skipped.append((record.address, f"stored certificate is corrupt: {exc}"))
                continue
            result = target.save(record.address, cert, der=record.current, chain=record.chain)
            if result.check.tempfail:
                raise StoreUnavailable(result.check.detail)
            if result.check.ok:
                report.outcomes["stored" if result.changed else "unchanged"] += 1
            else:
                report.outcomes[str(result.check.reason)] += 1
        if record.history:
            report.history += target.restore_history(record.address, record.history)
    log.info("copied %s", report.summary())
    return report


def export_to(store: CertStore, directory: Path) -> Transfer:
    """Write ``store`` as a certificate folder at ``directory`` (created if missing)."""
    target = FolderStore(directory)
    try:
        target.ensure()
    except OSError as exc:
        raise StoreUnavailable(f"cannot create {directory}: {exc}") from exc
    try:
        return copy(store, target)
    finally:
        target.close()


def import_from(directory: Path, store: CertStore) -> Transfer:
    """Load the certificate folder at ``directory`` into ``store``."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder")
    source = FolderStore(directory)
    try:
        return copy(source, store)
    finally:
        source.close()
