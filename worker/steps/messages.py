"""Call messages (docs/behaviour.md, rule 13): one message per call session in its owning channel.

Written through the fair write queue (worker/steps/writes.py), as its second endpoint,
`messages`, keyed by call session id, at `CALLSYNC_STREAM_MESSAGE_RATE`: apart from channel
updates, so a burst of messages, or a 429 on one, never holds a channel's call fields up.

`note_session` records what the message of a session is made of (the session as just recorded:
its open, its close, an adoption) and offers the session id to the queue: once in line however
many times it is offered. At the session's turn the drain runs `_write_queued`, level-triggered:
it reads what callsync recorded of the session and its peers *now* and makes Stream's message
say that (send it if never sent, update it once the session closed), so a session that opened
and closed while it waited is sent once, already in its final state, and any number of runs, in
any order, leave one message saying the latest. A message may come late; never twice (its id is
`callsync-<session id>`: Stream refuses a second), never lost (a key leaves the line only once
written, dropped with its channel, or kept as a dead letter).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis

from worker.core.actions import WRITE_CALL_MESSAGE
from worker.core.binding import call_of_room
from worker.core.callmessages import USER_NAME, CallMessage, CallSession, call_message, is_duplicate_id, next_write
from worker.core.peers import SessionPeers
from worker.core.sessions import Session
from worker.core.upstream import Retry, UpstreamError
from worker.logs import fields
from worker.ops.counters import RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from worker.steps import writes
from worker.steps.runtime import Runtime, lock_token
from worker.store import scripts
from worker.store.codec import text
from worker.store.keys import CLOSED_TTL, call_message_key, call_message_lock_key
from worker.store.peers import read_peers

log = logging.getLogger("callsync.messages")
LOCK_SECONDS = 30  # one run's worst case: a 100ms read and two Stream writes with their timeouts
BUSY_WAIT = 1.0
_UNLOCK = scripts.Script.named("unlock")
_NOT_WRITTEN = object()  # `_write` made no answered Stream call: nothing to report


def note_session(rt: Runtime, session: Session | None, peer_event: bool = False) -> None:
    """Record what the call message of `session` (as just recorded) is made of, and offer it to
    the messages queue. Fields only move forward: an open never erases a close (`ended_ms` is
    only ever set). `peer_event`: recorded by a peer event, which only matters for a session
    callsync first learned of by it (its open lost): then it is noted, if it is the call's
    current session; a known session's peer events cost one EXISTS."""
    if session is None or not rt.settings.call_messages or not session.room_name:
        return
    key = call_message_key(session.session_id)
    call_id = call_of_room(session.room_name)
    if peer_event:
        if rt.redis.exists(key):
            return
        current = rt.state.call(call_id).session
        if current is None or current.session_id != session.session_id:
            return  # an older session's late peer event: its message is not this one's to start
    values: dict[Any, Any] = {"call_id": call_id, "room_id": session.room_id, "room_name": session.room_name}
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
    """Put the session in the messages' line (once): the drain writes it at its turn, fresh."""
    writes.offer(rt, MESSAGES, session_id, rt.clock(), direct=False)


def write_call_message(rt: Runtime, session_id: str) -> None:
    """The `callsync.write_call_message` task (a dead letter's replay, a run published before
    the queue): the session goes in line, paced like every other message."""
    if rt.settings.call_messages:
        schedule_call_message(rt, session_id)


def _write_queued(rt: Runtime, session_id: str, turn: writes.Turn) -> None:
    """The messages' writer: make the session's message say what recorded state says now."""
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
    # One writer per session even when a drainer's turn lapsed mid-write (killed, stalled) and
    # another took the key over: a late "live" must never overwrite the final message.
    token = lock_token()
    lock = call_message_lock_key(session_id)
    if not rt.redis.set(lock, token, nx=True, ex=LOCK_SECONDS) and text(rt.redis.get(lock)) != token:
        raise writes.WriteLater(rt.clock() + BUSY_WAIT, f"call message of session {session_id} is being written")
    unlock: scripts.ScriptCall = (_UNLOCK, [lock], [token])
    try:
        limit = _write(rt, key, owner, session, raw.get("written"), turn)
    except BaseException:
        with contextlib.suppress(redis.RedisError):  # else the lock lapses (LOCK_SECONDS)
            scripts.run(rt.redis, [unlock])
        raise
    # What the last answer said of the ceiling (X-RateLimit-Limit) and the unlock, in one round trip.
    steps = [unlock] if limit is _NOT_WRITTEN else [turn.queue.report_call(limit, rt.clock()), unlock]
    scripts.run(rt.redis, steps)


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


