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
from kombu.exceptions import OperationalError

from worker.cli import runfile
from worker.connect import redis_client
from worker.core.events import parse_time
from worker.logs import configure_logging
from worker.settings import ConfigError, Role, Settings, load_settings, redacted_url
from worker.store.deadletters import DeadLetter

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def settings_for(role: Role | None) -> Settings:
    """Settings from the environment, checked for `role`: every problem one line, then exit 2."""
    try:
        return load_settings(os.environ, *([role] if role else []))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"callsync: configuration error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def fail(message: str, code: int = 1) -> SystemExit:
    print(f"callsync: {message}", file=sys.stderr)
    return SystemExit(code)


def redis_url_here(settings: Settings) -> str:
    """REDIS_URL, else the Redis of a `callsync run` going in this checkout; one line saying
    where it looked if there is neither."""
    if settings.redis_url:
        return settings.redis_url
    record, stale = runfile.find(Path.cwd())
    if record is not None:
        return record.redis_url
    looked = f"{runfile.NAME} in {Path.cwd()} and the folders above"
    gone = f"; {stale[0]} is from a run that has stopped" if stale else ""
    raise fail(f"no Redis: REDIS_URL is not set and no `callsync run` is going here (looked for {looked}{gone})", 2)


def store(url: str) -> redis.Redis:
    # Bounded waits: an unreachable host answers with one line, not a hang.
    return redis_client(url, socket_connect_timeout=5, socket_timeout=15)


def unreachable(url: str, exc: Exception) -> SystemExit:
    from urllib.parse import unquote, urlsplit

    from worker.logs import scrub
    from worker.sentinel_url import is_sentinel_url, parse_sentinel_url

    passwords = parse_sentinel_url(url).passwords if is_sentinel_url(url) else (unquote(urlsplit(url).password or ""),)
    said = scrub(str(exc), [p for p in passwords if p])
    return fail(f"Redis at {redacted_url(url)} does not answer ({type(exc).__name__}: {said})")


def cmd_run(args: argparse.Namespace) -> int:
    from worker.cli.local import run_all

    return run_all(args.port, args.workers, Path(args.data_dir))


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.cli.demo import play

    return play(args.redis_url, Path(args.logs) if args.logs else None)


def cmd_web(args: argparse.Namespace) -> int:
    from webhooks.metrics import prepare_multiprocess_dir

    settings = settings_for("web")
    configure_logging(settings.secrets)
    prepare_multiprocess_dir()  # before prometheus_client is imported (webhooks.metrics says why)
    from worker.cli.processes import run_web

    run_web(settings, args.port or settings.port, args.host)
    return 0


# The tasks wait on Redis and the platforms far more than they compute: threads overlap
# those waits in one process (one GIL: scale with processes beyond a core's worth).
DEFAULT_CONCURRENCY = {"threads": 8, "prefork": 4, "solo": 1}


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.cli.processes import run_worker

    settings = settings_for("worker")
    if args.concurrency is not None and args.concurrency < 1:
        raise fail("configuration error: --concurrency must be at least 1", 2)
    pool = args.pool or settings.worker_pool
    run_worker(settings, args.concurrency or settings.worker_concurrency or DEFAULT_CONCURRENCY[pool], pool)
    return 0


