"""A process that logs numbered lines through ``logsetup`` as the service does, for the
rotation test: ``python -m tests.logwriter LOG_FILE NAME COUNT``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from smime_collector import logsetup


def main() -> None:
    log_file, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sink = logsetup.attach(name, log_file)
    log = logging.getLogger("smime_collector.tests.logwriter")
    ready = Path(f"{log_file}.{name}.ready")
    for number in range(count):
        with sink.context():
            log.info("line %s-%06d", name, number)
        if number == count // 4:
            ready.touch()  # the test rotates once both writers are well under way
        time.sleep(0.0005)


if __name__ == "__main__":
    main()
