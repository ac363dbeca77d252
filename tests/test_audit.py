"""The audit writer: graceful stop, database outages, the spool, memory bound, races.

Real servers (in this process or as ``ftpserver`` processes), real ftplib
clients and the real database. An outage is real too (see audit_tools): a
TCP proxy in front of PostgreSQL that refuses, cuts or holds connections, or
an exclusive lock on the SQLite file.
"""

import datetime
import io
import json
import logging
import signal
import subprocess
import threading
import time

import pytest
from django.test import override_settings

from ftpserver_core import audit
from ftpserver_core.audit import Spool
from ftpserver_core.models import AuditEvent

from .audit_tools import (
    DOWN_TIMEOUT,
    PYTHON,
    audit_rows,
    count_by_event,
    database_outage,
    is_sqlite,
    own_spool,
    spool_files,
    spooled_records,
    wait_until,
)
from .conftest import PASSWORD
from .processes import REPO_ROOT, ServerProcess, command_env

UTC = datetime.UTC


@pytest.fixture
def audit_spool(tmp_path):
    with own_spool(tmp_path / "spool") as directory:
        yield directory


@pytest.fixture
def outage(transactional_db):
    with database_outage() as control:
        yield control


def flush():
    assert audit.writer.flush(), "the audit writer did not finish"


def writer_threads():
    return [
        t for t in threading.enumerate() if t.name == "ftpserver-audit" and t.is_alive()
    ]


def write_settings(tmp_path, **values):
    """A settings module extending tests.settings; return the subprocess env."""
    directory = tmp_path / "extra_settings"
    directory.mkdir(exist_ok=True)
    lines = ["from tests.settings import *  # noqa: F403"]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    if is_sqlite():
        # Fail fast on a locked database (an outage), as the tests' own
        # connections do.
        lines.append('DATABASES["default"]["OPTIONS"] = {"timeout": 0.3}')
    (directory / "audit_settings.py").write_text("\n".join(lines) + "\n")
    return command_env(directory, DJANGO_SETTINGS_MODULE="audit_settings")


def start_ftpserver(tmp_path, env, name="server"):
    return ServerProcess(["127.0.0.1:0"], tmp_path / name, env).wait_started()


def unique_rows():
    """No record was written twice (the same event of a session at one time)."""
    keys = list(AuditEvent.objects.values_list("session_id", "event", "time"))
    return len(keys) == len(set(keys))


# --- graceful stop


def test_sigterm_loses_no_queued_record(transactional_db, make_account, tmp_path):
    make_account("alice")
    spool_dir = tmp_path / "spool"
    env = write_settings(
        tmp_path,
        FTPSERVER_AUDIT_INTERVAL=60,
        FTPSERVER_AUDIT_BATCH_SIZE=100_000,
        FTPSERVER_AUDIT_SPOOL_DIR=str(spool_dir),
        FTPSERVER_NODE_NAME="stopping-node",
    )
    server = start_ftpserver(tmp_path, env)
    try:
        sessions, files = 4, 10
        for s in range(sessions):
            ftp = server.client("alice")
            ftp.mkd(f"d{s}")
            for i in range(files):
                ftp.storbinary(f"STOR d{s}/f{i}", io.BytesIO(b"x" * i))
                ftp.retrbinary(f"RETR d{s}/f{i}", io.BytesIO().write)
            for i in range(files):
                ftp.delete(f"d{s}/f{i}")
            ftp.rmd(f"d{s}")
            ftp.quit()
        bad = server.client()
        with pytest.raises(Exception, match="530"):
            bad.login("alice", "wrong")
        bad.quit()
        still_connected = server.client("alice")
        still_connected.voidcmd("NOOP")
        # Everything is still queued in the server's memory.
        time.sleep(0.3)
        assert AuditEvent.objects.count() == 0
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        server.kill()
    assert "FTP server stopped." in server.stdout
    assert count_by_event() == {
        "server_started": 1,
        "connect": sessions + 2,
        "login": sessions + 1,
        "login_failed": 1,
        "mkdir": sessions,
        "upload": sessions * files,
        "download": sessions * files,
        "delete": sessions * files,
        "rmdir": sessions,
        "logout": sessions,
        "disconnect": sessions + 2,
        "server_stopped": 1,
    }
    assert set(AuditEvent.objects.values_list("node", flat=True)) == {"stopping-node"}
    assert unique_rows()
    assert spool_files(spool_dir) == []


