"""smime-collector: collect S/MIME certificates from one signed email."""

__version__ = "1.1.0"
