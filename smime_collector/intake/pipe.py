"""The Postfix pipe(8) door: ``readSMIMEsig.py --pipe`` judges one message from standard input.

Postfix bounces a message to its envelope sender when the command exits with anything but 0 or
a temporary code, and that sender may be forged: a bounce would be backscatter. So the exit
status is only ever

- 0 for ``stored``, ``unchanged`` and ``rejected`` (the verdict is logged, never bounced);
- 75 (``EX_TEMPFAIL``: Postfix defers and retries) for ``tempfail`` and for every other way
  this can end: a configuration error, a bad argument, a crash, or running past ``--deadline``
  (a watchdog thread ends the process with 75 whatever it is doing).

Postfix hands the message over as it stored it (LF line ends), untouched otherwise as long as
the ``master.cf`` entry adds no header (no ``F``, ``O``, ``R`` or ``D`` flag; see README).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from datetime import UTC, datetime

from smime_collector import logsetup
from smime_collector.config import ConfigError, Settings, load_settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Delivery, Envelope
from smime_collector.pipeline import Collector
from smime_collector.trust import TrustError
from smime_collector.verdict import Outcome, Verdict

INTAKE = "pipe"
EXIT_DONE = 0
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL from sysexits.h
DEFAULT_DEADLINE_SECONDS = 300.0
#: Seconds of ``--deadline`` kept back from the judgement for the watchdog (at most a fifth).
WATCHDOG_MARGIN_SECONDS = 5.0
PROG = "readSMIMEsig.py --pipe"

log = logging.getLogger(__name__)


def exit_code(verdict: Verdict) -> int:
    """The one place a verdict becomes this door's answer to Postfix."""
    return EXIT_TEMPFAIL if verdict.outcome is Outcome.TEMPFAIL else EXIT_DONE


def main(argv: list[str]) -> int:
    """Run the pipe; returns 0 or 75 and nothing else, whatever happens."""
    try:
        return _main(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error must not bounce
        return EXIT_DONE if exc.code in (0, None) else EXIT_TEMPFAIL
    except (ConfigError, TrustError) as exc:
        _say(f"configuration error: {exc}")
        return EXIT_TEMPFAIL
    except BaseException as exc:  # noqa: BLE001 - any failure defers; a bounce is never right
        _say(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_TEMPFAIL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Judge one message from standard input, for Postfix's pipe(8). "
        "Exit 0 when it got a final verdict (stored, unchanged, rejected), 75 otherwise.",
    )
    parser.add_argument("--pipe", action="store_true", required=True, help=argparse.SUPPRESS)
    parser.add_argument(
        "--config", metavar="FILE", help="INI file (default: $WEBAPP_INI or ./webapp.ini)"
    )
    parser.add_argument("--sender", metavar="S", help="envelope sender (${sender}), for the log")
    parser.add_argument(
        "--recipient", metavar="R", help="envelope recipient (${recipient}), for the log"
    )
    parser.add_argument(
        "--deadline",
        metavar="SECONDS",
        type=_seconds,
        default=DEFAULT_DEADLINE_SECONDS,
        help=f"exit 75 after this long, whatever happens (default {DEFAULT_DEADLINE_SECONDS:g})",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    watchdog = threading.Timer(args.deadline, _expire, (args.deadline,))
    watchdog.daemon = True
    watchdog.start()
    try:
        return _judge(args)
    finally:
        watchdog.cancel()


def _judge(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    sink = logsetup.attach("pipe", settings.log_file, settings.log_level, settings.log_format)
    collector = Collector.build(settings, sink)
    with sink.context():
        log.info("Message on standard input,sender=%s,recipient=%s", args.sender, args.recipient)
        raw = sys.stdin.buffer.read(settings.smtp_max_bytes + 1)
        if len(raw) > settings.smtp_max_bytes:
            log.warning(
                "| message larger than smtp-max-bytes (%d): not judged, not bounced",
                settings.smtp_max_bytes,
            )
            return EXIT_DONE
        envelope = Envelope(args.sender, (args.recipient,) if args.recipient else ())
        budget = args.deadline - min(WATCHDOG_MARGIN_SECONDS, args.deadline / 5)
        verdict = collector.judge(
            Delivery(raw, INTAKE, datetime.now(UTC), envelope), Deadline.after(budget)
        )
    if verdict.outcome is Outcome.TEMPFAIL:
        _say(f"temporary failure ({verdict.reason}): {verdict.detail}")
    return exit_code(verdict)


def _settings(config: str | None) -> Settings:
    """``--config``, else $WEBAPP_INI, else ./webapp.ini; the defaults when none exists."""
    if config is None and "WEBAPP_INI" not in os.environ and not os.path.exists("webapp.ini"):
        return Settings.from_mapping({}, environ=os.environ)
    return load_settings(config)


def _expire(seconds: float) -> None:
    """The watchdog: past ``--deadline``, end the process with 75 whatever it is doing."""
    _say(f"no verdict within --deadline {seconds:g} s; Postfix will retry")
    os._exit(EXIT_TEMPFAIL)


def _say(text: str) -> None:
    """One line on standard error: Postfix puts it in the mail log's reason for the deferral."""
    try:
        os.write(2, f"{PROG}: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass
