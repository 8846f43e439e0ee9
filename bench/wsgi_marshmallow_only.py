"""`wsgi:app` with api/fast_message.py turned off: every POST /queue message loaded by MessageSchema.

For bench/queue_cost.py's `marshmallow` variant: `gunicorn bench.wsgi_marshmallow_only:app`.
"""

from mailer.api import fast_message

fast_message.load = lambda data: None  # type: ignore[assignment]  # "cannot tell": marshmallow decides
fast_message.load_batch = lambda data: None  # type: ignore[assignment]

from wsgi import app  # noqa: E402  # after the patch, though the view looks the functions up per request

__all__ = ["app"]
