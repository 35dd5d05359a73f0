"""What the core asks the steps to do, as values; and the Celery task each scheduled action runs.

The core decides and returns these; a step only carries them out (worker/steps). The task
names are written here once: the receiver enqueues by them, the workers register under them,
dead letters keep them.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any, ClassVar

from worker.core.events import CallFields
from worker.core.sessions import Session

# --- task names: the wire names of callsync's Celery tasks (kept by queued messages and dead letters)
APPLY_STREAM_EVENT = "callsync.apply_stream_event"
APPLY_HMS_EVENT = "callsync.apply_hms_event"
RECONCILE = "callsync.reconcile_channel"
END_SESSION = "callsync.end_session"
CHECK_SESSION = "callsync.check_session"
SWEEP = "callsync.sweep"
RECORD_OWNER = "callsync.record_owner"
WRITE_CALL_MESSAGE = "callsync.write_call_message"  # replays a call message's dead letter: in line again
DRAIN_WRITES = "callsync.drain_writes"
RESYNC = "callsync.resync"
TASK_NAMES = (
    APPLY_STREAM_EVENT,
    APPLY_HMS_EVENT,
    RECONCILE,
    END_SESSION,
    CHECK_SESSION,
    SWEEP,
    RECORD_OWNER,
    WRITE_CALL_MESSAGE,
    DRAIN_WRITES,
    RESYNC,
)


# --- a channel's next step (core.reconcile.plan_channel) ---------------------------------
@dataclass(frozen=True)
class ReadChannel:
    """The channel's fields are unknown (or it was missing): read it from Stream, then plan again."""


@dataclass(frozen=True)
class WriteFields:
    """Partially update the channel's call fields to `fields`."""

    fields: CallFields


@dataclass(frozen=True)
class VerifyCall:
    """Ask 100ms now whether `call_id`'s room runs a session, then plan again."""

    call_id: str


@dataclass(frozen=True)
class Recheck:
    """Ask 100ms about `call_id` at `at`, not before: reconcile the channel again then."""

    call_id: str
    at: float


ChannelStep = ReadChannel | WriteFields | VerifyCall | Recheck | None  # None: the channel is as it should be


# --- what a session check, an end or an adoption concludes (core.checks) ------------------
@dataclass(frozen=True)
class RecordClosed:
    """100ms runs `session` no more: record it closed at `at`."""

    session: Session
    at: float


@dataclass(frozen=True)
class RecordOpen:
    """100ms runs `session`, which callsync never heard of: record it open (adopt it)."""

    session: Session
    at: float


SessionChange = RecordClosed | RecordOpen  # what the store records of a conclusion (State.record_session)


@dataclass(frozen=True)
class EndRoom:
    """`session` is the one 100ms runs in its room: end the room for everyone."""

    session: Session
    reason: str


# --- scheduled work: each runs as one Celery task ------------------------------------------
@dataclass(frozen=True)
class Scheduled:
    """A task to run later; its fields, in order, are the task's arguments."""

    task: ClassVar[str]

    def args(self) -> tuple[Any, ...]:
        return astuple(self)


@dataclass(frozen=True)
class Reconcile(Scheduled):
    task: ClassVar[str] = RECONCILE
    cid: str


@dataclass(frozen=True)
class EndSession(Scheduled):
    task: ClassVar[str] = END_SESSION
    call_id: str
    session_id: str
    reason: str


@dataclass(frozen=True)
class CheckSession(Scheduled):
    task: ClassVar[str] = CHECK_SESSION
    call_id: str
    session_id: str


@dataclass(frozen=True)
class RecordOwner(Scheduled):
    """Write `cid`, the first channel to bind the free-form `call_id`, into its 100ms room."""

    task: ClassVar[str] = RECORD_OWNER
    call_id: str
    cid: str


@dataclass(frozen=True)
class DrainWrites(Scheduled):
    """Hold `endpoint`'s turn and write its queued keys at its ceiling (worker/steps/writes.py)."""

    task: ClassVar[str] = DRAIN_WRITES
    endpoint: str


@dataclass(frozen=True)
class Resync(Scheduled):
    """Read the truth back from both platforms (docs/behaviour.md, rule 12): `full` also looks for
    channels callsync knows nothing of; `goes_on` continues the run under way (its next slice)."""

    task: ClassVar[str] = RESYNC
    full: bool = False
    goes_on: bool = False