def _write(rt: Runtime, key: str, cid: str, session: CallSession, written: str | None, turn: writes.Turn) -> Any:
    """Send or update the message; returns the last answer's X-RateLimit-Limit (None: it had
    none), or _NOT_WRITTEN when no Stream call was answered (nothing to write, or dropped)."""
    message = call_message(session, _peers(rt, session) if session.closed else None)
    step = next_write(message, written, final=False)
    if step is None:
        return _NOT_WRITTEN
    body = message.body(rt.settings.call_message_user)
    line = fields(cid=cid, call_id=session.call_id, session_id=session.session_id, status=message.status)
    try:
        if step == "send":
            try:
                limit = _paced(rt, turn, lambda: rt.stream.send_message_reporting(cid, body)[1])
            except UpstreamError as error:
                if not is_duplicate_id(error.status, error.message):
                    raise
                # An earlier send landed (a retry, an answer lost): success; its content is unknown.
                log.info("call message %s already exists: updating it", message.id, extra=line)
                step = "update"
        if step == "update":
            limit = _paced(rt, turn, lambda: rt.stream.update_message_reporting(body)[1])
    except UpstreamError as error:
        if error.status == 404:  # the channel (and its messages) was deleted: nothing to show it in
            rt.redis.hset(key, "gone", "1")
            log.warning("call message %s dropped: %s", message.id, error.message, extra=line)
            return _NOT_WRITTEN
        # Rule 7 in the drain (steps/writes.py): a 5xx backs off in its place, another 4xx is a dead letter.
        raise
    done: dict[Any, Any] = {"written": message.digest}
    if session.closed:
        done["final"] = "1"
    rt.redis.hset(key, mapping=done)
    log.info("call message %s %s: %s", message.id, step, message.text, extra=line)
    return limit


def _paced(rt: Runtime, turn: writes.Turn, call: Callable[[], int | None]) -> int | None:
    """One Stream message call in its slot at the messages' ceiling; returns the answer's
    X-RateLimit-Limit. A 429 pauses the messages endpoint, not channel updates, until its wait
    is over (what it said of the limit recorded): the session goes back in line in its place."""
    writes.wait_for_slot(rt, turn)
    try:
        return call()
    except UpstreamError as error:
        if error.retry is not Retry.AFTER:
            raise
        now = rt.clock()
        wait = error.retry_after if error.retry_after is not None else 1.0
        labels = {"api": error.api, "source": MESSAGES.throttled_source}
        rt.tally.inc(RATE_LIMIT_WAITS, labels)
        rt.tally.inc(RATE_LIMIT_WAIT_SECONDS, labels, wait)
        turn.queue.report(error.reported_limit, now, pause_until=now + wait)
        raise writes.WriteLater(now, f"call messages paused by a 429 ({error})") from None


def upsert_message_user(rt: Runtime) -> None:
    """The user call messages come from, named "Calls" (at worker start, with CALLSYNC_CALL_MESSAGES)."""
    if rt.settings.call_messages:
        rt.stream.upsert_users([{"id": rt.settings.call_message_user, "name": USER_NAME}])


# Stream's SendMessage and UpdateMessage (1,000 a minute each per app by default,
# https://getstream.io/chat/docs/react/rate-limits/) under one ceiling, keyed by call session id;
# a dead letter replays the session's turn in line.
MESSAGES = writes.register(
    writes.Endpoint(
        "messages",
        lambda settings: settings.stream_message_rate,
        _write_queued,
        WRITE_CALL_MESSAGE,
        ceiling_source="message_ceiling",
        throttled_source="message_429",
        takes_back=False,  # a stalled drainer's late "live" must never overwrite "ended": wait out its lock
    )
)


__all__ = ["MESSAGES", "CallMessage", "note_session", "schedule_call_message", "upsert_message_user", "write_call_message"]
