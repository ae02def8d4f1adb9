"""gunicorn settings for running from a checkout: ``gunicorn -c gunicorn.conf.py webapp:app``.

The settings live in the package (``smime_collector/gunicorn_conf.py``) so an installed service
has them too; ``smime-collector serve`` and ``make run`` use that module directly.
"""

from smime_collector.gunicorn_conf import *  # noqa: F403
