"""Every Redis key callsync uses, and the hash fields of its records (one schema for the store).

Every key of ours starts with `cs:<kind>:` and kinds contain no colon, so a key built from
input (a cid, a call id, a session id) can never land in another kind's namespace. Keys built
from a call id use it exactly as written: call ids are case-sensitive, as the channel ids in
them are (two ids that differ only in case are two calls with two rooms: core/binding.py).
"""

from __future__ import annotations

from worker.core.timebounds import REPLAY_WINDOW_SECONDS

# A call record outlives its session's end by 100ms's replay window (and a day): a replayed or late
# open, even 30 days on, still finds its session closed (core/timebounds.py refuses older ones).
CLOSED_TTL = REPLAY_WINDOW_SECONDS + 86400
CALL_TTL = 14 * 86400  # bindings and channel records unseen this long are forgotten
# Stream retries within 15 s, 100ms within ~15 s: a day is ample, and longer than the hour in which
# the receiver takes a Stream event at all (core/timebounds.py), so a body replayed is a duplicate.
DEDUPE_TTL = 86400
MAX_BINDINGS = 8  # call ids remembered per channel

# The open-session index, cheap enough for a million sessions: each open call sits in a
# set of the calls whose session started in the same BUCKET_SECONDS (`cs:ob:<bucket>`),
# and the buckets sit in a sorted set by start (`cs:open`). A set member costs about half
# a sorted-set entry, and the sweep still reads only buckets that can hold due sessions.
OPEN_BUCKETS = "cs:open"
BUCKET_SECONDS = 10
BOUND_CHANNELS = "cs:bound"  # zset: cid → last time a binding was seen (for `callsync status`)
# zset: call (as in the open index) → when its session was marked "ending" (or last sent to be
# ended again): the sweep ends again a session whose end did not complete (worker/steps/sweep.py).
ENDING_SESSIONS = "cs:ending"

# --- the call record (hash at call_key) -----------------------------------------------
CALL_ROOM_ID = "r"
CALL_SESSION_ID = "s"
CALL_STATUS = "st"  # open | ending | closed
CALL_STARTED_MS = "t0"  # the session's start in whole milliseconds (Redis packs an integer small)
CALL_ENDED_AT = "t1"  # unix seconds (repr of a float)
CALL_ROOM_NAME = "n"  # the room's name, only when it is not the call id (core.binding.derived_room_name)
CALL_IDLE_AT = "idle"  # when 100ms last said the room had no live session

# --- the channel record (hash at channel_key) -------------------------------------------
CHANNEL_ACTIVE = "a"  # "1" | "0": callActive
CHANNEL_CALL_ID = "id"  # callId, absent when none
CHANNEL_EXISTS = "x"  # "1" | "0": "0" once Stream said the channel is deleted or missing
CHANNEL_VERSION = "v"  # the time of the news recorded (Stream's created_at, or callsync's write)
CHANNEL_CLAIM_SINCE = "cl"  # when the current `callActive: true` claim began
CHANNEL_MISSING_FOR = "mf"  # the live session a read that found no channel was made for
CHANNEL_PENDING = "p"  # "1": a change no completed reconcile has read yet
CHANNEL_BEFORE_ACTIVE = "pa"  # callActive before the pending change ("1" | "0"; absent: none)
CHANNEL_BEFORE_CALL_ID = "pi"  # callId before the pending change
PENDING_FIELDS = (CHANNEL_PENDING, CHANNEL_BEFORE_ACTIVE, CHANNEL_BEFORE_CALL_ID)
CHANNEL_INTENT = "w"  # the write in flight (core.channels.WriteIntent): "1 <callId>" | "0"
CHANNEL_INTENT_AT = "wt"  # its date, and its claim's when it writes one: "<at>" | "<at> <claim since>"

# --- the calls API (worker/store/calls.py) ------------------------------------------------
ROOM_ID = "id"  # fields of room_key's hash
ROOM_NAME = "name"
ROSTER_META = " roster"  # the roster hash's field saying what it holds: user ids have no whitespace
APP_REVOKED_BEFORE = "cs:app:revoke"  # the app's `revoke_tokens_issued_before` as last read ("" for none)

