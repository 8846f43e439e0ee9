"""gunicorn settings, read from the environment (gunicorn loads this file by itself)."""

import os
import re
import shutil
import tempfile

from gunicorn import glogging

# Prometheus metrics of all the gunicorn processes (and of a worker given the same directory) are written
# to files in PROMETHEUS_MULTIPROC_DIR and summed at each scrape (mailer/metrics.py). It must be set before
# prometheus_client is first imported, which importing mailer below does.
_METRICS_DIR_CREATED = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _METRICS_DIR_CREATED:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mailer-metrics-")

from mailer.config import Settings  # noqa: E402
from mailer.logging_json import gunicorn_logconfig  # noqa: E402  # after PROMETHEUS_MULTIPROC_DIR is set

_settings = Settings.from_env()  # a bad value stops the start here, with the variable's name

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("MAILER_WEB_THREADS", "4"))
# gthread, except that a request is read whole by the worker's main loop before a thread gets it, with
# deadlines: slow clients cannot hold the threads (mailer/web/worker.py, README "Slow and hostile clients").
worker_class = "mailer.web.worker.BufferingWorker"
# Open connections per process (each costs a file descriptor and the buffer of the request being read);
# beyond it the process stops accepting until one closes.
worker_connections = _settings.web_max_connections
# gunicorn 25.1+ opens a control socket shared by every gunicorn of the user ($XDG_RUNTIME_DIR/gunicorn.ctl):
# nothing of mailer uses it, and it would let any process of the user resize or stop this one.
control_socket_disable = True
# Requests are short; a stuck one should not hold a worker for long.
timeout = 30
graceful_timeout = 20

# One JSON object per line, like the app and the worker (mailer/logging_json.py). No access log: the
# app logs every request itself, with its request id, app and duration.
logconfig_dict = gunicorn_logconfig()
accesslog = None


class NoAccessLogger(glogging.Logger):
    """gunicorn's logger without the access log (mailer/api/request_log.py logs each request)."""

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        """Nothing: no access log."""


# With a logconfig_dict, gunicorn's own logger formats every request's access-log fields even though no
# handler takes them (about 5 % of a worker's CPU on POST /queue).
logger_class = NoAccessLogger


def on_starting(server):  # type: ignore[no-untyped-def]
    """Drop the metric files of processes that are gone (a previous run's): counters start again from 0."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        match = re.search(r"_(\d+)\.db$", name)
        if match and not _alive(int(match[1])):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A gunicorn process ended: its live gauges go; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    """Remove the metrics directory if this file created it."""
    if _METRICS_DIR_CREATED:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _alive(pid):  # type: ignore[no-untyped-def]
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
