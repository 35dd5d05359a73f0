"""lua/record_peer.lua holds to core.peers.merge in any order, on fakeredis and real Redis, and
keeps at most MAX_PEERS_PER_SESSION peers per session."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core import peers as core
from worker.core.peers import Peer, SessionPeers
from worker.store.keys import CLOSED_TTL, peers_key
from worker.store.peers import read_peers, record_peer

T0 = 1_800_000_000.0
times = st.none() | st.integers(0, 10_000).map(lambda ms: T0 + ms / 1000)
reports = st.builds(Peer, st.sampled_from(["p1", "p2"]), st.none() | st.sampled_from(["ann", "bob"]), times, times)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(reports, min_size=1, max_size=6))
def test_the_lua_merge_is_the_cores(redis_client, many: list[Peer]) -> None:
    redis_client.delete(peers_key("s"))
    expected: dict[str, Peer] = {}
    for report in many:
        changed = record_peer(redis_client, "s", report)
        before = expected.get(report.peer_id)
        expected[report.peer_id] = core.merge(before, report)
        assert changed == (expected[report.peer_id] != before)
    assert read_peers(redis_client, "s") == SessionPeers(tuple(expected[k] for k in sorted(expected)))
    assert 0 < redis_client.ttl(peers_key("s")) <= CLOSED_TTL


def test_past_the_bound_joins_are_counted_not_kept(redis_client) -> None:
    for n in range(4):
        record_peer(redis_client, "s", Peer(f"p{n}", f"u{n}", T0 + n), bound=2)
    record_peer(redis_client, "s", Peer("p3", "u3", T0 + 3, T0 + 9), bound=2)  # the leave of a peer not kept: nothing
    record_peer(redis_client, "s", Peer("p0", "u0", T0, T0 + 5), bound=2)  # a kept peer still leaves
    got = read_peers(redis_client, "s")
    assert got.overflow == 2 and [p.peer_id for p in got.peers] == ["p0", "p1"] and got.peers[0].left_at == T0 + 5
