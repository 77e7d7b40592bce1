"""Project wiring: settings, ASGI entry point, URLs, the health endpoints,
the Celery app and the launcher that starts every process of the embedded
default."""

from .celery import app as celery_app

__all__ = ["celery_app"]
