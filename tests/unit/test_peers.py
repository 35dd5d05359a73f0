"""core.peers: one peer's reports merge the same in any order; who is present, who came."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from worker.core.peers import Peer, SessionPeers, merge

times = st.none() | st.integers(0, 10_000).map(float)
reports = st.builds(Peer, st.just("p1"), st.none() | st.sampled_from(["ann", "bob"]), times, times)


@given(st.lists(reports, min_size=1, max_size=5))
def test_reports_of_a_peer_merge_the_same_in_any_order_and_repeat(many: list[Peer]) -> None:
    def fold(order: tuple[Peer, ...] | list[Peer]) -> Peer:
        known = None
        for report in order:
            known = merge(known, report)
        assert known is not None
        return known

    first = fold(many)
    for order in itertools.islice(itertools.permutations(many), 24):
        again = fold([*order, *order])
        assert (again.joined_at, again.left_at) == (first.joined_at, first.left_at)
        assert (again.user_id is None) == (first.user_id is None)


def test_a_peer_that_left_is_not_present_and_a_rejoin_is_a_new_peer() -> None:
    peers = SessionPeers(
        (Peer("a1", "ann", 10.0, 20.0), Peer("a2", "ann", 30.0), Peer("b1", "bob", 15.0), Peer("s1", None, 12.0))
    )
    assert [p.peer_id for p in peers.present()] == ["s1", "b1", "a2"]
    assert peers.user_ids() == ["ann", "bob"]  # by first join; a peer without a user id counts no user


def test_completing_with_the_platforms_record_keeps_the_earliest_join_and_latest_leave() -> None:
    ours = SessionPeers((Peer("a1", "ann", 10.0),), overflow=3)
    theirs = [Peer("a1", None, 9.0, 50.0), Peer("b1", "bob", 11.0, 40.0)]
    done = ours.with_peers(theirs)
    assert done.peers == (Peer("a1", "ann", 9.0, 50.0), Peer("b1", "bob", 11.0, 40.0)) and done.overflow == 3
    assert done.user_ids() == ["ann", "bob"] and done.present() == []