def test_sigterm_during_an_outage_spools_and_the_next_start_replays(
    make_account, outage, tmp_path
):
    make_account("alice")
    spool_dir = tmp_path / "spool"
    env = write_settings(
        tmp_path,
        FTPSERVER_AUDIT_SPOOL_DIR=str(spool_dir),
        FTPSERVER_AUDIT_RETRIES=1,
    )
    env["DATABASE_URL"] = outage.address
    server = start_ftpserver(tmp_path, env, "first")
    try:
        ftp = server.client("alice")
        wait_until(lambda: AuditEvent.objects.count() == 3)  # started, connect, login
        outage.down()
        for i in range(10):
            ftp.mkd(f"d{i}")
            ftp.rmd(f"d{i}")
        anonymous = server.client()
        anonymous.quit()
        # The running server spools what the database refuses.
        wait_until(lambda: len(spooled_records(spool_dir)) == 22, timeout=20)
        ftp.quit()
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        server.kill()
    # server_stopped, logout and disconnect were spooled at the stop.
    assert len(spooled_records(spool_dir)) == 25
    assert "The database is unavailable" in server.stderr
    outage.up()
    assert AuditEvent.objects.count() == 3

    server = start_ftpserver(tmp_path, env, "second")
    try:
        # Replayed at the start, without any new event but server_started.
        wait_until(lambda: AuditEvent.objects.count() == 3 + 25 + 1, timeout=20)
        wait_until(lambda: spool_files(spool_dir) == [])
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        server.kill()
    assert count_by_event() == {
        "server_started": 2,
        "connect": 2,
        "login": 1,
        "mkdir": 10,
        "rmdir": 10,
        "logout": 1,
        "disconnect": 2,
        "server_stopped": 2,
    }
    assert unique_rows()


# --- outages of a running server


def test_an_outage_keeps_the_loop_fast_spools_and_replays_when_back(
    ftp_server, make_account, audit_spool, outage, recorder
):
    make_account("alice")
    live = ftp_server()
    idle = live.client("alice")
    busy = live.client("alice")
    wait_until(lambda: AuditEvent.objects.count() == 4)  # 2 connect + 2 login

    outage.down()
    latencies = []

    def noop():
        start = time.monotonic()
        idle.voidcmd("NOOP")
        latencies.append(time.monotonic() - start)

    for i in range(20):
        busy.mkd(f"d{i}")
        noop()
        busy.storbinary(f"STOR d{i}/f", io.BytesIO(b"x" * 100))
        noop()
    for _ in range(3):  # sessions that never log in
        live.client().quit()
    failed = live.client()
    with pytest.raises(Exception, match="530"):
        failed.login("alice", PASSWORD)  # the database is needed to log in
    failed.quit()
    recorder.wait_for("ftp_client_disconnected", 4)
    during = 20 + 20 + 3 * 2 + 3  # mkdir, upload, 3 x (connect, disconnect), 1 failed
    # Keep asking while the writer fails and spools.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline or not spool_files(audit_spool):
        noop()
        assert time.monotonic() < deadline + 20, "nothing was spooled"
    wait_until(lambda: len(spooled_records(audit_spool)) == during, timeout=20)
    assert audit.writer.pending() == 0
    # Every database call takes DOWN_TIMEOUT (0.3 s) to fail: a loop that
    # waited on one would show it.
    latencies.sort()
    assert len(latencies) > 50
    assert latencies[int(len(latencies) * 0.95)] < 0.1, latencies[-5:]
    assert latencies[-1] < DOWN_TIMEOUT * 0.8, latencies[-5:]
    login_failed = [
        r for r in spooled_records(audit_spool) if r["event"] == "login_failed"
    ]
    assert [r["reason"] for r in login_failed] == ["server_error"]

    outage.up()
    # Replayed although no new event arrives.
    wait_until(lambda: AuditEvent.objects.count() == 4 + during, timeout=20)
    wait_until(lambda: spool_files(audit_spool) == [])
    idle.quit()
    busy.quit()
    recorder.wait_for("ftp_client_disconnected", 6)
    flush()
    assert count_by_event() == {
        "connect": 6,
        "login": 2,
        "mkdir": 20,
        "upload": 20,
        "login_failed": 1,
        "logout": 2,
        "disconnect": 6,
    }
    assert unique_rows()
    assert audit.writer.rejected == 0


