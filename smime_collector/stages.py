"""What an exception nobody expected means, judged by the stage it escaped from.

Before, any unexpected exception was ``tempfail``: the relay retried the message for ever, and a
poison message (an ``IndexError`` in a parser) came back again and again. Now the stage decides:

- a stage that reads untrusted bytes (parsing, DKIM, the CMS signature, the certificates) turns
  it into that stage's rejection, with the traceback logged at ERROR for the developers;
- only I/O against our own dependencies (:data:`DEPENDENCY_ERRORS`: DNS, the request's
  deadline; disk errors are the store's ``store-error``) is ``tempfail``;
- anything else (a bug outside those stages) still reaches the pipeline's last resort,
  ``internal-error``.

Revocation fetches (``smime_collector/revocation.py``) turn their failures into verdicts
themselves; a :class:`FetchError` that escaped would still be a dependency's failure, and the
``chain`` stage's retry reason is ``revocation-unavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from smime_collector.deadline import DeadlineExceeded
from smime_collector.dnskeys import DNSTempError
from smime_collector.guardedfetch import FetchError
from smime_collector.verdict import Check

P = ParamSpec("P")
R = TypeVar("R")

#: The rejection for an unexpected exception while a stage reads the sender's bytes.
UNTRUSTED_INPUT_REASONS: dict[str, str] = {
    "parse": "malformed",
    "dkim": "dkim-invalid",
    "cms": "bad-signature",
    "chain": "bad-signature",
}
#: Failures of what the service depends on: retry later (``tempfail``).
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (DNSTempError, DeadlineExceeded, FetchError)
#: The tempfail reason of a dependency failure, per stage (``internal-error`` elsewhere).
DEPENDENCY_REASONS: dict[str, str] = {"dkim": "dns-error", "chain": "revocation-unavailable"}


def run_stage(
    stage: str, log: logging.Logger, step: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> R | Check:
    """``step(*args)``, or the :class:`Check` an exception escaping it stands for."""
    try:
        return step(*args, **kwargs)
    except DEPENDENCY_ERRORS as exc:
        reason = DEPENDENCY_REASONS.get(stage, "internal-error")
        log.warning("| %s stage: %s (%s)", stage, exc, type(exc).__name__)
        return Check.retry(reason, f"{stage} stage could not finish: {exc}")
    except Exception as exc:
        reason = UNTRUSTED_INPUT_REASONS.get(stage)
        if reason is None:
            raise
        log.error(
            "| unexpected %s in the %s stage; the message is rejected as %s",
            type(exc).__name__,
            stage,
            reason,
            exc_info=True,
        )
        return Check.fail(
            reason, f"the {stage} stage failed on this message: {type(exc).__name__}: {exc}"
        )
