#!/usr/bin/env python3
"""The seed's command line, kept: ``readSMIMEsig.py [--config FILE] [--json] EMLFILE ...``.

The code lives in the package (``smime-collector judge`` and ``smime-collector check-config``
run the same functions); this script keeps the seed's flags and exit codes.
"""

from __future__ import annotations

import sys

from smime_collector.cli.judge import exit_code, main, read_smime_email

__all__ = ["exit_code", "main", "read_smime_email"]

if __name__ == "__main__":
    sys.exit(main())
