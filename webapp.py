"""The seed's web entry point, kept for ``gunicorn webapp:app`` and existing imports.

The app lives in the package (:mod:`smime_collector.web`) so an installed service has it;
this module only re-exports it.
"""

from __future__ import annotations

from flask import Flask

from smime_collector import web
from smime_collector.intake.sparkpost import TOKEN_HEADER
from smime_collector.web import create_app

__all__ = ["TOKEN_HEADER", "create_app"]


def __getattr__(name: str) -> Flask:
    """``webapp.app`` for gunicorn: the package's app, built on first access."""
    if name == "app":
        return web.app
    raise AttributeError(name)