def cmd_beat(_: argparse.Namespace) -> int:
    from worker.cli.processes import run_beat

    run_beat(settings_for("beat"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from worker.ops.status import gather, render

    url = redis_url_here(settings_for(None))
    try:
        status = gather(store(url), time.time())
    except redis.RedisError as exc:
        raise unreachable(url, exc) from None
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def cmd_resync(args: argparse.Namespace) -> int:
    from worker.cli.resync import run_resync

    try:
        code, output = run_resync(settings := settings_for("worker"), args.full, args.json)
    except (redis.RedisError, OperationalError) as exc:
        raise unreachable(settings.redis_url or "", exc) from None
    print(output, file=sys.stderr if code else sys.stdout)
    return code


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from dataclasses import replace

    settings = settings_for(None)
    settings = replace(settings, redis_url=redis_url_here(settings))
    try:
        return _dead_letters(args, settings)
    except (redis.RedisError, OperationalError) as exc:
        raise unreachable(settings.redis_url or "", exc) from None


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from worker.jobs.app import create_celery
    from worker.store.deadletters import DeadLetters
    from worker.store.enqueue import send

    letters = DeadLetters(store(settings.redis_url or ""), settings.secrets)
    if args.action == "list":
        output = render_letters(letters.list(args.limit), args.json, settings.secrets)
        if output:
            print(output)
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
        print(printable(f"no dead letter {letter_id}"), file=sys.stderr)
    chosen = letters.list(10**6) if args.all else [letter for letter in found.values() if letter]
    if not chosen:
        print("nothing to replay", file=sys.stderr)
        return 1
    for letter in chosen:
        # Enqueue first, remove after: a failed enqueue (Redis down) keeps the letter.
        send(app, letter.task, letter.args)
        letters.remove(letter.id)
        print(printable(f"replayed {letter.id} ({letter.task})"))
    return 1 if missing else 0


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control and other non-printable characters (ANSI
    escapes, title changes, bidi overrides, lone surrogates) shown as Python escapes."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def render_letters(rows: list[DeadLetter], as_json: bool, secrets: tuple[str, ...] = ()) -> str:
    """`dead-letters list` output: JSON (every non-ASCII character escaped, so always valid and
    inert on a terminal) or one escaped line per letter; errors scrubbed again with the
    configured secrets (letters written before the scrub existed)."""
    from worker.logs import scrub

    letters = [{**vars(letter), "error": scrub(letter.error, secrets)} for letter in rows]
    if as_json:
        return json.dumps(letters, indent=2, ensure_ascii=True)
    lines = []
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter["failed_at"]))
        args = f"{tuple(letter['args'])!r:.80}"
        line = f"{letter['id']}  {when}Z  {letter['task']}{args}  attempts={letter['attempts']}  {letter['error']}"
        lines.append(printable(line))
    return "\n".join(lines)


