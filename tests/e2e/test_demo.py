"""`callsync demo` as a newcomer runs it: embedded Valkey, stand-ins, real roles, a readable story."""

from __future__ import annotations

import json
import re
import subprocess
import time

from worker.cli import launch


def test_the_demo_tells_the_whole_story_within_a_minute(tmp_path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [*launch.CALLSYNC, "demo", "--logs", str(tmp_path)],
        env=launch.clean_environment(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert elapsed < 60, elapsed
    scenes = (
        "1. A call opens",
        "2. A duplicate arrives",
        "3. Someone ends",
        "4. A tab crashes",
        "5. A session outlives",
        "6. The calls API",
        "7. Call messages",
    )
    for scene in scenes:
        assert scene in out
    changes = re.findall(r"Stream (messaging:\w+) (callActive=\w+).*\(written by (callsync|a client)\)", out)
    assert (
        changes
        == [
            ("messaging:general", "callActive=true", "callsync"),
            ("messaging:general", "callActive=false", "a client"),
            ("messaging:random", "callActive=true", "a client"),
            ("messaging:random", "callActive=false", "callsync"),
            ("messaging:townhall", "callActive=true", "callsync"),
            ("messaging:townhall", "callActive=false", "callsync"),
            ("messaging:lobby", "callActive=true", "callsync"),
            ("messaging:lobby", "callActive=false", "callsync"),
        ]
        + [("messaging:lobby", "callActive=true", "callsync"), ("messaging:lobby", "callActive=false", "callsync")] * 2
    )
    assert '200 {"status": "duplicate"}' in out
    assert out.count("/end-room (end the session for everyone)") == 3
    assert "10 channel writes, 3 end-room; every channel ended as it should." in out
    # Scene 7: one message per session, updated at close (rule 13).
    assert re.search(r"SendMessage callsync-\w+: 'Call started' \(status live\)", out)
    assert re.search(r"UpdateMessage callsync-\w+: 'Call ended · \d+ s' \(status ended\)", out)
    assert re.search(r"UpdateMessage callsync-\w+: 'Missed call' \(status missed\)", out)
    [listed] = re.findall(r"bob → callsync +GET call-messaging:lobby: (\[.*\])", out)
    assert sorted(peer["user_id"] for peer in json.loads(listed)) == ["alice", "bob"]  # joined in the same second: either order
    assert re.search(r"alice → callsync +POST /channels/messaging/lobby/call: 200 room \w+, a 100ms token for alice", out)
    assert re.search(r"bob → callsync +POST /calls/call-messaging:lobby: 200 room \w+, a 100ms token for bob", out)
    refused = r'mallory → callsync +POST /calls/call-messaging:lobby: 403 \{"error": "not a member of channel messaging:lobby"\}'
    assert re.search(refused, out)
    assert 'POST /calls/call-messaging:lobby/end: 200 {"status": "ending"}' in out
    assert "eyJ" not in out  # no token is shown
    assert (tmp_path / "worker.log").exists()


def test_temporary_logs_go_when_the_story_held_and_stay_when_it_did_not(tmp_path) -> None:
    from worker.cli.demo import Teller, _forget_unless_failed

    said: list[str] = []
    held, failed = tmp_path / "held", tmp_path / "failed"
    for folder in (held, failed):
        folder.mkdir()
        (folder / "worker.log").write_text("{}\n")
    _forget_unless_failed(held, Teller(said.append), lambda: 0)
    _forget_unless_failed(failed, Teller(said.append), lambda: 1)
    assert not held.exists() and (failed / "worker.log").exists()
    assert said == [f"the roles' logs are kept in {failed}"]