def test_the_queue_stays_bounded_during_an_outage(
    ftp_server, make_account, audit_spool, outage, recorder
):
    make_account("alice")
    live = ftp_server()
    ftp = live.client("alice")
    wait_until(lambda: AuditEvent.objects.count() == 2)
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], audit.writer.pending())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    with override_settings(
        FTPSERVER_AUDIT_MAX_QUEUE=100,
        FTPSERVER_AUDIT_INTERVAL=1.0,
        FTPSERVER_AUDIT_BATCH_SIZE=1000,
    ):
        audit.writer.peak_pending = 0
        outage.down()
        sampler.start()
        try:
            for i in range(300):
                ftp.mkd(f"d{i}")
                ftp.rmd(f"d{i}")
            wait_until(lambda: len(spooled_records(audit_spool)) == 600, timeout=20)
        finally:
            sampling.set()
            sampler.join()
        assert audit.writer.pending() == 0
        assert peak[0] <= 100
        # The bound was reached: records went straight to the spool.
        assert audit.writer.peak_pending == 100

        outage.up()
        wait_until(lambda: AuditEvent.objects.count() == 602, timeout=30)
        wait_until(lambda: spool_files(audit_spool) == [])
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    flush()
    assert count_by_event() == {
        "connect": 1,
        "login": 1,
        "mkdir": 300,
        "rmdir": 300,
        "logout": 1,
        "disconnect": 1,
    }
    assert unique_rows()
    assert audit.writer.peak_pending <= 100


def test_a_hanging_database_does_not_hold_records_at_stop(
    ftp_server, make_account, audit_spool, outage, recorder
):
    make_account("alice")
    live = ftp_server()
    ftp = live.client("alice")
    wait_until(lambda: AuditEvent.objects.count() == 2)
    with override_settings(FTPSERVER_AUDIT_RETRIES=0):
        outage.down(hang=True)  # connections (or locks) get no answer
        for i in range(20):
            ftp.mkd(f"d{i}")
        # The writer thread holds a batch in an insert that does not return.
        wait_until(lambda: audit.writer.pending() == 0)
        time.sleep(0.3)
        for i in range(20):
            ftp.rmd(f"d{i}")
        (thread,) = writer_threads()
        assert audit.writer.flush(timeout=0.5) is False
        # Every record is in the spool, the one being inserted too.
        spooled = spooled_records(audit_spool)
        assert sorted(r["ftp_path"] for r in spooled) == sorted(
            [f"/d{i}" for i in range(20)] * 2
        )
        outage.down()  # the hung insert fails now; it must not spool again
        wait_until(lambda: not thread.is_alive(), timeout=20)
        assert len(spooled_records(audit_spool)) == 40
        outage.up()
    audit.writer.start()  # as the next start would
    wait_until(lambda: AuditEvent.objects.count() == 42, timeout=20)
    wait_until(lambda: spool_files(audit_spool) == [])
    assert count_by_event() == {"connect": 1, "login": 1, "mkdir": 20, "rmdir": 20}
    assert unique_rows()


# --- the spool


def some_records(count, **fields):
    now = datetime.datetime.now(UTC)
    return [
        {
            "time": now + datetime.timedelta(microseconds=i),
            "event": "upload",
            "username": f"user{i}",
            "remote_ip": "192.0.2.1",
            "remote_port": 40000 + i,
            "session_id": f"s{i}",
            "ftp_path": f"/f{i}",
            "size": i,
            "duration": 0.5,
            "node": "old-node",
            **fields,
        }
        for i in range(count)
    ]


