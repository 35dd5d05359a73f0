"""WSGI entry for gunicorn: `gunicorn "webhooks.wsgi:create_app()"` (`callsync web` does this)."""

from webhooks.app import create_app

__all__ = ["create_app"]
