"""Fixtures of the step tests: a World (fakeredis, then real Redis; the stand-ins in process) and
the calls API's web app against the stand-ins on sockets (tests/support/calls_api.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from standins import FakeHms, FakeStream, serve
from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from tests.support.calls_api import CID, Served, Swap, Web, web_for
from tests.support.world import World


@pytest.fixture
def world(request: pytest.FixtureRequest, redis_client: redis.Redis) -> World:
    """The steps' World on `redis_client` (fakeredis, then real Redis). A module or a test
    sets the World's settings with `pytest.mark.world(setting=value, ...)`, or runs under
    several with `pytest.mark.parametrize("world", [{...}, ...], indirect=True)`."""
    marker = request.node.get_closest_marker("world")
    return World(redis_client, **(marker.kwargs if marker else {}), **getattr(request, "param", {}))


@pytest.fixture(scope="module")
def sockets() -> Iterator[tuple[Swap, str, Swap, str]]:
    stream, hms = Swap(), Swap()
    stream_url, stop_stream = serve(stream)
    hms_url, stop_hms = serve(hms)
    yield stream, stream_url, hms, hms_url
    stop_stream()
    stop_hms()


@pytest.fixture
def served(sockets: tuple[Swap, str, Swap, str]) -> Served:
    stream, hms = FakeStream(KEY, SECRET), FakeHms(HMS_KEY, HMS_SECRET)
    stream.create_channel(CID)
    for user in ("alice", "bob"):
        stream.add_member(CID, user)
    stream.create_channel("messaging:random")
    stream.add_member("messaging:random", "mallory")
    stream_swap, stream_url, hms_swap, hms_url = sockets
    stream_swap.app, hms_swap.app = stream.app, hms.app
    return stream, hms, stream_url, hms_url


@pytest.fixture
def web(redis_client: redis.Redis, served: Served) -> Web:
    return web_for(served, redis_client)
