"""Call messages (docs/behaviour.md, rule 13): one message per call session in its owning channel.

Level-triggered: `write_call_message(rt, session_id)` reads what callsync recorded of the session
and its peers *now* and makes Stream's message say that (send it if never sent, update it once the
session closed), so any number of runs, in any order, leave one message saying the latest. One
key, the session id, is one message: the issue-20 write queue can take it as its key unchanged.

`schedule_call_message` is the one place that asks for a run; `note_session` records what the
message is made of and asks. Until the queue lands, a run is a Celery task paced by its own
ceiling (`CALLSYNC_STREAM_MESSAGE_RATE`, a RateLimiter apart from channel updates').
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from worker.core.actions import WriteCallMessage
from worker.core.binding import call_of_room
from worker.core.callmessages import USER_NAME, CallMessage, CallSession, call_message, is_duplicate_id, next_write
from worker.core.peers import SessionPeers
from worker.core.sessions import Session
from worker.core.upstream import UpstreamError
from worker.logs import fields
from worker.ops.counters import RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from worker.steps.runtime import Deferred, Runtime, lock_token
from worker.store.codec import text
from worker.store.keys import CLOSED_TTL, call_message_key, call_message_lock_key
from worker.store.peers import read_peers

log = logging.getLogger("callsync.messages")
LOCK_SECONDS = 30  # one run's worst case: a 100ms read and two Stream writes with their timeouts
BUSY_WAIT = 1.0


def note_session(rt: Runtime, session: Session | None) -> None:
    """Record what the call message of `session` (as just recorded) is made of, and ask for a
    run. Fields only move forward: an open never erases a close (`ended_ms` is only ever set)."""
    if session is None or not rt.settings.call_messages or not session.room_name:
        return
    key = call_message_key(session.session_id)
    values: dict[Any, Any] = {
        "call_id": call_of_room(session.room_name),
        "room_id": session.room_id,
        "room_name": session.room_name,
    }
    if session.started_at is not None:
        values["started_ms"] = str(round(session.started_at * 1000))
    if session.status == "closed":
        values["ended_ms"] = str(round((session.ended_at or rt.clock()) * 1000))
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(key, mapping=values)
    pipe.expire(key, CLOSED_TTL)
    pipe.execute()
    schedule_call_message(rt, session.session_id)


def schedule_call_message(rt: Runtime, session_id: str) -> None:
    """Ask for a run of `write_call_message` for `session_id` (the one place: point it at the
    issue-20 queue, keyed by `session_id`, when that lands)."""
    rt.schedule(WriteCallMessage(session_id))


def write_call_message(rt: Runtime, session_id: str) -> None:
    """Make the session's message say what recorded state says now; idempotent."""
    if not rt.settings.call_messages:
        return
    key = call_message_key(session_id)
    raw = {text(k) or "": text(v) or "" for k, v in rt.redis.hgetall(key).items()}
    if not raw or raw.get("gone") or raw.get("final"):
        return
    session = _session(rt, session_id, raw)
    owner = rt.state.owner_of_call(session.call_id)
    if owner is None:
        log.info("call message of session %s: call %s belongs to no channel", session_id, session.call_id)
        return
    token = lock_token()
    lock = call_message_lock_key(session_id)
    if not rt.redis.set(lock, token, nx=True, ex=LOCK_SECONDS) and text(rt.redis.get(lock)) != token:
        raise Deferred(BUSY_WAIT, f"call message of session {session_id} is being written")
    try:
        _write(rt, key, owner, session, raw.get("written"))
    finally:
        if text(rt.redis.get(lock)) == token:
            rt.redis.delete(lock)


def _session(rt: Runtime, session_id: str, raw: dict[str, str]) -> CallSession:
    """The session as recorded: the snapshot, with the call's record if it still holds this session."""
    started = int(raw["started_ms"]) / 1000 if raw.get("started_ms") else None
    ended = int(raw["ended_ms"]) / 1000 if raw.get("ended_ms") else None
    current = rt.state.call(raw["call_id"]).session
    if current is not None and current.session_id == session_id:
        started = current.started_at or started
        if current.status == "closed":
            ended = ended or current.ended_at or rt.clock()
    return CallSession(session_id, raw["call_id"], raw["room_id"], raw["room_name"], started, ended)


def _peers(rt: Runtime, session: CallSession) -> SessionPeers | None:
    """Who joined, from peer events, completed at close from 100ms's own record of the session
    (so lost peer events never make a false "missed"); None when neither knows anyone."""
    recorded = read_peers(rt.redis, session.session_id)
    if not session.closed:
        return recorded
    theirs = rt.hms.session_peers(session.session_id)
    peers = recorded.with_peers(theirs) if theirs is not None else recorded
    return peers if peers.peers or peers.overflow else None


def _write(rt: Runtime, key: str, cid: str, session: CallSession, written: str | None) -> None:
    message = call_message(session, _peers(rt, session) if session.closed else None)
    step = next_write(message, written, final=False)
    if step is None:
        return
    body = message.body(rt.settings.call_message_user)
    line = fields(cid=cid, call_id=session.call_id, session_id=session.session_id, status=message.status)
    try:
        if step == "send":
            try:
                _paced(rt, lambda: rt.stream.send_message(cid, body))
            except UpstreamError as error:
                if not is_duplicate_id(error.status, error.message):
                    raise
                # An earlier send landed (a retry, a duplicate run): its content is unknown.
                log.info("call message %s already exists: updating it", message.id, extra=line)
                step = "update"
        if step == "update":
            _paced(rt, lambda: rt.stream.update_message(body))
    except UpstreamError as error:
        if error.status == 404:  # the channel (and its messages) was deleted: nothing to show it in
            rt.redis.hset(key, "gone", "1")
            log.warning("call message %s dropped: %s", message.id, error.message, extra=line)
            return
        raise  # rule 7: a 429 waits, a 5xx backs off, another 4xx is a dead letter (jobs/tasks.py)
    done: dict[Any, Any] = {"written": message.digest}
    if session.closed:
        done["final"] = "1"
    rt.redis.hset(key, mapping=done)
    log.info("call message %s %s: %s", message.id, step, message.text, extra=line)


def _paced(rt: Runtime, call: Callable[[], object]) -> None:
    """One Stream message call under the messages' own ceiling (not the channel updates')."""
    with rt.message_limiter.update() as grant:
        if grant.wait > 0:
            labels = {"api": "stream", "source": "message_ceiling"}
            rt.tally.inc(RATE_LIMIT_WAITS, labels)
            rt.tally.inc(RATE_LIMIT_WAIT_SECONDS, labels, grant.wait)
            raise Deferred(grant.wait, "Stream message ceiling reached")
        call()


def upsert_message_user(rt: Runtime) -> None:
    """The user call messages come from, named "Calls" (at worker start, with CALLSYNC_CALL_MESSAGES)."""
    if rt.settings.call_messages:
        rt.stream.upsert_users([{"id": rt.settings.call_message_user, "name": USER_NAME}])


__all__ = ["CallMessage", "note_session", "schedule_call_message", "upsert_message_user", "write_call_message"]
