"""The build backend: setuptools, after saying clearly that this Python is too old.

pip builds a project's metadata with the Python that installs it, before it resolves a single
dependency. ``Requires-Python`` alone is checked later, and an older pip first stops at a
dependency that has dropped that Python, with a message about the dependency; this check makes
the first error the one that matters.
"""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - the point: it runs on older Pythons
    sys.exit(
        "smime-collector needs Python 3.11 or newer, but this is Python "
        f"{sys.version.split()[0]} ({sys.executable})"
    )

from setuptools.build_meta import *  # noqa: F403
