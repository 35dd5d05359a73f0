from worker.core.actions import ReadChannel, Recheck, VerifyCall, WriteFields
from worker.core.events import CallFields
from worker.core.reconcile import (
    INACTIVE,
    BoundCall,
    Channel,
    busy_wait,
    call_id_turned_off_by_client,
    claim_since,
    desired_state,
    open_call_to_end_for_client,
    plan_channel,
)
from worker.core.sessions import Session

GRACE = 60.0
X = "call-messaging:general"


def session(status="open", started=100.0, ended=None, sid="s1"):
    return Session(sid, "r1", X, status, started, ended)


def channel(active=False, call_id=None, since=None, exists=True):
    return Channel("messaging:general", CallFields(active, call_id), exists, since)


def test_desired_state_follows_open_sessions():
    assert desired_state([]) == INACTIVE
    assert desired_state([BoundCall(X, session())]) == CallFields(True, X)
    assert desired_state([BoundCall(X, session("closed"))]) == INACTIVE
    assert desired_state([BoundCall(X, session("ending"))]) == INACTIVE
    older, newer = BoundCall("a", session(started=1.0)), BoundCall("b", session(started=2.0, sid="s2"))
    assert desired_state([newer, older]) == CallFields(True, "b")


def test_unknown_channel_is_read_first():
    assert plan_channel(Channel("m:g", None), [BoundCall(X, session())], 0, GRACE) == ReadChannel()


def test_deleted_channel_is_never_written():
    gone = Channel("messaging:general", CallFields(False, None), exists=False, missing_for="s1")  # read for s1
    assert plan_channel(gone, [BoundCall(X, session())], 0, GRACE) is None


def test_open_session_sets_fields_once():
    calls = [BoundCall(X, session())]
    assert plan_channel(channel(), calls, 0, GRACE) == WriteFields(CallFields(True, X))
    assert plan_channel(channel(True, X, since=5), calls, 0, GRACE) is None  # the echo of our write


def test_closed_session_clears_a_claim_made_before_it_closed():
    calls = [BoundCall(X, session("closed", ended=200.0))]
    assert plan_channel(channel(True, X, since=150.0), calls, 201.0, GRACE) == WriteFields(INACTIVE)


def test_claim_made_after_the_last_close_waits_for_the_grace_period():
    calls = [BoundCall(X, session("closed", ended=200.0))]
    plan = plan_channel(channel(True, X, since=300.0), calls, 301.0, GRACE)
    assert plan == Recheck(X, 360.0)


def test_claim_without_any_session_is_verified_after_grace():
    calls = [BoundCall(X, None)]
    assert plan_channel(channel(True, X, since=300.0), calls, 310.0, GRACE) == Recheck(X, 360.0)
    assert plan_channel(channel(True, X, since=300.0), calls, 400.0, GRACE) == VerifyCall(X)


def test_a_check_due_within_a_millisecond_is_due_now():
    # Six 10 s hops from a claim dated at a microsecond leave a float remainder of under a
    # microsecond: a timer of 0 ms would expire before anyone read it.
    calls = [BoundCall(X, None)]
    assert plan_channel(channel(True, X, since=300.0), calls, 360.0 - 4.8e-7, GRACE) == VerifyCall(X)
    assert plan_channel(channel(True, X, since=300.0), calls, 360.0 - 0.002, GRACE) == Recheck(X, 360.0)


def test_claim_confirmed_idle_after_grace_is_cleared():
    calls = [BoundCall(X, None, idle_confirmed_at=361.0)]
    assert plan_channel(channel(True, X, since=300.0), calls, 361.0, GRACE) == WriteFields(INACTIVE)
    early = [BoundCall(X, None, idle_confirmed_at=310.0)]  # a check made before this claim's grace ran out
    assert plan_channel(channel(True, X, since=300.0), early, 361.0, GRACE) == VerifyCall(X)