def cmd_hms_replay(args: argparse.Namespace) -> int:
    """Ask 100ms to re-send the webhook deliveries that failed in a window (it stops retrying after ~14 s)."""
    from datetime import UTC, datetime, timedelta

    from worker.clients.hms import HmsClient, ManagementAuth
    from worker.clients.http import upstream_client
    from worker.core.events import parse_time
    from worker.core.upstream import UpstreamError

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
    with upstream_client(settings.hms_base_url, auth) as http:
        try:
            answer = HmsClient(http).replay_failed_webhooks(start, end)
        except UpstreamError as exc:
            print(printable(f"callsync: 100ms refused the replay: {exc}"), file=sys.stderr)
            return 1
    print(printable(f"100ms replays failed deliveries from {start} to {end}: {json.dumps(answer)}"))
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
    from worker.core.signing import sign_stream
    from worker.settings import DEV_HMS_SECRET, DEV_STREAM_SECRET

    try:
        body = Path(args.file).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {args.file}: {exc.strerror}") from None
    if not args.as_is:
        body = json.dumps(redated(json.loads(body), time.time())).encode()
    if args.source == "stream":
        secret = (os.environ.get("STREAM_API_SECRET") or DEV_STREAM_SECRET).split(",")[0].strip()  # as Stream: the first
        headers = {"X-Signature": sign_stream(body, secret), "X-Webhook-Id": args.id or os.urandom(8).hex()}
    else:
        secrets = os.environ.get("HMS_WEBHOOK_SECRET") or DEV_HMS_SECRET
        headers = {os.environ.get("HMS_WEBHOOK_HEADER") or "X-Callsync-Secret": secrets.split(",")[0].strip()}
    url, where = receiver_here(args.url)
    try:
        response = httpx.post(
            f"{url}/webhooks/{args.source}", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    except httpx.HTTPError as exc:
        raise fail(f"no receiver answers at {url} ({where}): {type(exc).__name__}: {exc}") from None
    print(response.status_code, response.text.strip())
    return 0 if response.is_success else 1


def receiver_here(given: str | None) -> tuple[str, str]:
    """--url, else the receiver of a `callsync run` going in this checkout, else PORT on this host."""
    if given:
        return given.rstrip("/"), "--url"
    record, _ = runfile.find(Path.cwd())
    if record is not None:
        return record.receiver_url, f"the `callsync run` of {record.path}"
    port = os.environ.get("PORT", "").strip() or "8000"
    return f"http://127.0.0.1:{port}", "no --url and no `callsync run` going here: PORT on this host"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("callsync")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def at_least_one(raw: str) -> int:
    """A count of at least 1 (`--limit 0` used to mean "all": Redis reads ZRANGE 0 -1 so)."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="callsync", description=__doc__, epilog="Settings are environment variables: docs/configuration.md."
    )
    top.add_argument("--version", action="version", version=f"callsync {version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    port_help = "port to serve on (default: PORT, else 8000)"
    run = sub.add_parser("run", help="run web, worker and beat here (embedded Redis without REDIS_URL)")
    run.add_argument("--port", type=int, help=port_help)
    run.add_argument("--workers", type=int, help="the worker's threads (default: as `callsync worker`)")
    run.add_argument("--data-dir", default=".callsync/valkey", help="embedded Redis data directory (default: %(default)s)")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="watch callsync keep channels true, against local stand-ins of Stream and 100ms")
    demo.add_argument("--redis-url", help="a scratch Redis to use (default: an embedded one); never a production one")
    demo.add_argument("--logs", metavar="DIR", help="keep the roles' logs in DIR (default: a temporary folder, removed)")
    demo.set_defaults(func=cmd_demo)
    web = sub.add_parser("web", help="the webhook receiver (gunicorn)")
    web.add_argument("--port", type=int, help=port_help)
    web.add_argument("--host", default="0.0.0.0", help="address to bind (default: %(default)s, every interface)")  # noqa: S104
    web.set_defaults(func=cmd_web)
    worker = sub.add_parser("worker", help="a Celery worker")
    worker.add_argument(
        "--concurrency", type=int, help="threads or processes (default: CALLSYNC_WORKER_CONCURRENCY, else by pool: 8, 4, 1)"
    )
    worker.add_argument(
        "--pool", choices=sorted(DEFAULT_CONCURRENCY), help="Celery pool (default: CALLSYNC_WORKER_POOL, else threads)"
    )
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("beat", help="the periodic scheduler").set_defaults(func=cmd_beat)
    redis_note = "Reads REDIS_URL, else the Redis of a `callsync run` going in this checkout."
    status = sub.add_parser("status", help="queues, sessions, dead letters, last sweep and resync", description=redis_note)
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")
    status.set_defaults(func=cmd_status)
    resync = sub.add_parser("resync", help="read the truth back from both platforms now, and say what changed")
    resync.add_argument("--full", action="store_true", help="also look for channels callsync knows nothing of that show a call")
    resync.add_argument("--json", action="store_true", help="print JSON, for scripts")
    resync.set_defaults(func=cmd_resync)
    dead = sub.add_parser("dead-letters", help="list, replay or purge tasks that could not be done", description=redis_note)
    dead.add_argument("action", choices=["list", "replay", "purge"], help="list them, enqueue them again, or forget them all")
    dead.add_argument("ids", nargs="*", help="dead letter ids to replay")
    dead.add_argument("--all", action="store_true", help="replay every dead letter")
    dead.add_argument(
        "--limit", type=at_least_one, default=100, help="list at most this many, oldest first (at least 1; default: %(default)s)"
    )
    dead.add_argument("--json", action="store_true", help="list as JSON, for scripts")
    dead.set_defaults(func=cmd_dead_letters)
    replay = sub.add_parser("hms-replay", help="ask 100ms to re-send webhook deliveries that failed in a window")
    replay.add_argument("--since", required=True, help="RFC 3339 start, e.g. 2026-11-20T10:00:00Z")
    replay.add_argument("--until", help="RFC 3339 end (default: now)")
    replay.set_defaults(func=cmd_hms_replay)
    send = sub.add_parser("send", help="sign a sample webhook and POST it to a running receiver")
    send.add_argument("source", choices=["stream", "hms"], help="the platform whose signature to put on it")
    send.add_argument("file", help="the JSON body to send, e.g. tests/samples/hms_session_open.json")
    send.add_argument(
        "--url", help="the receiver (default: that of a `callsync run` going here, else http://127.0.0.1:PORT, PORT 8000)"
    )
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
