"""The ownership rule (worker/core/binding.py): a call belongs to one channel."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.core.binding import (
    call_ids_of_channel,
    call_of_room,
    cid_of_room,
    default_call_id,
    derived_room_name,
    description_step,
    is_reserved,
    may_bind,
    owner_description,
    owner_in_description,
    owner_of,
)
from worker.core.events import valid_call_id

CIDS = st.builds(
    lambda kind, cid_id: f"{kind}:{cid_id}",
    st.text("abcAB_-", min_size=1, max_size=8),
    st.text("abcXYZ09.-:_", min_size=1, max_size=12),
)
CALL_IDS = st.text("abcABC09.-:_", min_size=1, max_size=40).filter(lambda c: valid_call_id(c) is not None)


def test_the_default_call_id_is_the_reference_clients_room_name() -> None:
    assert default_call_id("messaging:general") == "call-messaging:general"
    assert cid_of_room("call-messaging:general") == "messaging:general"
    assert cid_of_room("standup") is None and cid_of_room(None) is None


@given(CIDS)
def test_a_channels_default_call_names_it_exactly(cid: str) -> None:
    assert cid_of_room(default_call_id(cid)) == cid
    assert owner_of(default_call_id(cid), recorded="messaging:someone-else") == cid


def test_a_reference_id_belongs_to_the_channel_it_names_exactly_whoever_bound_it() -> None:
    assert owner_of("call-messaging:team", None) == "messaging:team"
    assert owner_of("call-messaging:TEAM", None) == "messaging:TEAM"
    assert not may_bind("messaging:TEAM", "call-messaging:team", None)
    assert not may_bind("messaging:evil", "call-messaging:team", None)
    assert may_bind("messaging:team", "call-messaging:team", "messaging:evil")  # a stray record changes nothing


def test_a_free_form_id_belongs_to_the_first_channel_that_bound_it() -> None:
    assert owner_of("standup", None) is None
    assert may_bind("messaging:a", "standup", None)
    assert may_bind("messaging:a", "standup", "messaging:a")
    assert not may_bind("messaging:b", "standup", "messaging:a")
    assert owner_of("standup", "messaging:a") == "messaging:a"


def test_a_channels_calls_are_its_bindings_and_its_default_compared_exactly() -> None:
    assert call_ids_of_channel("messaging:a", ["x"]) == ["x", "call-messaging:a"]
    assert call_ids_of_channel("messaging:a", ["call-messaging:a", "x"]) == ["call-messaging:a", "x"]
    # Another case is another call (another channel's, by its form): the default is still added.
    assert call_ids_of_channel("messaging:a", ["CALL-Messaging:A"]) == ["CALL-Messaging:A", "call-messaging:a"]


def test_a_derived_room_name_encodes_the_case_and_reads_back() -> None:
    assert derived_room_name("call-messaging:TEAM") == "call-messaging:team--cs1e000"
    assert derived_room_name("call-messaging:team") == "call-messaging:team--cs0"
    assert call_of_room("call-messaging:team--cs1e000") == "call-messaging:TEAM"
    assert call_of_room("call-messaging:team") == "call-messaging:team"
    assert is_reserved("x--cs0") and not is_reserved("x--cs") and not is_reserved("standup")
    assert valid_call_id("call-messaging:team--cs0") is None  # no call id has a room's derived form


@given(CALL_IDS)
def test_every_call_id_reads_back_from_its_derived_room_name(call_id: str) -> None:
    name = derived_room_name(call_id)
    assert call_of_room(name) == call_id and call_of_room(call_id) == call_id
    assert valid_call_id(name) is None and is_reserved(name)


@given(st.lists(st.text("aAbB:-", min_size=1, max_size=6), min_size=2, max_size=6, unique=True))
def test_ids_that_differ_only_in_case_never_share_a_room_name(spellings: list[str]) -> None:
    """100ms compares room names without case: every id keeps its own room, plain or derived."""
    variants = [s for s in spellings if s.lower() == spellings[0].lower()] or spellings[:1]
    rooms = {derived_room_name(v).lower() for v in variants}
    assert len(rooms) == len(variants)
    assert all(room not in {v.lower() for v in variants} for room in rooms)


@given(CIDS, CIDS, st.one_of(CALL_IDS, CIDS.map(default_call_id)), st.one_of(st.none(), CIDS))
def test_no_channel_but_the_owner_binds_a_call(first: str, other: str, call_id: str, recorded: str | None) -> None:
    """Over pairs of channels and call ids of every form: at most one of two different channels
    may bind a call, and it is the call's owner."""
    if first == other:
        return
    binders = {cid for cid in (first, other) if may_bind(cid, call_id, recorded)}
    owner = owner_of(call_id, recorded)
    assert binders == ({owner} & {first, other} if owner is not None else {first, other})


def test_the_owner_is_recorded_in_the_rooms_description_and_read_back() -> None:
    assert owner_in_description(owner_description("messaging:team")) == "messaging:team"
    assert owner_in_description("the weekly standup") is None and owner_in_description(None) is None
    assert description_step(None, "messaging:a") == owner_description("messaging:a")
    assert description_step("", "messaging:a") == owner_description("messaging:a")
    assert description_step("the app's own words", "messaging:a") is None  # never overwritten
    assert description_step(owner_description("messaging:b"), "messaging:a") is None