def test_a_spool_left_by_a_previous_process_is_replayed_at_the_next_start(
    transactional_db, tmp_path
):
    spool_dir = tmp_path / "spool"
    records = some_records(30)
    # As a process that died during an outage left it: its pid in the name.
    old = Spool(str(spool_dir))
    old.path = str(spool_dir / "spool-999999-1-0.jsonl")
    old.append(records[:10])
    old.append(records[10:25])
    with open(old.path, "a") as fh:
        fh.write("this is not JSON\n")
        fh.write("[1, 2, 3]\n")
        fh.write("\n")
    old.append(records[25:])
    with open(old.path, "a") as fh:
        fh.write('{"time": "2026-01-01T00:00:00+00:00", "event": "upl')  # cut short
    # A record the database refuses even cleaned: kept aside, not retried forever.
    refused = Spool(str(spool_dir))
    refused.path = str(spool_dir / "spool-999998-1-0.jsonl")
    refused.append(
        some_records(1, remote_port=-1, session_id="refused")
        + some_records(1, session_id="fine")
        + some_records(1, time=5, session_id="refused")
    )

    env = write_settings(
        tmp_path, FTPSERVER_AUDIT_SPOOL_DIR=str(spool_dir), FTPSERVER_AUDIT_BATCH_SIZE=7
    )
    server = start_ftpserver(tmp_path, env)
    try:
        wait_until(lambda: AuditEvent.objects.filter(node="old-node").count() == 31)
        wait_until(lambda: spool_files(spool_dir) == [])
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        server.kill()
    replayed = audit_rows(node="old-node", event="upload")
    assert [r["username"] for r in replayed if r["session_id"] != "fine"] == [
        r["username"] for r in records
    ]
    assert [r["time"] for r in replayed if r["session_id"] != "fine"] == [
        r["time"] for r in records
    ]
    assert AuditEvent.objects.filter(session_id="fine").count() == 1
    assert not AuditEvent.objects.filter(session_id="refused").exists()
    # The lines that could not be read are kept, as they were, and logged.
    bad = (spool_dir / "spool-999999-1-0.jsonl.bad").read_text().splitlines()
    assert bad == [
        "this is not JSON",
        "[1, 2, 3]",
        '{"time": "2026-01-01T00:00:00+00:00", "event": "upl',
    ]
    assert server.stderr.count("Unreadable line") == 3
    # So is the record the database refused.
    (rejected,) = spool_dir.glob("rejected-*.jsonl.bad")
    lines = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert [(r["session_id"], r["remote_port"], r["time"]) for r in lines] == [
        ("refused", -1, lines[0]["time"]),
        ("refused", 40000, 5),
    ]
    assert server.stderr.count("The database refused 1 audit record") == 2
    assert count_by_event(node="old-node") == {"upload": 31}


def test_a_username_with_nul_is_recorded_and_does_not_block_the_batch(
    ftp_server, make_account, audit_spool, recorder, caplog
):
    make_account("alice")
    live = ftp_server()
    with (
        override_settings(FTPSERVER_AUDIT_INTERVAL=0.5),
        caplog.at_level(logging.WARNING, logger="ftpserver_core.audit"),
    ):
        ftp = live.client("alice")
        evil = live.client()
        evil.sendcmd("USER ev\0il")
        with pytest.raises(Exception, match="530"):
            evil.sendcmd("PASS x")
        evil.quit()
        ftp.mkd("d")
        ftp.quit()
        recorder.wait_for("ftp_client_disconnected", 2)
        flush()
    failed = audit_rows(event="login_failed")
    assert [r["username"] for r in failed] == ["ev\ufffdil"]
    assert count_by_event() == {
        "connect": 2,
        "login": 1,
        "login_failed": 1,
        "mkdir": 1,
        "logout": 1,
        "disconnect": 2,
    }
    assert spool_files(audit_spool) == []
    # No retry, no "database unavailable".
    assert not [r for r in caplog.records if r.name == "ftpserver_core.audit"]


