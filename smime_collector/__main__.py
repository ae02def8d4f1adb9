"""``python -m smime_collector``: the ``smime-collector`` command."""

import sys

from smime_collector.cli import main

sys.exit(main())
