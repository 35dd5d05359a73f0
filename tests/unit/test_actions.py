"""worker/core/actions.py: scheduled actions carry their task's name and arguments."""

from worker.core import actions
from worker.core.actions import CheckSession, EndSession, Reconcile, RecordOwner


def test_a_scheduled_action_is_its_task_and_its_arguments_in_order():
    assert (Reconcile("messaging:general").task, Reconcile("messaging:general").args()) == (
        actions.RECONCILE,
        ("messaging:general",),
    )
    end = EndSession("call-messaging:general", "s1", "maximum session length reached")
    assert end.task == actions.END_SESSION
    assert end.args() == ("call-messaging:general", "s1", "maximum session length reached")
    assert CheckSession("room-a", "s2").task == actions.CHECK_SESSION and CheckSession("room-a", "s2").args() == ("room-a", "s2")


def test_the_task_names_are_distinct_and_are_the_wire_names():
    # Queued messages and dead letters keep these names: they must not change with the code.
    assert len(set(actions.TASK_NAMES)) == len(actions.TASK_NAMES) == 10
    assert actions.Resync(full=True).args() == (True, False) and actions.Resync.task == "callsync.resync"
    assert actions.DRAIN_WRITES == "callsync.drain_writes" and actions.WRITE_CALL_MESSAGE == "callsync.write_call_message"
    assert RecordOwner("standup", "m:g").args() == ("standup", "m:g") and RecordOwner.task == "callsync.record_owner"
    assert actions.RECONCILE == "callsync.reconcile_channel" and actions.APPLY_HMS_EVENT == "callsync.apply_hms_event"
    assert all(name.startswith("callsync.") for name in actions.TASK_NAMES)
