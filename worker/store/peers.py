"""The peers of each call session (core.peers), one hash per session (keys.peers_key).

Kept past the session's close for as long as a closed session's record (CLOSED_TTL, longer than
the longest session), refreshed at each report; `lua/record_peer.lua` merges a report in one step.
"""

from __future__ import annotations

import redis

from worker.core.peers import MAX_PEERS_PER_SESSION, Peer, SessionPeers
from worker.store import scripts
from worker.store.keys import CLOSED_TTL, PEERS_OVERFLOW, peers_key
from worker.store.scripts import Script

_RECORD = Script.named("record_peer", "peer_merge")


def record_peer_args(peer: Peer | None, bound: int = MAX_PEERS_PER_SESSION) -> list[str | int]:
    """lua/peer_merge.lua's arguments after the key (peer id "": no peer to record)."""
    if peer is None:
        return ["", "", "", "", bound, CLOSED_TTL, PEERS_OVERFLOW]
    return [peer.peer_id, peer.user_id or "", _ms(peer.joined_at), _ms(peer.left_at), bound, CLOSED_TTL, PEERS_OVERFLOW]


def record_peer_call(session_id: str, peer: Peer, bound: int = MAX_PEERS_PER_SESSION) -> scripts.ScriptCall:
    """Merge one report of `peer` into the session's record (for `scripts.run`; replies 1 if it changed)."""
    return (_RECORD, [peers_key(session_id)], record_peer_args(peer, bound))


def record_peer(client: redis.Redis, session_id: str, peer: Peer, bound: int = MAX_PEERS_PER_SESSION) -> bool:
    """Merge one report; True when it told something new."""
    return bool(_RECORD(client, *record_peer_call(session_id, peer, bound)[1:]))


def read_peers(client: redis.Redis, session_id: str) -> SessionPeers:
    raw = client.hgetall(peers_key(session_id))
    overflow, peers = 0, []
    for field, value in raw.items():
        name, text = _str(field), _str(value)
        if name == PEERS_OVERFLOW:
            overflow = int(text)
            continue
        joined, left, user = text.split(",", 2)
        peers.append(Peer(name, user or None, _seconds(joined), _seconds(left)))
    return SessionPeers(tuple(sorted(peers, key=lambda p: p.peer_id)), overflow)


def _ms(at: float | None) -> str:
    return "" if at is None else str(round(at * 1000))


def _seconds(ms: str) -> float | None:
    return int(ms) / 1000 if ms else None


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
