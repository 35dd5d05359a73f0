"""The calls API's steps: authenticate, read what is cached, ask the platforms the rest, answer.

Decisions are the pure core's (`core.calls`, `core.tokens`); this module only carries them
out against Redis (`CallsStore`, `State`) and the platforms, for the web role's views.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from webhooks.calls_api.access import Caller, Gatekeeper
from worker.clients.hms import HmsClient, ManagementAuth
from worker.clients.http import OnUpstreamCall, ignore_call, upstream_client
from worker.clients.stream import StreamAuth, StreamClient
from worker.core.actions import EndSession
from worker.core.binding import derived_room_name, owner_description, owner_in_description
from worker.core.calls import (
    QUEUE_FULL_RETRY_AFTER,
    Refused,
    Room,
    call_answer,
    call_of_path,
    call_state_answer,
    channel_of_call,
    check_owner,
    create_request,
    end_step,
    unavailable,
)
from worker.core.checks import adopted
from worker.core.events import cid_of_room
from worker.core.sessions import Session
from worker.core.tokens import UserToken, call_token_claims, sign_call_token
from worker.core.upstream import UpstreamError
from worker.settings import Settings
from worker.store.calls import CallsStore, Snapshot
from worker.store.ending import begin_ending_queued
from worker.store.enqueue import Enqueuer, QueueFull
from worker.store.peers import read_peers
from worker.store.state import State

log = logging.getLogger("callsync.calls")
# A browser waits on these calls: a shorter deadline than the workers', and no retry here
# (the answer is a 503 with Retry-After, and the client tries again).
DEADLINE_SECONDS = 5.0
__all__ = ["Caller", "CallsApi", "Upstreams"]  # Caller is webhooks.calls_api.access's, for the views


class Upstreams:
    """One Stream and one 100ms client per process, built on first use in the serving process
    (gunicorn forks after the app is built: a client from before the fork would share sockets)."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None, on_call: OnUpstreamCall = ignore_call):
        self._settings, self._transport, self._on_call = settings, transport, on_call
        self._built: tuple[int, StreamClient, HmsClient] | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[StreamClient, HmsClient]:
        built = self._built
        if built is None or built[0] != os.getpid():
            with self._lock:
                built = self._built
                if built is None or built[0] != os.getpid():
                    built = self._built = (os.getpid(), *self._build())
        return built[1], built[2]

    def _build(self) -> tuple[StreamClient, HmsClient]:
        s = self._settings
        secret = s.stream_api_secret or "unset"
        stream = upstream_client(s.stream_base_url, StreamAuth(s.stream_api_key, secret), self._transport)
        hms = upstream_client(s.hms_base_url, ManagementAuth(s.hms_access_key, s.hms_app_secret or "unset"), self._transport)
        return (
            StreamClient(stream, s.field_path, self._on_call, deadline=DEADLINE_SECONDS),
            HmsClient(hms, self._on_call, deadline=DEADLINE_SECONDS),
        )