APPENDER = r"""
import datetime, json, sys, time
from ftpserver_core.audit import Spool

spool = Spool(sys.argv[1])
count = int(sys.argv[2])
worst = 0.0
for i in range(count):
    record = {
        "time": datetime.datetime.now(datetime.UTC),
        "event": "connect",
        "username": f"appended{i}",
    }
    start = time.monotonic()
    spool.append([record])
    worst = max(worst, time.monotonic() - start)
    time.sleep(0.002)
print(json.dumps({"worst": worst}))
"""


def test_replay_while_another_process_appends_loses_nothing_and_never_blocks_it(
    transactional_db, tmp_path
):
    """The spool's locks between processes: a replayer holds a file while it
    writes to a (slow) database; the appending process starts a new file
    instead of waiting, and every record is written once."""
    spool_dir = tmp_path / "spool"
    count = 400
    appender = subprocess.Popen(
        [PYTHON, "-c", APPENDER, str(spool_dir), str(count)],
        stdout=subprocess.PIPE,
        env=command_env(),
        cwd=REPO_ROOT,
    )

    def slow_write(batch):
        AuditEvent.objects.bulk_create([AuditEvent(**r) for r in batch])
        time.sleep(0.5)  # the database is slow: the file stays locked meanwhile
        return []

    replayer = Spool(str(spool_dir))
    replayed = 0
    deadline = time.monotonic() + 60
    with override_settings(FTPSERVER_AUDIT_BATCH_SIZE=50):
        try:
            while appender.poll() is None:
                assert time.monotonic() < deadline, "the appender is stuck"
                replayed += replayer.replay(slow_write)
            replayed += replayer.replay(slow_write)
            out, _ = appender.communicate(timeout=30)
        finally:
            if appender.poll() is None:
                appender.kill()
                appender.wait()
    assert appender.returncode == 0
    # Waiting for the replayer would take 0.5 s at least.
    assert json.loads(out)["worst"] < 0.4
    assert replayed == count
    names = list(AuditEvent.objects.values_list("username", flat=True))
    assert sorted(names) == sorted(f"appended{i}" for i in range(count))
    assert spool_files(spool_dir) == []


def test_spool_settings_are_read_at_each_use(transactional_db, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    with override_settings(FTPSERVER_AUDIT_SPOOL_DIR=str(first)):
        assert audit.writer.spool.directory == str(first)
    with override_settings(FTPSERVER_AUDIT_SPOOL_DIR=str(second)):
        assert audit.writer.spool.directory == str(second)


# --- the writer thread's lifecycle


def test_puts_racing_with_flushes_lose_and_duplicate_nothing(
    transactional_db, audit_spool
):
    count = 3000
    records = some_records(count, node="race")
    done = threading.Event()
    flushes = []

    def produce():
        for i, record in enumerate(records):
            audit.record(**record)
            if i % 3 == 0:
                time.sleep(0.001)
        done.set()

    def stop_again_and_again():
        while not done.is_set():
            flushes.append(audit.writer.flush())

    with override_settings(
        FTPSERVER_AUDIT_INTERVAL=0.01, FTPSERVER_AUDIT_BATCH_SIZE=50
    ):
        threads = [
            threading.Thread(target=produce),
            threading.Thread(target=stop_again_and_again),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert audit.writer.flush()
    assert len(flushes) >= 2 and all(flushes)
    assert audit.writer.pending() == 0
    assert writer_threads() == []
    assert sorted(
        AuditEvent.objects.filter(node="race").values_list("username", flat=True)
    ) == sorted(r["username"] for r in records)


def test_a_server_stop_writes_what_a_long_interval_still_holds(
    ftp_server, make_account, audit_spool, caplog
):
    make_account("alice")
    with override_settings(
        FTPSERVER_AUDIT_EVENTS=["upload"], FTPSERVER_AUDIT_INTERVAL=60
    ):
        live = ftp_server()
        ftp = live.client("alice")
        ftp.storbinary("STOR a.txt", io.BytesIO(b"a"))
        ftp.quit()
        with caplog.at_level(logging.WARNING, logger="ftpserver_core.audit"):
            live.stop()
        assert count_by_event() == {"upload": 1}
    assert not caplog.records
