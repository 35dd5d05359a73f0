"""The write queue's `messages` endpoint (docs/behaviour.md, rules 8 and 13), on fakeredis and real
Redis: call messages keyed by call session id, paced at CALLSYNC_STREAM_MESSAGE_RATE within both of
Stream's windows (per minute, and the minute's limit / 30 in any second: "Send Message" and "Update
Message" are 1,000 a minute per app, https://getstream.io/chat/docs/react/rate-limits/), a lower
reported X-RateLimit-Limit adopted, and a pause or a line of its own, apart from channel updates."""

from __future__ import annotations

import itertools

from worker.core import pacing
from worker.ops import status
from worker.settings import Rate, Settings
from worker.steps import messages, sync, writes
from worker.store.keys import WRITE_QUEUE_PREFIX
from worker.store.writequeue import WriteQueue, queued

T0 = 1_800_000_000.0
DEFAULT = Settings().stream_message_rate  # CALLSYNC_STREAM_MESSAGE_RATE's default, 300/m


def messages_queue(client, rate: Rate = DEFAULT) -> WriteQueue:
    return WriteQueue(client, "messages", rate.count, rate.period)


def channels_queue(client) -> WriteQueue:
    return WriteQueue(client, "channels", 300, 60.0)


def drain_all(queue: WriteQueue, now: float) -> list[tuple[str, float]]:
    """Drain the whole line as the drain task does (each write in its slot): (key, start) pairs."""
    assert queue.take_turn("drainer")
    written = []
    while True:
        step = queue.next("drainer", now)
        if step.kind == "empty":
            return written
        if step.kind == "wait":
            now += step.seconds
            continue
        while (wait := queue.slot("drainer", now)) > 0:
            now += wait
        written.append((step.key, now))
        queue.done(step.key)


def test_the_endpoint_is_registered_with_its_own_setting_and_replay_task():
    endpoint = writes.ENDPOINTS["messages"]
    assert endpoint is messages.MESSAGES and endpoint.task == "callsync.write_call_message"
    settings = Settings(stream_message_rate=Rate(60, 60.0), stream_update_rate=Rate(300, 60.0))
    assert endpoint.rate(settings) == Rate(60, 60.0) and sync.CHANNELS.rate(settings) == Rate(300, 60.0)
    assert (DEFAULT.count, DEFAULT.period) == (300, 60.0)
    assert (endpoint.ceiling_source, endpoint.throttled_source) == ("message_ceiling", "message_429")


def test_a_session_offered_at_open_peers_and_close_is_one_entry_in_its_first_place(redis_client):
    queue = messages_queue(redis_client)
    for n, session in enumerate(["s-1", "s-2", "s-1", "s-3", "s-1", "s-2"]):  # opens, then closes
        assert not queue.offer(session, T0 + n, T0 + n, direct=False).write_now
    assert queue.depth() == (3, T0)
    assert [key for key, _ in drain_all(queue, T0 + 10)] == ["s-1", "s-2", "s-3"]
    assert redis_client.zcard(f"{WRITE_QUEUE_PREFIX}messages") == 0


def test_a_session_offered_again_while_being_written_is_written_again_after(redis_client):
    queue = messages_queue(redis_client)
    queue.offer("s-1", T0, T0, direct=False)
    assert queue.take_turn("d")
    assert queue.next("d", T0).key == "s-1"  # its "Call started" is being sent...
    queue.offer("s-1", T0 + 1, T0 + 1, direct=False)  # ...when it closes: never lost
    queue.done("s-1")
    assert queue.depth() == (1, T0 + 1)
    assert queue.next("d", T0 + 2).key == "s-1"


def test_a_burst_is_spread_evenly_within_both_of_streams_windows(redis_client):
    queue = messages_queue(redis_client)
    for n in range(700):  # 700 sessions opening at once
        queue.offer(f"s-{n}", T0, T0, direct=False)
    starts = [at for _, at in drain_all(queue, T0)]
    assert len(starts) == 700
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.2 - 1e-6  # evenly: one every 60/300 s
    for i, start in enumerate(starts):
        in_minute = sum(1 for t in starts[i:] if t < start + 60.0)
        in_second = sum(1 for t in starts[i:] if t < start + 1.0)
        assert in_minute <= 300 and in_second <= 300 // 30


def test_a_lower_reported_limit_is_adopted_and_a_higher_one_is_not(redis_client):
    queue = messages_queue(redis_client)
    queue.report(60, T0)  # X-RateLimit-Limit: 60 a minute
    assert pacing.interval(DEFAULT.count, DEFAULT.period, queue.pace(), T0) == 1.0
    queue.report(1000, T0 + 1)  # Stream's default for messages: the setting (300/m) stays the ceiling
    assert pacing.interval(DEFAULT.count, DEFAULT.period, queue.pace(), T0 + 1) == 0.2
    assert channels_queue(redis_client).pace().reported is None  # channel updates heard nothing


def test_a_429_on_messages_pauses_messages_only(redis_client):
    messages_line, channels_line = messages_queue(redis_client), channels_queue(redis_client)
    messages_line.report(None, T0, pause_until=T0 + 30)  # a 429 on a send, Retry-After: 30
    assert not messages_line.offer("s-1", T0, T0).write_now
    assert messages_line.take_turn("d")
    step = messages_line.next("d", T0 + 1)
    assert step.kind == "wait" and abs(step.seconds - 29) < 1e-6
    assert channels_line.offer("messaging:general", T0 + 1, T0 + 1).write_now  # channel updates go on
    assert messages_line.next("d", T0 + 30).key == "s-1"  # then the message, late, once


def test_a_429_on_channel_updates_does_not_pause_messages(redis_client):
    channels_line, messages_line = channels_queue(redis_client), messages_queue(redis_client)
    channels_line.report(None, T0, pause_until=T0 + 60)
    assert not channels_line.offer("messaging:general", T0, T0).write_now
    messages_line.offer("s-1", T0, T0, direct=False)
    assert [key for key, _ in drain_all(messages_line, T0)] == ["s-1"]


def test_status_lists_the_messages_queue(redis_client):
    messages_queue(redis_client).offer("s-1", T0, T0, direct=False)
    messages_queue(redis_client).offer("s-2", T0 + 5, T0 + 5, direct=False)
    assert queued(redis_client) == {"channels": (0, None), "messages": (2, T0)}
    gathered = status.gather(redis_client, T0 + 12)
    assert gathered["write_queues"]["messages"] == {"waiting": 2, "oldest_wait_seconds": 12.0}
    assert "queue messages" in status.render(gathered) and "2 waiting (oldest 12s)" in status.render(gathered)