class CallsApi:
    """Create, join and end a channel's call. Each method returns the JSON answer or raises
    Refused; `line` collects the request's log fields (user, call, channel; never a token)."""

    def __init__(
        self,
        settings: Settings,
        store: CallsStore,
        state: State,
        upstreams: Upstreams,
        queue: Enqueuer,
        clock: Callable[[], float] = time.time,
    ):
        self.settings, self.store, self.state, self.upstreams = settings, store, state, upstreams
        self.queue, self.clock = queue, clock
        self.gate = Gatekeeper(settings, store, lambda: upstreams.get()[0], clock)

    def create(self, caller: Caller, cid: str, body: object, line: dict[str, Any]) -> dict[str, Any]:
        token = self._authenticate(caller, line)
        user = token.user_id
        call_id, _kind = create_request(body)
        line.update(call_id=call_id, cid=cid)
        check_owner(call_id, cid, None)
        snap = self._snapshot(caller, token, call_id, cid)
        with _platforms_down():
            self.gate.admit(caller, token, cid, snap.app_revoked, (snap.roster, snap.refusal))
            check_owner(call_id, cid, snap.owner)  # after membership: outsiders learn nothing of calls
            # Bound (and, for a free-form id nobody bound, owned) before its room is made: of two
            # channels racing for one id, only the owner's create reaches 100ms (rule 11).
            check_owner(call_id, cid, self.state.bind(cid, call_id, self.clock()).owner)
            room = snap.room or self._find_or_create_room(call_id, cid)
        return call_answer(call_id, room, self._token(room, user))

    def join(self, caller: Caller, call_id: str, line: dict[str, Any]) -> dict[str, Any]:
        user, call_id, _, snap = self._member_of_call(caller, call_id, line)
        with _platforms_down():
            room = snap.room or self._existing_room(call_id)[0]
        if room is None:
            raise Refused(404, "no such call")
        return call_answer(call_id, room, self._token(room, user))

    def describe(self, caller: Caller, call_id: str, line: dict[str, Any]) -> dict[str, Any]:
        """`GET /calls/{id}`: the call and who is in its live session now, from what callsync
        recorded (no Stream write; 100ms is asked only for a room callsync never cached)."""
        _, call_id, _, snap = self._member_of_call(caller, call_id, line)
        session = self.state.call(call_id).session
        live = session if session is not None and session.status != "closed" else None
        room = snap.room or (Room(live.room_id, live.room_name) if live is not None and live.room_name else None)
        if room is None:
            with _platforms_down():
                room = self._existing_room(call_id)[0]
        if room is None:
            raise Refused(404, "no such call")
        peers = read_peers(self.store.redis, live.session_id) if live is not None else None
        return call_state_answer(call_id, room, live, peers)

    def end(self, caller: Caller, call_id: str, line: dict[str, Any]) -> dict[str, str]:
        """End the call for everyone the way a client's End call does (rule 3): mark the session
        ending, then the worker's end_session ends the room and clears the channel."""
        user, call_id, cid, snap = self._member_of_call(caller, call_id, line)
        session = self.state.call(call_id).session
        if end_step(session) == "ask":
            with _platforms_down():
                session = self._adopt_live_session(call_id, snap.room)
        step = end_step(session)
        if session is None or step == "ask":
            return {"status": "no active session"}
        if step == "end":
            task = EndSession(call_id, session.session_id, f"call ended by {user} in channel {cid}")
            try:  # marked ending and queued together, or neither: a refused end leaves the session open
                moved = begin_ending_queued(self.store.redis, call_id, session.session_id, self.clock(), self.queue, task)
            except QueueFull:
                raise Refused(503, "too many tasks waiting; retry later", QUEUE_FULL_RETRY_AFTER) from None
            if moved is not None:
                log.info("call %s: session %s ending at the request of %s", call_id, session.session_id, user)
        return {"status": "ending"}

    # --- steps --------------------------------------------------------------------------

    def _authenticate(self, caller: Caller, line: dict[str, Any]) -> UserToken:
        token = self.gate.authenticate(caller)
        line["user_id"] = token.user_id
        return token

    def _snapshot(self, caller: Caller, token: UserToken, call_id: str, cid: str | None) -> Snapshot:
        with _platforms_down():
            return self.gate.snapshot(caller, token, call_id, cid)

    def _member_of_call(self, caller: Caller, path_call_id: str, line: dict[str, Any]) -> tuple[str, str, str, Snapshot]:
        call_id = call_of_path(path_call_id)
        line["call_id"] = call_id
        token = self._authenticate(caller, line)
        user = token.user_id
        guess = cid_of_room(call_id)
        snap = self._snapshot(caller, token, call_id, guess)
        cid = line["cid"] = channel_of_call(call_id, snap.owner)
        # The snapshot read the roster of the channel the id's form gives; another owner's is one read more.
        cached = (snap.roster, snap.refusal) if cid == guess else self.store.cached_answer(cid, user)
        with _platforms_down():
            self.gate.admit(caller, token, cid, snap.app_revoked, cached)
        return user, call_id, cid, snap

    def _existing_room(self, call_id: str) -> tuple[Room | None, bool]:
        """The room serving `call_id` (named exactly by it, else by its derived name: 100ms
        compares names without case, and a room of another case is another call's), and
        whether the call id's own name is taken by such a room."""
        _, hms = self.upstreams.get()
        room = hms.room_by_name(call_id)
        taken = room is not None and room.name != call_id
        if taken:
            derived = hms.room_by_name(derived_room_name(call_id))
            room = derived if derived is not None and derived.name == derived_room_name(call_id) else None
        if room is not None:
            self.store.save_room(call_id, room)
        return room, taken

    def _find_or_create_room(self, call_id: str, cid: str) -> Room:
        """The call's room, created (with `cid` recorded as its owner) when there is none: looked
        up first, since POST /rooms with an existing name would reconfigure that room."""
        room, taken = self._existing_room(call_id)
        if room is not None:
            recorded = owner_in_description(room.description)
            if recorded is not None and recorded != cid and cid_of_room(call_id) is None:
                self.state.take_ownership(call_id, recorded, cid, self.clock())  # the platform's word
                raise Refused(409, f"call {call_id} belongs to another channel")
            return room
        name = derived_room_name(call_id) if taken else call_id
        _, hms = self.upstreams.get()
        room = hms.create_room(name, self.settings.hms_template_id, owner_description(cid))
        self.store.save_room(call_id, room)
        log.info("created 100ms room %s (%s) for call %s", room.id, room.name, call_id)
        return room

    def _adopt_live_session(self, call_id: str, room: Room | None) -> Session | None:
        """A session 100ms runs in the call's room that callsync never heard of, recorded (rule 4)."""
        room = room or self._existing_room(call_id)[0]
        _, hms = self.upstreams.get()
        live = hms.live_session(room.id) if room else None
        if live is None:
            return None
        return self.state.record_session(adopted(live, call_id, self.clock()))

    def _token(self, room: Room, user: str) -> str:
        s = self.settings
        claims = call_token_claims(
            s.hms_access_key, room.id, user, s.hms_default_role, self.clock(), s.call_token_ttl_seconds, str(uuid.uuid4())
        )
        return sign_call_token(claims, s.hms_app_secret)


@contextmanager
def _platforms_down() -> Iterator[None]:
    """A platform's failure becomes the calls API's 503 with Retry-After."""
    try:
        yield
    except UpstreamError as error:
        raise unavailable(error) from None