def test_claim_of_an_unbound_or_nameless_call_is_cleared():
    assert plan_channel(channel(True, None, since=1.0), [], 2.0, GRACE) == WriteFields(INACTIVE)


def test_stray_call_id_without_active_is_removed():
    assert plan_channel(channel(False, X), [BoundCall(X, None)], 0, GRACE) == WriteFields(INACTIVE)


def test_claim_since_is_kept_while_the_same_call_is_claimed():
    first = Channel("m:g", CallFields(True, X), True, 100.0)
    assert claim_since(first, CallFields(True, X), 150.0) == 100.0
    assert claim_since(first, CallFields(True, "other"), 150.0) == 150.0
    assert claim_since(first, INACTIVE, 150.0) is None
    assert claim_since(None, CallFields(True, X), 150.0) == 150.0


def test_a_members_event_showing_the_claim_restarts_it():
    first = Channel("m:g", CallFields(True, X), True, 100.0)  # e.g. callsync's claim for the last session
    assert claim_since(first, CallFields(True, X), 150.0, by_member=True) == 150.0  # maybe a new call
    assert claim_since(first, INACTIVE, 150.0, by_member=True) is None


def test_client_ending_the_call_ends_the_open_session():
    calls = [BoundCall(X, session())]
    before, after = CallFields(True, X), INACTIVE
    assert open_call_to_end_for_client(before, after, False, calls) == BoundCall(X, session())
    # Another channel's call is never among a channel's calls: its End call ends nothing.
    assert open_call_to_end_for_client(CallFields(True, "call-messaging:team"), after, False, calls) is None
    assert open_call_to_end_for_client(before, after, True, calls) is None  # a server write (maybe ours)
    assert open_call_to_end_for_client(INACTIVE, after, False, calls) is None
    assert open_call_to_end_for_client(before, CallFields(True, X), False, calls) is None
    assert open_call_to_end_for_client(before, after, False, [BoundCall(X, session("closed"))]) is None
    assert open_call_to_end_for_client(None, after, False, calls) is None
    assert call_id_turned_off_by_client(before, after, False) == X  # what is worth reading the calls for
    assert (
        call_id_turned_off_by_client(before, after, True) is None and call_id_turned_off_by_client(INACTIVE, after, False) is None
    )


def test_a_claim_within_the_clocks_disagreement_of_an_end_is_asked_about_not_cleared():
    calls = [BoundCall(X, session("closed", started=100.0, ended=200.0))]
    assert plan_channel(channel(True, X, since=197.5), calls, 202.0, GRACE) == WriteFields(INACTIVE)  # clearly before
    for since in (198.5, 200.0, 201.5):  # maybe a member's new call, its open not here yet
        assert plan_channel(channel(True, X, since=since), calls, 202.0, GRACE) == Recheck(X, since + GRACE)


def test_callsyncs_own_claim_of_a_session_is_stale_once_it_ended_however_short():
    calls = [BoundCall(X, session("closed", started=100.0, ended=100.5))]  # dated by the session's own start
    assert plan_channel(channel(True, X, since=100.0), calls, 101.0, GRACE) == WriteFields(INACTIVE)


def test_a_missing_channel_is_read_again_once_per_session_of_its_call():
    missing = Channel("messaging:general", CallFields(False, None), exists=False, missing_for="s1")
    assert plan_channel(missing, [BoundCall(X, session(sid="s1"))], 0, GRACE) is None
    assert plan_channel(missing, [BoundCall(X, session(sid="s2"))], 0, GRACE) == ReadChannel()
    assert plan_channel(missing, [BoundCall(X, session("closed", sid="s2"))], 0, GRACE) is None


def test_a_busy_channel_is_asked_for_again_soon_unless_held_long() -> None:
    assert busy_wait(None) == busy_wait(0.0) == busy_wait(0.5) == 0.25  # the usual hold: milliseconds
    assert busy_wait(4.0) == 1.0  # a quarter of the hold so far
    assert busy_wait(40.0) == 5.0  # a lock a dead holder left: every 5 s, not four times a second
