"""Files the service ships inside its package, found the same way from a checkout and a wheel.

An installed service has no repository around it: the trust bundle, gunicorn's settings and the
operator page's templates must be read from the package itself, never from the current folder
or the checkout. Everything that names one of them takes the path from here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
#: Mozilla's email-trusted roots (``tools/certdata2pem.py`` writes it); its sidecar beside it.
SHIPPED_BUNDLE = DATA_DIR / "smime-ca-bundle.pem"
SHIPPED_DISTRUST = DATA_DIR / "smime-ca-bundle.distrust.json"
#: ``trusted-certs`` may name the shipped bundle by this word, wherever the package lives.
SHIPPED_BUNDLE_NAME = "shipped"
#: gunicorn's settings, as a module gunicorn imports (``-c python:...``).
GUNICORN_CONF_MODULE = "smime_collector.gunicorn_conf"
#: The WSGI app gunicorn serves.
WSGI_APP = "smime_collector.web:app"
