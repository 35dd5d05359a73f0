"""The `callsync` command: run the roles, and look after a running installation."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from .core.events import parse_time
from .logs import configure_logging
from .settings import ConfigError, Role, Settings, load_settings

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def settings_for(role: Role | None) -> Settings:
    """Settings from the environment, checked for `role`; one clear line and exit 2 if not."""
    try:
        settings = load_settings(os.environ)
        return settings.require(role) if role else settings
    except ConfigError as exc:
        print(f"callsync: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def store(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        print("callsync: configuration error: REDIS_URL is required for this command", file=sys.stderr)
        raise SystemExit(2)
    return redis.Redis.from_url(settings.redis_url)


def cmd_run(args: argparse.Namespace) -> int:
    from .embedded import run_all

    configure_logging()
    return run_all(args.port, args.workers, Path(args.data_dir))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import play

    return play(args.redis_url, Path(args.logs) if args.logs else None)


def cmd_web(args: argparse.Namespace) -> int:
    from webhooks.metrics import prepare_multiprocess_dir

    settings = settings_for("web")
    configure_logging(settings.secrets)
    prepare_multiprocess_dir()  # before prometheus_client is imported (webhooks.metrics says why)
    from .processes import run_web

    run_web(settings, args.port, args.host)
    return 0


# The tasks wait on Redis and the platforms far more than they compute: threads overlap
# those waits in one process (one GIL: scale with processes beyond a core's worth).
DEFAULT_CONCURRENCY = {"threads": 8, "prefork": 4, "solo": 1}


def cmd_worker(args: argparse.Namespace) -> int:
    from .processes import run_worker

    if args.pool not in DEFAULT_CONCURRENCY:
        return _config_error(f"CALLSYNC_WORKER_POOL must be one of {', '.join(sorted(DEFAULT_CONCURRENCY))}")
    given = str(args.concurrency) if args.concurrency is not None else os.environ.get("CALLSYNC_WORKER_CONCURRENCY", "")
    concurrency = given.strip() or str(DEFAULT_CONCURRENCY[args.pool])
    if not concurrency.isdigit() or int(concurrency) < 1:
        return _config_error("CALLSYNC_WORKER_CONCURRENCY (or --concurrency) must be a whole number of at least 1")
    run_worker(settings_for("worker"), int(concurrency), args.pool)
    return 0


def _config_error(message: str) -> int:
    print(f"callsync: configuration error: {message}", file=sys.stderr)
    return 2


def cmd_beat(_: argparse.Namespace) -> int:
    from .processes import run_beat

    run_beat(settings_for("beat"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import gather, render

    status = gather(store(settings_for(None)), time.time())
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from .celery_app import create_celery
    from .deadletters import DeadLetters
    from .queue import QUEUE

    settings = settings_for(None)
    letters = DeadLetters(store(settings))
    if args.action == "list":
        rows = letters.list(args.limit)
        if args.json:
            print(json.dumps([vars(letter) for letter in rows], indent=2))
        for letter in [] if args.json else rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.failed_at))
            print(f"{letter.id}  {when}Z  {letter.task}{tuple(letter.args)!r:.80}  attempts={letter.attempts}  {letter.error}")
        return 0
    if args.action == "purge":
        print(f"purged {letters.purge()} dead letter(s)")
        return 0
    if not args.all and not args.ids:
        print("callsync: name dead letter ids to replay, or --all", file=sys.stderr)
        return 2
    app = create_celery(settings)
    found = {i: letters.get(i) for i in args.ids}
    missing = [i for i, letter in found.items() if letter is None]
    for letter_id in missing:
        print(f"no dead letter {letter_id}", file=sys.stderr)
    chosen = letters.list(10**6) if args.all else [letter for letter in found.values() if letter]
    if not chosen:
        print("nothing to replay", file=sys.stderr)
        return 1
    for letter in chosen:
        # Enqueue first, remove after: a failed enqueue (Redis down) keeps the letter.
        app.send_task(letter.task, args=letter.args, queue=QUEUE)
        letters.remove(letter.id)
        print(f"replayed {letter.id} ({letter.task})")
    return 1 if missing else 0


def cmd_hms_replay(args: argparse.Namespace) -> int:
    """Ask 100ms to re-send the webhook deliveries that failed in a window (it stops retrying after ~14 s)."""
    from datetime import UTC, datetime, timedelta

    from .clients.hms import HmsClient, ManagementAuth
    from .clients.http import DEFAULT_TIMEOUT
    from .core.events import parse_time
    from .core.upstream import UpstreamError

    settings = settings_for(None)
    if not (settings.hms_access_key and settings.hms_app_secret):
        print("callsync: configuration error: HMS_ACCESS_KEY and HMS_APP_SECRET are required for hms-replay", file=sys.stderr)
        return 2
    # "now" rounded up to the second, so the deliveries of the last instant are inside.
    start, end = args.since, args.until or (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        print("callsync: --since and --until must be RFC 3339 times such as 2026-11-20T10:00:00Z", file=sys.stderr)
        return 2
    if not 0 <= last - first <= timedelta(days=14).total_seconds():
        print("callsync: the window must run forward and span at most 14 days (100ms's limit)", file=sys.stderr)
        return 2
    auth = ManagementAuth(settings.hms_access_key, settings.hms_app_secret)
    with httpx.Client(base_url=settings.hms_base_url, auth=auth, timeout=DEFAULT_TIMEOUT) as http:
        try:
            answer = HmsClient(http).replay_failed_webhooks(start, end)
        except UpstreamError as exc:
            print(f"callsync: 100ms refused the replay: {exc}", file=sys.stderr)
            return 1
    print(f"100ms replays failed deliveries from {start} to {end}: {json.dumps(answer)}")
    return 0


def redated(payload: Any, now: float) -> Any:
    """`payload` with every time in it moved so that the event happens at `now` (the envelope's
    `timestamp` for 100ms, `created_at` for Stream): a sample stays a delivery the receiver takes
    as current (it ignores Stream events older than an hour; event times bound what callsync
    believes)."""
    reference = parse_time(payload.get("timestamp") or payload.get("created_at")) if isinstance(payload, dict) else None
    if reference is None:
        return payload
    shift = now - reference

    def move(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: move(value) for key, value in node.items()}
        if isinstance(node, list):
            return [move(value) for value in node]
        at = parse_time(node) if isinstance(node, str) and TIME_RE.match(node) else None
        if at is None:
            return node
        moved = datetime.fromtimestamp(at + shift, UTC)
        return moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if "." in node else "%Y-%m-%dT%H:%M:%SZ")

    return move(payload)


def cmd_send(args: argparse.Namespace) -> int:
    """Sign a sample payload as the platform would and POST it to a running receiver."""
    from .core.signing import sign_stream
    from .embedded import DEV_HMS_SECRET, DEV_STREAM_SECRET

    body = Path(args.file).read_bytes()
    if not args.as_is:
        body = json.dumps(redated(json.loads(body), time.time())).encode()
    if args.source == "stream":
        secret = (os.environ.get("STREAM_API_SECRET") or DEV_STREAM_SECRET).split(",")[0].strip()  # as Stream: the first
        headers = {"X-Signature": sign_stream(body, secret), "X-Webhook-Id": args.id or os.urandom(8).hex()}
    else:
        secrets = os.environ.get("HMS_WEBHOOK_SECRET") or DEV_HMS_SECRET
        headers = {os.environ.get("HMS_WEBHOOK_HEADER") or "X-Callsync-Secret": secrets.split(",")[0].strip()}
    response = httpx.post(
        f"{args.url.rstrip('/')}/webhooks/{args.source}", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    print(response.status_code, response.text.strip())
    return 0 if response.is_success else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="callsync", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run web, worker and beat here (embedded Redis without REDIS_URL)")
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    run.add_argument("--workers", type=int, help="the worker's threads (default: as `callsync worker`)")
    run.add_argument("--data-dir", default=".callsync/valkey", help="embedded Redis data directory")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="watch callsync keep channels true, against local stand-ins of Stream and 100ms")
    demo.add_argument("--redis-url", help="a scratch Redis to use (default: an embedded one); never a production one")
    demo.add_argument("--logs", help="directory for the roles' logs (default: a temporary one)")
    demo.set_defaults(func=cmd_demo)
    web = sub.add_parser("web", help="the webhook receiver (gunicorn)")
    web.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    web.add_argument("--host", default="0.0.0.0")  # noqa: S104 - the web role serves the network
    web.set_defaults(func=cmd_web)
    worker = sub.add_parser("worker", help="a Celery worker")
    worker.add_argument(
        "--concurrency", type=int, help="threads or processes (default: CALLSYNC_WORKER_CONCURRENCY, else by pool)"
    )
    worker.add_argument("--pool", default=os.environ.get("CALLSYNC_WORKER_POOL", "threads"), choices=sorted(DEFAULT_CONCURRENCY))
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("beat", help="the periodic scheduler").set_defaults(func=cmd_beat)
    status = sub.add_parser("status", help="queues, sessions, dead letters, last sweep")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    dead = sub.add_parser("dead-letters", help="list, replay or purge tasks that could not be done")
    dead.add_argument("action", choices=["list", "replay", "purge"])
    dead.add_argument("ids", nargs="*", help="dead letter ids to replay")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    dead.add_argument("--limit", type=int, default=100)
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(func=cmd_dead_letters)
    replay = sub.add_parser("hms-replay", help="ask 100ms to re-send webhook deliveries that failed in a window")
    replay.add_argument("--since", required=True, help="RFC 3339 start, e.g. 2026-11-20T10:00:00Z")
    replay.add_argument("--until", help="RFC 3339 end (default: now)")
    replay.set_defaults(func=cmd_hms_replay)
    send = sub.add_parser("send", help="sign a sample webhook and POST it to a running receiver")
    send.add_argument("source", choices=["stream", "hms"])
    send.add_argument("file")
    send.add_argument("--url", default="http://127.0.0.1:8000")
    send.add_argument("--id", help="X-Webhook-Id to send (Stream); random by default")
    send.add_argument("--as-is", action="store_true", help="send the file's times unchanged (else moved to now)")
    send.set_defaults(func=cmd_send)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
