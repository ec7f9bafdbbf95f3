"""Leases (one process per run) and temporary files named by their writer: real processes, real pids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core.lease import Held, Lease, LeaseLost, acquire, history_path, read_lease
from bench.core.tempfiles import HOST, is_orphan, remove_orphans, temp_path

ROOT = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_lease(path: Path, host: str = HOST, pid: int | None = None, age_s: float = 0.0, token: str = "t0") -> None:
    now = time.time()
    path.write_text(json.dumps({"host": host, "pid": os.getpid() if pid is None else pid, "started": now - age_s,
                                "heartbeat": now - age_s, "token": token}))


def test_a_held_lease_is_refused_then_free_after_release(tmp_path):
    path = tmp_path / "lease.json"
    first = acquire(path, timeout=60)
    assert isinstance(first, Lease) and first.took_over is None
    with first:
        second = acquire(path, timeout=60)
        assert isinstance(second, Held) and second.holder.pid == os.getpid()
        assert f"pid {os.getpid()} on {HOST}" in second.describe()
        first.check()  # still ours
    assert not path.exists()
    again = acquire(path, timeout=60)
    assert isinstance(again, Lease)
    again.release()
    claims = [json.loads(line) for line in history_path(path).read_text().splitlines()]
    assert [c["event"] for c in claims] == ["claim", "claim"]
    assert {"host", "pid", "started", "heartbeat", "token"} <= set(claims[0])


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / "lease.json"
    pid = dead_pid()
    write_lease(path, pid=pid)
    lease = acquire(path, timeout=3600)
    assert isinstance(lease, Lease) and f"pid {pid} on {HOST} has ended" in lease.took_over
    lease.release()


def test_a_holder_elsewhere_is_judged_by_its_heartbeat(tmp_path):
    path = tmp_path / "lease.json"
    # a pid that is dead here says nothing about another host
    write_lease(path, host="elsewhere.example", pid=dead_pid(), age_s=5)
    assert isinstance(acquire(path, timeout=60), Held)
    write_lease(path, host="elsewhere.example", pid=dead_pid(), age_s=120)
    lease = acquire(path, timeout=60)
    assert isinstance(lease, Lease) and "no heartbeat" in lease.took_over
    lease.release()


def test_an_unreadable_lease_waits_for_the_timeout(tmp_path):
    path = tmp_path / "lease.json"
    path.write_text("")  # a claimant killed between creating the file and writing it
    assert isinstance(acquire(path, timeout=60), Held)
    old = time.time() - 120
    os.utime(path, (old, old))
    lease = acquire(path, timeout=60)
    assert isinstance(lease, Lease) and "unreadable" in lease.took_over
    lease.release()


def test_the_heartbeat_refreshes_and_a_lost_lease_is_noticed(tmp_path):
    path = tmp_path / "lease.json"
    with acquire(path, timeout=1.0):  # beats every 0.2 s
        before = read_lease(path).heartbeat
        time.sleep(0.8)
        assert read_lease(path).heartbeat > before
    lease = acquire(path, timeout=3600)  # its first beat is 30 s away: none races the takeover below
    with lease:
        lease.check()
        # another process took the run over (our heartbeat had stopped for longer than the timeout): it
        # moved our file aside and created its own
        path.rename(tmp_path / "aside")
        write_lease(path, pid=dead_pid(), token="someone-else")
        lease.beat()  # a late heartbeat goes to our old file, not over the new holder's
        assert read_lease(path).token == "someone-else"
        with pytest.raises(LeaseLost, match="taken over"):
            lease.check()
    assert read_lease(path).token == "someone-else"  # releasing a lost lease leaves the new holder's file


CLAIM = """
import sys, time
from bench.core.lease import Lease, acquire
r = acquire(sys.argv[1], timeout=3600)
print("won" if isinstance(r, Lease) else "held", flush=True)
time.sleep(1.5)  # hold it while the others try
"""


@pytest.mark.parametrize("stale", [False, True])
def test_of_processes_claiming_at_once_exactly_one_wins(tmp_path, stale):
    """Eight processes claim one lease at once, free or left by a dead process: one wins, seven are refused."""
    path = tmp_path / "lease.json"
    if stale:
        write_lease(path, pid=dead_pid())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["held"] * 7 + ["won"]
    claims = [json.loads(line) for line in history_path(path).read_text().splitlines()]
    assert len(claims) == 1 and claims[0]["event"] == "claim"
    # a free lease is never recorded as a takeover. Of an abandoned one, the winner records the takeover when it
    # judged the old lease itself; a claimant that started after a rival had already moved it away finds the path
    # free and cannot tell (takeovers by one claimant: test_a_dead_holder_on_this_host_is_taken_over and the next)
    if not stale:
        assert claims[0]["took_over"] is None


def test_temporary_names_are_unique_and_orphans_of_dead_writers_go(tmp_path):
    target = tmp_path / "last.pt"
    a, b = temp_path(target), temp_path(target)
    assert a != b and a.name.startswith(".last.pt.tmp") and a.parent == tmp_path
    dead = dead_pid()
    orphans = [tmp_path / f".last.pt.tmp{dead}",  # the runner's earlier name
               tmp_path / f".last.pt.tmp{dead}-0123abcd@{HOST}",
               tmp_path / ".report.html.tmp"]  # the report's earlier fixed name, once it is old
    live = [a, tmp_path / f".x.tmp{dead}-0123abcd@elsewhere.example", tmp_path / ".fresh.md.tmp"]
    for p in orphans + live + [target]:
        p.write_text("x")
    old = time.time() - 3600
    os.utime(tmp_path / ".report.html.tmp", (old, old))
    assert all(is_orphan(p) for p in orphans) and not any(is_orphan(p) for p in live)
    assert sorted(remove_orphans(tmp_path)) == sorted(orphans)
    assert all(p.exists() for p in live + [target])
