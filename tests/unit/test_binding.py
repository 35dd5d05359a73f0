"""The binding rule (worker/core/binding.py), and load_channel.lua holding to it in Redis."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core.binding import call_ids_of_channel, channels_of_call, cid_of_room, default_call_id
from worker.store.state import State

CIDS = st.builds(
    lambda kind, cid_id: f"{kind}:{cid_id}",
    st.text("abcAB_-", min_size=1, max_size=8),
    st.text("abcXYZ09.-:_", min_size=1, max_size=12),
)


def test_the_default_call_id_is_the_reference_clients_room_name() -> None:
    assert default_call_id("messaging:general") == "call-messaging:general"
    assert cid_of_room("call-messaging:general") == "messaging:general"
    assert cid_of_room("standup") is None and cid_of_room(None) is None


@given(CIDS)
def test_a_channels_default_call_binds_back_to_it(cid: str) -> None:
    assert cid_of_room(default_call_id(cid)) == cid


def test_a_calls_channels_are_its_bindings_and_the_one_its_name_binds() -> None:
    assert channels_of_call("call-messaging:a", ["messaging:b", ""]) == {"messaging:a", "messaging:b"}
    assert channels_of_call("standup", ["messaging:b"]) == {"messaging:b"}
    assert channels_of_call("standup", []) == set()


def test_a_channels_calls_add_its_default_unless_a_binding_spells_it_otherwise() -> None:
    assert call_ids_of_channel("messaging:a", ["x"]) == ["x", "call-messaging:a"]
    assert call_ids_of_channel("messaging:a", ["CALL-Messaging:A", "x"]) == ["CALL-Messaging:A", "x"]
    assert call_ids_of_channel("messaging:a", []) == ["call-messaging:a"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cid=CIDS, others=st.lists(st.text("abcXY09-:", min_size=1, max_size=10), unique=True, max_size=4), data=st.data())
def test_load_channel_lua_lists_the_calls_core_binding_names(redis_client, cid: str, others: list[str], data) -> None:
    """load_channel.lua adds the default call id itself (atomically with the read): it must name
    the same calls, in the same order, as core.binding.call_ids_of_channel."""
    redis_client.flushdb()
    default = default_call_id(cid)
    spellings = st.sampled_from([default, default.upper(), default.swapcase()])
    bound = others + data.draw(st.lists(spellings, unique=True, max_size=1))
    bound = data.draw(st.permutations(bound))
    state = State(redis_client)
    for at, call_id in enumerate(bound):
        state.bind(cid, call_id, 1000.0 + at)
    loaded = state.load(cid)
    assert loaded is not None
    assert [c.call_id for c in loaded.calls] == call_ids_of_channel(cid, bound)
