"""The operator page at ``/ui``: server-rendered, no JavaScript, signed in with ``ui-token``."""
