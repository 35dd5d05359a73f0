"""Start each Procfile role in this process: gunicorn for web, Celery for worker and beat."""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from typing import Any

from celery import signals
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from worker.jobs.app import beat_settings, create_celery
from worker.logs import configure_logging, dict_config
from worker.settings import Settings
from worker.store.enqueue import QUEUES

# One gunicorn setting for the receiver and its benchmark baseline alike: threads let a
# worker overlap its Redis round trip with other requests; processes use both cores.
GUNICORN_DEFAULTS: dict[str, Any] = {
    "workers": int(os.environ.get("WEB_CONCURRENCY", "2")),
    "worker_class": "gthread",
    "threads": 8,
    "keepalive": 5,
    "timeout": 30,
    "graceful_timeout": 10,
    "accesslog": None,
}


def freeze_startup_objects(*_: Any, **__: Any) -> None:
    """Keep what start-up built (modules, the app, clients) out of the garbage collector's way.

    A full collection walks every live object: tens of thousands after start-up, 20 to 40
    ms each time, every few seconds under load, and every request or task in flight
    waits for it (the p99 of bench/e2e.py). Frozen objects are never walked again; they
    were going to live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


class NoAccessLog(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without access lines: the receiver writes one line per webhook
    (callsync.webhooks) with more in it. gunicorn writes access lines whenever a logging
    config is given, whatever `accesslog` says, and formats each before any level check."""

    def access(self, *_: Any, **__: Any) -> None:
        return None


class Gunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn with our app object and options, no config file or argv parsing."""

    def __init__(self, app: Any, options: dict[str, Any]):
        self._app, self._options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def run_web(settings: Settings, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - a web role serves the network
    from webhooks.app import create_app
    from webhooks.metrics import child_exit

    options = {
        **GUNICORN_DEFAULTS,
        "workers": settings.web_concurrency,
        "bind": f"{host}:{port}",
        "child_exit": child_exit,  # prometheus-client multiprocess bookkeeping
        "logconfig_dict": dict_config(settings.secrets),  # gunicorn's own lines in JSON as well
        "logger_class": NoAccessLog,
        "post_worker_init": lambda _worker: freeze_startup_objects(),  # gunicorn checks the hook's arity
    }
    Gunicorn(create_app(settings), options).run()


def _celery_logging(settings: Settings) -> None:
    """Celery configures logging unless a `setup_logging` receiver does: ours keeps every line
    JSON. Set up now as well, so that what Celery says before that (its warnings) is JSON too."""
    configure_logging(settings.secrets)

    def setup(**_: Any) -> None:
        configure_logging(settings.secrets)

    signals.setup_logging.connect(setup, weak=False)


# `--quiet`: no start-up banner. It is not JSON, and the beat's names the RedBeat URL in full.
CELERY_QUIET = "--quiet"


RESTART_PAUSE_SECONDS = 2.0


def _say_shutdown(how: str = "", sig: str = "", **_: Any) -> None:
    """Celery's own notice of this goes to the terminal only (worker/logs.py, LineLog)."""
    logging.getLogger("callsync.worker").info("%s shutdown (%s): finishing the tasks in hand", how.lower(), sig)


def worker_argv(concurrency: int, pool: str) -> list[str]:
    """Celery's worker command line: both of callsync's queues (worker/store/enqueue.py)."""
    return [
        CELERY_QUIET,
        "worker",
        "--loglevel=INFO",
        f"--queues={','.join(QUEUES)}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        "--without-mingle",
    ]


def run_worker(settings: Settings, concurrency: int, pool: str = "threads") -> None:
    """Run a Celery worker; if it stops without being asked to, start this command afresh.

    kombu can fail to close its Redis channel after the connection drops (Redis restarted
    while the worker held unacknowledged tasks: AttributeError in `restore_unacked`), and
    Celery then stops the worker as "unrecoverable", with exit code 0 (found by
    bench/chaos.py). The tasks it held stay in Redis and are redelivered after the
    visibility timeout. A fresh process image (exec, same pid) reconnects as a new worker
    would, so a Redis restart never leaves a host without its worker.
    """
    _celery_logging(settings)
    asked = []
    signals.worker_shutting_down.connect(lambda **_: asked.append(True), weak=False)
    signals.worker_shutting_down.connect(_say_shutdown, weak=False)
    signals.worker_ready.connect(freeze_startup_objects, weak=False)  # the threads and solo pools
    signals.worker_process_init.connect(freeze_startup_objects, weak=False)  # each prefork process
    app = create_celery(settings)
    try:
        app.worker_main(worker_argv(concurrency, pool))
    finally:
        if not asked:
            logging.getLogger("callsync.worker").error(
                "the worker stopped without being asked to; starting it again in %.0f s", RESTART_PAUSE_SECONDS
            )
            time.sleep(RESTART_PAUSE_SECONDS)
            os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - this very command, again


def run_beat(settings: Settings) -> None:
    _celery_logging(settings)
    app = create_celery(settings)
    beat_settings(app, settings)
    app.start([CELERY_QUIET, "beat", "--loglevel=INFO"])