# --- kept by other parts (named here so no raw key lives outside the store) -------------
DEAD_LETTER_INDEX = "cs:dlz"  # zset: id → time of failure
DEAD_LETTER_RECORDS = "cs:dl"  # hash: id → JSON record
WRITE_QUEUE_PREFIX = "cs:wq:"  # + endpoint: the write queue (zset) and its :pace :turn :sched :nb :proc :att
METRICS = "cs:metrics"  # hash: field (metric and labels) → number
WORKERS = "cs:workers"  # zset: hostname → last heartbeat (unix seconds)
WORKER_INFO = "cs:workers:info"  # hash: hostname → JSON {pid, concurrency, queues, started_at}
SWEEP_LOCK = "cs:lock:sweep"
LAST_SWEEP = "cs:sweep:last"
CHECK_CURSOR = "cs:sweep:cursor"
BEAT_PREFIX = "cs:beat:"  # RedBeat's keys
# The resync (worker/steps/resync.py): its lock, the run under way (resumable), the last one done.
RESYNC_LOCK = "cs:lock:resync"
RESYNC_RUN = "cs:resync:run"  # JSON: the run under way (phase, cursors, counts)
LAST_RESYNC = "cs:resync:last"  # JSON: the last run done (when, how long, what it found and did)
LAST_FULL_RESYNC = "cs:resync:lastfull"  # unix time of the last full resync done
# Written at first start; missing from a store that should hold it: the Redis was lost or
# replaced (FLUSHALL, a failover that lost its data), and a full resync runs at once.
EPOCH = "cs:epoch"
RESYNC_QUERY_RATE = "cs:rate:resync-query"  # the resync's share of Stream's QueryChannels quota
RESYNC_HMS_RATE = "cs:rate:resync-hms"  # its 100ms calls
RETRY_WAIT_PREFIX = "cs:wait:"
REDELIVERIES_PREFIX = "cs:redeliveries:"
# kombu's Redis transport keeps tasks taken by a worker but not yet acknowledged (running,
# prefetched, or waiting for their countdown) in this sorted set, for all queues together
# (celery/kombu, kombu/transport/redis.py: `unacked_index_key`).
KOMBU_UNACKED = "unacked_index"


def lock_key(cid: str) -> str:
    return f"cs:lock:{cid}"


def call_key(call_id: str) -> str:
    return f"cs:c:{call_id}"


CALL_KEY_PREFIX = call_key("")


def bucket_of(started_at: float | None) -> int:
    return int((started_at or 0.0) // BUCKET_SECONDS)


def bucket_key(bucket: int) -> str:
    return f"cs:ob:{bucket}"


BUCKET_KEY_PREFIX = "cs:ob:"


def channel_key(cid: str) -> str:
    return f"cs:ch:{cid}"


def bindings_key(cid: str) -> str:
    return f"cs:cb:{cid}"


def dedupe_key(source: str, delivery_id: str) -> str:
    return f"cs:dd:{source}:{delivery_id}"


def later_key(cid: str) -> str:
    """The mark of a delayed reconcile already scheduled for the channel."""
    return f"cs:later:{cid}"


def owner_key(call_id: str) -> str:
    """The first channel that bound a call whose id names no channel (core.binding.owner_of)."""
    return f"cs:owner:{call_id}"


def room_name_key(room_id: str) -> str:
    """A 100ms room's name by its id, as the resync last looked it up (its list of live sessions
    names rooms by id only)."""
    return f"cs:rn:{room_id}"


def room_key(call_id: str) -> str:
    return f"cs:room:{call_id}"


# The layout of the keys above changed in schema 2 (call ids exact, one owner per call):
# worker/store/migrate.py converts what schema 1 wrote, once, and records the version here.
SCHEMA = "cs:schema"
SCHEMA_VERSION = 2
LEGACY_CALL_CHANNELS_PREFIX = "cs:cc:"  # schema 1: call id (lower case) -> every channel that showed it


def peers_key(session_id: str) -> str:
    """Hash: peer id → "<joined ms>,<left ms>,<user id>" (core.peers), and PEERS_OVERFLOW."""
    return f"cs:peers:{session_id}"


PEERS_OVERFLOW = "#over"  # joins past core.peers.MAX_PEERS_PER_SESSION, counted not kept (peer ids are uuids)


def call_message_key(session_id: str) -> str:
    """Hash: what the call message of a session is made from (steps/messages.py) and what was written."""
    return f"cs:callmsg:{session_id}"


def call_message_lock_key(session_id: str) -> str:
    return f"cs:callmsg-lock:{session_id}"


def roster_key(cid: str) -> str:
    return f"cs:roster:{cid}"


def roster_fill_key(cid: str) -> str:
    return f"cs:rosterfill:{cid}"


def rate_key(window: int, user_id: str) -> str:
    return f"cs:callrate:{window}:{user_id}"


def refusal_key(cid: str, user_id: str) -> str:
    """A "no" the calls API gave `user_id` in `cid`, kept a few seconds (user ids and cids hold no space)."""
    return f"cs:no:{cid} {user_id}"


def member_queries_key(window: int, cid: str) -> str:
    """QueryMembers lookups made for `cid` in a rate window."""
    return f"cs:mq:{window}:{cid}"


def unauthenticated_key(window: int, address: str) -> str:
    """Requests from a client address the calls API answered 401 in a rate window."""
    return f"cs:authfail:{window}:{address}"


def owed_key(call_id: str) -> str:
    """A reconcile owed to the call's channel: set (to a token) in the step that changes the call's
    record, dropped by the reconcile after it (State.settle_owed). A change recorded without its
    reconcile (a task that failed before it, the calls API's adoption) is so reconciled by the
    next event of the call, even one that changes nothing."""
    return f"cs:owed:{call_id}"
