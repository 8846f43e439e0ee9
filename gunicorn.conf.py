"""gunicorn settings, read from the environment (gunicorn loads this file by itself)."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("MAILER_WEB_THREADS", "4"))
worker_class = "gthread"
# Requests are short; a stuck one should not hold a worker for long.
timeout = 30
graceful_timeout = 20
