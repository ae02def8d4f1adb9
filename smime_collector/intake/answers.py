"""Final answers remembered by delivery key (a Mailgun token, an SNS MessageId), for replays.

A provider that did not see our answer (a lost connection, its own retry) sends the same
delivery again, and so can anyone who captured a signed Mailgun request within its five
minutes. Such a repeat gets the answer the first one got, without being judged again.

The memory belongs to the certificate store (:meth:`CertStore.recall_answer`,
:meth:`CertStore.remember_answer`), because the store is what the processes that may receive
the repeat share: one host's gunicorn workers share its folder, several hosts behind a load
balancer share one PostgreSQL. It is bounded in age and size
(:data:`~smime_collector.store.base.REMEMBER_SECONDS`,
:data:`~smime_collector.store.base.MAX_REMEMBERED`).

Remembering is an optimisation, never a check: judging is idempotent (the same certificate is
``unchanged``, an older one ``older-than-stored``, a rejection rejects again), so a forgotten or
unreadable entry costs one more judgement and changes no answer. A store that cannot recall or
remember is logged and the delivery judged as if it were new.
"""

from __future__ import annotations

import logging

from smime_collector.intake.common import state
from smime_collector.store import StoreUnavailable
from smime_collector.verdict import Verdict

log = logging.getLogger(__name__)


def recall(door: str, key: str, what: str, door_log: logging.Logger) -> Verdict | None:
    """The final answer ``key`` (the door's ``what``: token, MessageId) already got at
    ``door``, if the store remembers one; a repeat says so in the door's own log."""
    try:
        remembered = state().collector.store.recall_answer(door, key)
    except StoreUnavailable as exc:
        log.warning("| answer memory unreadable (%s): judging as new", exc)
        return None
    if remembered is not None:
        door_log.info(
            "| %s already answered (%s, %s): the same answer, not judged again",
            what,
            remembered.outcome.value,
            remembered.reason,
        )
    return remembered


def remember(door: str, key: str, verdict: Verdict) -> None:
    """Keep a final answer for the next repeat (the store ignores ``tempfail``)."""
    try:
        state().collector.store.remember_answer(door, key, verdict)
    except StoreUnavailable as exc:
        log.warning("| answer memory not written (%s)", exc)
