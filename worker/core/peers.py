"""Who joined a call session: the peers 100ms reported (peer.join.success / peer.leave.success),
kept per session with a bound, merged in any order.

100ms gives every join its own peer id (a rejoin is a new peer), so a peer is joined at most once
and left at most once: two reports of one peer merge by taking the earliest join, the latest leave
and any user id, which makes the merge commutative and idempotent (any delivery order, any
duplicate, gives the same record). `worker/store/lua/record_peer.lua` is the same rule in Lua.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# A webinar's thousand viewers must not grow a session's record without limit: peers past this
# bound are counted (`SessionPeers.overflow`), not kept.
MAX_PEERS_PER_SESSION = 1000


@dataclass(frozen=True)
class Peer:
    peer_id: str
    user_id: str | None
    joined_at: float | None
    left_at: float | None = None

    @property
    def present(self) -> bool:
        return self.left_at is None


@dataclass(frozen=True)
class SessionPeers:
    """The peers recorded for one session, and how many joins were past the bound."""

    peers: tuple[Peer, ...] = ()
    overflow: int = 0

    def present(self) -> list[Peer]:
        """Peers in the session now (joined, not left), earliest join first."""
        return sorted((p for p in self.peers if p.present), key=lambda p: (p.joined_at or 0.0, p.peer_id))

    def user_ids(self) -> list[str]:
        """Distinct user ids that joined, in order of their first join."""
        seen: dict[str, float] = {}
        for peer in self.peers:
            if peer.user_id is not None:
                at = peer.joined_at if peer.joined_at is not None else float("inf")
                seen[peer.user_id] = min(at, seen.get(peer.user_id, float("inf")))
        return sorted(seen, key=lambda user: (seen[user], user))

    def with_peers(self, more: Iterable[Peer]) -> SessionPeers:
        """These peers completed by `more` (e.g. 100ms's own record of the session), merged per peer id."""
        merged = {p.peer_id: p for p in self.peers}
        for peer in more:
            merged[peer.peer_id] = merge(merged.get(peer.peer_id), peer)
        return SessionPeers(tuple(merged[k] for k in sorted(merged)), self.overflow)


def merge(known: Peer | None, news: Peer) -> Peer:
    """One peer's record after `news` about it (any order, any repeat)."""
    if known is None:
        return news
    return Peer(
        peer_id=known.peer_id,
        user_id=known.user_id if known.user_id is not None else news.user_id,
        joined_at=_earliest(known.joined_at, news.joined_at),
        left_at=_latest(known.left_at, news.left_at),
    )


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
