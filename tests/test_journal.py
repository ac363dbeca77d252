"""The audit journal and its recovery, file by file (audit/journal.py, recovery.py).

Real segment files in a temporary directory, real ``flock`` locks, a real
tmpfs for a full disk; a process that "died" is a :class:`Journal` whose
files were closed without being removed (``abandon``), as the kernel leaves
them when a process is killed. Recovery hands its records to ``write_all``:
a list here, the database where it matters (``rows.insert_new``).
"""

import fcntl
import importlib
import json
import os
import re
import stat
import subprocess
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from ftpserver_core import audit
from ftpserver_core.audit import journal as journals
from ftpserver_core.audit import recovery, rows
from ftpserver_core.models import AuditEvent

from .audit_tools import (
    PYTHON,
    abandon,
    append_to_segment,
    audit_rows,
    bad_lines,
    journal_files,
    journal_lines,
    own_journal,
    wait_until,
)
from .faults import mount_tmpfs
from .processes import REPO_ROOT, command_env

DB = "0123456789ab"  # a database id
NAME_RE = re.compile(
    r"^journal-0123456789ab-(?P<instance>[0-9a-f]{16})-(?P<n>\d{6})\.jsonl$"
)


def record(i=0, **fields):
    return {
        "time": 1_800_000_000 + i,
        "event": "mkdir",
        "username": "alice",
        "session_id": f"s{i}",
        "ftp_path": f"/d{i}",
        "node": "journal-test",
        **fields,
    }


class Recovered:
    """What recovery hands over: ``write_all`` and ``keep_bad`` of a writer."""

    def __init__(self, directory, accept=True):
        self.directory = directory
        self.records = []
        self.bad = []
        self.accept = accept

    def write_all(self, records):
        if not self.accept:
            return False
        self.records.extend(records)
        return True

    def keep_bad(self, bad):
        self.bad.extend(bad)
        journals.keep_bad(str(self.directory), [raw for _, _, raw, _ in bad])

    def recover_all(self, database=DB):
        """Recover every orphan of ``database`` in the directory, as a new process."""
        finder = journals.Journal(str(self.directory), database)
        counts = {}
        for instance, paths in finder.orphans().items():
            counts[instance] = recovery.recover(paths, self.write_all, self.keep_bad)
        return counts


def upload_begin(journal, home, name, data=b"", *, offset=0, **fields):
    """Journal an upload of ``home/name`` in progress, ``data`` written so far.

    A fresh upload is atomic: written to a temporary file. A resumed one
    (``offset``) writes in place.
    """
    final = os.path.join(home, name)
    temp = None if offset else os.path.join(home, f".ftpupload-0000-{name}")
    with open(temp or final, "ab") as fh:
        fh.write(data)
    uid = journal.begin(
        record(
            event="upload_incomplete",
            ftp_path=f"/{name}",
            path=final,
            _final=final,
            _temp=temp,
            _offset=offset,
            **fields,
        )
    )
    return uid, final, temp


# --- writing


def test_records_get_uids_and_go_to_a_segment_named_for_the_database(tmp_path):
    journal = journals.Journal(str(tmp_path / "j"), DB)
    first, second = record(1), record(2)
    journal.add(first)
    journal.add(second)
    (path,) = journal_files(tmp_path / "j")
    match = NAME_RE.match(path.name)
    assert match and match["instance"] == journal.instance and match["n"] == "000001"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "j").stat().st_mode) == 0o700
    # 32 hex digits: the instance, then a sequence number.
    assert re.fullmatch(r"[0-9a-f]{32}", first["uid"])
    assert first["uid"][:16] == second["uid"][:16] == journal.instance
    assert (
        journals.Journal.seq_of(second["uid"])
        == journals.Journal.seq_of(first["uid"]) + 1
    )
    # Each record keeps its line, for the writer to send as it is.
    assert journal_lines(tmp_path / "j") == [rows.fields(first), rows.fields(second)]
    assert json.loads(first["_json"]) == rows.fields(first)
    # The process holds its segment.
    with open(path, "rb") as fh, pytest.raises(BlockingIOError):
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    abandon(journal)


def test_a_batch_is_written_at_its_end_in_one_go(tmp_path):
    journal = journals.Journal(str(tmp_path), DB)
    journal.add(record(0))
    (path,) = journal_files(tmp_path)
    size = path.stat().st_size
    journal.start_batch()
    journal.start_batch()  # nested: the outermost one writes
    for i in range(1, 4):
        journal.add(record(i))
    journal.end_batch()
    assert path.stat().st_size == size
    journal.end_batch()
    assert [r["ftp_path"] for r in journal_lines(tmp_path)] == [
        "/d0",
        "/d1",
        "/d2",
        "/d3",
    ]
    abandon(journal)


def test_records_are_queued_until_the_queue_is_taken_away(tmp_path):
    journal = journals.Journal(str(tmp_path), DB)
    journal.queue = queue = []
    journal.add(record(1))
    assert [r["ftp_path"] for r in queue] == ["/d1"]
    # The writer's "database down": on disk only, nothing in memory.
    replay = journal.rotate(replay=True, queue=None)
    journal.add(record(2))
    assert queue == [] and not journal.fallback
    assert [s.path for s in replay] == [str(journal_files(tmp_path)[0])]
    assert [r["ftp_path"] for r in journal_lines(tmp_path)] == ["/d1", "/d2"]
    abandon(journal)


def test_segments_are_only_appended_to_trimmed_when_committed_never_rewritten(
    tmp_path,
):
    journal = journals.Journal(str(tmp_path), DB)
    journal.queue = []
    first = record(1)
    journal.add(first)
    (one,) = journal_files(tmp_path)
    inode = one.stat().st_ino
    journal.rotate()
    second = record(2)
    journal.add(second)
    assert len(journal_files(tmp_path)) == 2
    assert one.stat().st_ino == inode
    # Not committed yet: kept.
    journal.trim(journals.Journal.seq_of(first["uid"]) - 1)
    assert len(journal_files(tmp_path)) == 2
    journal.trim(journals.Journal.seq_of(first["uid"]))
    (two,) = journal_files(tmp_path)
    assert two != one
    # The current segment is never trimmed.
    journal.trim(journals.Journal.seq_of(second["uid"]))
    assert journal_files(tmp_path) == [two]
    assert not list(tmp_path.glob("*.tmp"))
    abandon(journal)


# --- recovery of a process that is gone


def test_a_begin_without_end_in_a_dead_instance_is_recorded_as_server_crashed(
    tmp_path, db
):
    home = tmp_path / "home"
    home.mkdir()
    journal = journals.Journal(str(tmp_path / "j"), DB)
    journal.add(record(1))
    uid, final, temp = upload_begin(journal, home, "big.bin", b"x" * 1234)
    # An upload that ended is not recovered.
    done_uid, done_final, done_temp = upload_begin(journal, home, "done.bin")
    os.replace(done_temp, done_final)
    journal.add(record(2, event="upload", ftp_path="/done.bin"))
    journal.end(done_uid)
    abandon(journal)

    recovered = Recovered(tmp_path / "j")
    assert recovered.recover_all() == {journal.instance: 3}
    incomplete = [r for r in recovered.records if r["event"] == "upload_incomplete"]
    assert incomplete == [
        {
            **record(
                event="upload_incomplete", ftp_path="/big.bin", path=final, uid=uid
            ),
            "success": False,
            "reason": "server_crashed",
            "size": 1234,
        }
    ]
    # The atomic upload's temporary file is gone; nothing was put in place.
    assert not os.path.exists(temp) and not os.path.exists(final)
    assert os.path.exists(done_final)
    assert journal_files(tmp_path / "j") == []
    assert recovered.bad == []
    # As the database takes it.
    rows.insert_new(recovered.records)
    (row,) = audit_rows(event="upload_incomplete")
    assert (row["uid"].hex, row["reason"], row["size"], row["success"]) == (
        uid,
        "server_crashed",
        1234,
        False,
    )


def test_a_resumed_upload_in_progress_counts_what_it_received_and_stays(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    journal = journals.Journal(str(tmp_path / "j"), DB)
    # REST 100 + STOR into a file of 100 bytes (in place): 50 bytes came in.
    uid, final, temp = upload_begin(
        journal, home, "part.bin", b"o" * 100 + b"n" * 50, offset=100
    )
    assert temp is None
    abandon(journal)
    recovered = Recovered(tmp_path / "j")
    recovered.recover_all()
    (incomplete,) = recovered.records
    assert (incomplete["uid"], incomplete["size"], incomplete["reason"]) == (
        uid,
        50,
        "server_crashed",
    )
    # Left as it is, for the client to resume again.
    with open(final, "rb") as fh:
        assert fh.read() == b"o" * 100 + b"n" * 50


def test_a_begin_carried_to_a_newer_segment_whose_end_is_there_is_not_recovered(
    tmp_path,
):
    home = tmp_path / "home"
    home.mkdir()
    journal = journals.Journal(str(tmp_path / "j"), DB)
    journal.queue = []
    journal.add(record(1))
    uid, final, temp = upload_begin(journal, home, "long.bin", b"y" * 10)
    journal.rotate()  # e.g. the segment grew past SEGMENT_BYTES
    # The open upload is carried into the new segment...
    first, second = journal_files(tmp_path / "j")
    assert uid in {i.get("uid") for i in journal_lines(None, [second]) if "_begin" in i}
    # ... where it ends.
    os.replace(temp, final)
    journal.add(record(2, event="upload", ftp_path="/long.bin"))
    journal.end(uid)
    journal.rotate()
    # Ended: not carried into the next one.
    journal.add(record(3))
    assert not [
        i
        for i in journal_lines(None, journal_files(tmp_path / "j")[-1:])
        if "_begin" in i
    ]
    abandon(journal)

    recovered = Recovered(tmp_path / "j")
    recovered.recover_all()
    assert [(r["event"], r["ftp_path"]) for r in recovered.records] == [
        ("mkdir", "/d1"),
        ("upload", "/long.bin"),
        ("mkdir", "/d3"),
    ]
    assert os.path.exists(final)


def test_a_begin_carried_through_several_segments_is_recovered_once(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    journal = journals.Journal(str(tmp_path / "j"), DB)
    journal.queue = []
    uid, final, temp = upload_begin(journal, home, "slow.bin", b"z" * 7)
    for i in range(3):
        journal.add(record(i))
        journal.rotate()
    assert len(journal_files(tmp_path / "j")) == 4
    abandon(journal)
    recovered = Recovered(tmp_path / "j")
    recovered.recover_all()
    incomplete = [r for r in recovered.records if r["event"] == "upload_incomplete"]
    assert [(r["uid"], r["size"]) for r in incomplete] == [(uid, 7)]
    assert len(recovered.records) == 4
    assert not os.path.exists(temp)


def test_a_truncated_last_line_goes_to_the_bad_file_and_recovery_goes_on(tmp_path):
    directory = tmp_path / "j"
    crashed = journals.Journal(str(directory), DB)
    crashed.add(record(1))
    crashed.add(record(2))
    # Killed in the middle of a write.
    (path,) = journal_files(directory)
    cut = b'{"time":1800000003,"event":"mkdir","username":"al'
    append_to_segment(path, cut)
    abandon(crashed)
    other = journals.Journal(str(directory), DB)
    other.add(record(4))
    abandon(other)

    recovered = Recovered(directory)
    counts = recovered.recover_all()
    assert counts == {crashed.instance: 2, other.instance: 1}
    assert sorted(r["ftp_path"] for r in recovered.records) == ["/d1", "/d2", "/d4"]
    assert [(p, n, raw, why) for p, n, raw, why in recovered.bad] == [
        (str(path), 3, cut, "incomplete last line")
    ]
    assert bad_lines(directory) == [cut]
    assert [p.name for p in directory.glob("bad-*")] == [f"bad-{os.getpid()}.jsonl.bad"]
    assert journal_files(directory) == []


def test_unreadable_lines_are_kept_aside_and_the_others_recovered(tmp_path):
    directory = tmp_path / "j"
    journal = journals.Journal(str(directory), DB)
    journal.add(record(1))
    (path,) = journal_files(directory)
    append_to_segment(path, b"not json\n[1, 2]\n\n\xff\xfe{\n", journal)
    journal.add(record(2))
    abandon(journal)
    recovered = Recovered(directory)
    recovered.recover_all()
    assert [r["ftp_path"] for r in recovered.records] == ["/d1", "/d2"]
    assert [(n, raw) for _, n, raw, _ in recovered.bad] == [
        (2, b"not json\n"),
        (3, b"[1, 2]\n"),
        (5, b"\xff\xfe{\n"),
    ]
    assert bad_lines(directory) == [b"not json", b"[1, 2]", b"\xff\xfe{"]


def test_locked_segments_are_skipped(tmp_path):
    directory = tmp_path / "j"
    live = journals.Journal(str(directory), DB)
    live.queue = []
    live.add(record(1))
    live.rotate()
    live.add(record(2))
    recovered = Recovered(directory)
    # A live process holds every segment: nothing is read, nothing removed.
    assert recovered.recover_all() == {live.instance: 0}
    assert recovered.records == [] and len(journal_files(directory)) == 2
    # Its own segments are never orphans.
    assert live.orphans() == {}
    abandon(live)
    assert recovered.recover_all() == {live.instance: 2}
    assert journal_files(directory) == []


def test_a_journal_another_recoverer_took_after_the_listing_is_no_error(tmp_path):
    """Two processes start at once (prefork workers, two servers): both list
    a dead journal, one recovers and removes it, then the other locks what it
    listed. Nothing is left to recover, and nothing to complain about (the
    writer logs any OSError here as "Cannot recover the audit journal")."""
    directory = tmp_path / "j"
    dead = journals.Journal(str(directory), DB)
    dead.queue = []
    dead.add(record(1))
    dead.rotate()
    dead.add(record(2))
    abandon(dead)
    first, second = Recovered(directory), Recovered(directory)
    listed = journals.Journal(str(directory), DB).orphans()[dead.instance]
    assert first.recover_all() == {dead.instance: 2}
    assert recovery.recover(listed, second.write_all, second.keep_bad) == 0
    assert second.records == [] and second.bad == []


HOLDER = r"""
import sys, time
from ftpserver_core.audit import journal as journals

journal = journals.Journal(sys.argv[1], sys.argv[2])
journal.add({"time": 1800000000, "event": "connect", "username": "held"})
print(journal.instance, flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_segments_held_by_another_process_are_skipped_until_it_exits(tmp_path):
    directory = tmp_path / "j"
    holder = subprocess.Popen(
        [PYTHON, "-c", HOLDER, str(directory), DB],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=command_env(),
        cwd=REPO_ROOT,
    )
    try:
        instance = holder.stdout.readline().decode().strip()
        recovered = Recovered(directory)
        assert recovered.recover_all() == {instance: 0}
        assert len(journal_files(directory)) == 1
        holder.stdin.close()
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert recovered.recover_all() == {instance: 1}
    assert [r["username"] for r in recovered.records] == ["held"]


def test_a_failed_database_leaves_the_journal_for_later(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    journal = journals.Journal(str(tmp_path / "j"), DB)
    journal.add(record(1))
    uid, final, temp = upload_begin(journal, home, "x.bin", b"x")
    abandon(journal)
    assert Recovered(tmp_path / "j", accept=False).recover_all() == {
        journal.instance: None
    }
    assert len(journal_files(tmp_path / "j")) == 1
    assert os.path.exists(temp)  # still needed to size the record
    recovered = Recovered(tmp_path / "j")
    recovered.recover_all()
    assert len(recovered.records) == 2 and not os.path.exists(temp)


# --- one journal directory, several databases


def sqlite(name):
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}


def postgres(name, host="127.0.0.1", port=5432):
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "HOST": host,
        "PORT": port,
    }


def test_the_database_id_tells_databases_apart(tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "db.sqlite3", tmp_path / "b" / "db.sqlite3"
    assert journals.database_id(sqlite(str(a))) != journals.database_id(sqlite(str(b)))
    # The same file, however it is named.
    (tmp_path / "a").mkdir()
    a.touch()
    os.symlink(tmp_path / "a", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    same = {
        journals.database_id(sqlite(name))
        for name in (str(a), "a/db.sqlite3", str(tmp_path / "link" / "db.sqlite3"))
    }
    assert len(same) == 1
    ids = {
        journals.database_id(settings)
        for settings in (
            postgres("app"),
            postgres("other"),
            postgres("app", port=5433),
            postgres("app", host="db.example"),
            sqlite("app"),
        )
    }
    assert len(ids) == 5
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def test_a_journal_of_another_database_is_never_recovered(tmp_path):
    directory = tmp_path / "j"
    mine = journals.database_id(sqlite(str(tmp_path / "mine.sqlite3")))
    theirs = journals.database_id(sqlite(str(tmp_path / "theirs.sqlite3")))
    other = journals.Journal(str(directory), theirs)
    other.add(record(1))
    abandon(other)
    recovered = Recovered(directory)
    assert recovered.recover_all(database=mine) == {}
    assert recovered.records == []
    assert len(journal_files(directory)) == 1
    assert recovered.recover_all(database=theirs) == {other.instance: 1}


def test_the_journal_directory_setting_and_its_defaults(tmp_path):
    with override_settings(FTPSERVER_AUDIT_JOURNAL_DIR=str(tmp_path / "new")):
        assert audit.journal_dir() == str(tmp_path / "new")
    with override_settings(
        FTPSERVER_AUDIT_JOURNAL_DIR=None,
        FTPSERVER_AUDIT_SPOOL_DIR=str(tmp_path / "old"),
    ):
        assert audit.journal_dir() == str(tmp_path / "old")
    with override_settings(
        FTPSERVER_AUDIT_JOURNAL_DIR=None,
        FTPSERVER_AUDIT_SPOOL_DIR=None,
        BASE_DIR=tmp_path / "project",
    ):
        assert audit.journal_dir() == str(
            tmp_path / "project" / "var" / "audit-journal"
        )
        with override_settings(DATA_DIR=tmp_path / "data"):
            assert audit.journal_dir() == str(tmp_path / "data" / "audit-journal")
    with (
        override_settings(
            FTPSERVER_AUDIT_JOURNAL_DIR=None, FTPSERVER_AUDIT_SPOOL_DIR=None
        ),
        pytest.raises(ImproperlyConfigured, match="FTPSERVER_AUDIT_JOURNAL_DIR"),
    ):
        audit.journal_dir()


# --- a disk that fails


@pytest.fixture
def small_disk(tmp_path):
    with mount_tmpfs(tmp_path / "disk", 64 * 1024) as path:
        yield path


def fill(directory, leave=0):
    """Fill the file system of ``directory`` but ``leave`` bytes (about)."""
    filler = os.path.join(directory, "filler")
    with open(filler, "ab", buffering=0) as fh:
        free = os.statvfs(directory)
        room = free.f_bavail * free.f_frsize - leave
        chunk = b"\0" * 4096
        while room > 0:
            try:
                room -= fh.write(chunk[: min(4096, room)])
            except OSError:
                break
    return filler


def test_a_write_the_disk_refuses_leaves_no_half_line_and_keeps_the_record(
    small_disk,
):
    directory = os.path.join(small_disk, "j")
    journal = journals.Journal(directory, DB)
    journal.queue = queue = []
    journal.add(record(1))
    filler = fill(small_disk, leave=4096)
    big = record(2, ftp_path="/" + "p" * 20_000)  # more than the room left
    journal.add(big)
    assert isinstance(journal.broken, OSError)
    # In memory (the writer's queue), and no half line on disk.
    assert queue[-1] is big
    assert [r["ftp_path"] for r in journal_lines(directory)] == ["/d1"]
    # While the database is down too, the memory is the fallback.
    journal.rotate(replay=True, queue=None)
    lost = record(3, ftp_path="/" + "q" * 20_000)
    journal.add(lost)
    # ... with the record the disk refused before: it was in no segment.
    assert list(journal.fallback) == [big, lost]
    os.unlink(filler)
    journal.add(record(4))
    assert journal.broken is None
    assert [r["ftp_path"] for r in journal_lines(directory)] == ["/d1", "/d4"]
    abandon(journal)


def test_a_new_segment_on_a_full_disk_leaves_no_half_line(small_disk):
    """Open uploads are copied into every new segment: a copy the disk cut
    short must not glue to (and spoil) the next record."""
    directory = os.path.join(small_disk, "j")
    home = os.path.join(small_disk, "home")
    os.mkdir(home)
    journal = journals.Journal(directory, DB)
    journal.queue = []
    for i in range(4):
        upload_begin(journal, home, f"u{i}.bin", username="u" * 2000)
    filler = fill(small_disk, leave=4096)
    journal.rotate()  # the copies of the four begins (8 KiB) do not fit
    os.unlink(filler)
    after = record(5)
    journal.add(after)
    abandon(journal)
    newest = journal_files(directory)[-1]
    bad = []
    items = list(journals.read_lines(str(newest), bad))
    assert bad == []
    assert rows.fields(after) in items


# --- the writer's side: recovery at start, with the database


@pytest.fixture
def audit_journal(tmp_path):
    with own_journal(tmp_path / "journal") as directory:
        yield directory


def test_the_writer_recovers_dead_journals_at_start_into_the_database(
    transactional_db, audit_journal, caplog
):
    from django.db import connection

    database = journals.database_id(connection.settings_dict)
    dead = journals.Journal(str(audit_journal), database)
    dead.add(record(1))
    dead.add(record(2))
    (path,) = journal_files(audit_journal)
    append_to_segment(path, b'{"cut')
    abandon(dead)
    # Already in the database (the dead process wrote it before it died).
    already = journal_lines(audit_journal)[0]
    rows.insert([already])
    with caplog.at_level("WARNING", logger="ftpserver_core.audit"):
        audit.writer.start()
        wait_until(
            lambda: (
                not [p for p in journal_files(audit_journal) if dead.instance in p.name]
            )
        )
        assert audit.writer.flush()
    assert sorted(AuditEvent.objects.values_list("ftp_path", flat=True)) == [
        "/d1",
        "/d2",
    ]
    assert bad_lines(audit_journal) == [b'{"cut']
    messages = [r.getMessage() for r in caplog.records]
    assert any("Unreadable line 3" in m for m in messages), messages
    assert any("Recovered 2 audit records" in m for m in messages), messages


def test_a_record_the_database_refuses_goes_to_the_bad_file_not_the_others(
    transactional_db, audit_journal, caplog
):
    with caplog.at_level("ERROR", logger="ftpserver_core.audit"):
        audit.record(**record(1))
        audit.record(**record(2, remote_port=-1))  # a CHECK constraint
        audit.record(**record(3, time="yesterday"))  # not a time at all
        audit.record(**record(4))
        assert audit.writer.flush()
    assert sorted(AuditEvent.objects.values_list("ftp_path", flat=True)) == [
        "/d1",
        "/d4",
    ]
    kept = [json.loads(line) for line in bad_lines(audit_journal)]
    assert sorted(r["ftp_path"] for r in kept) == ["/d2", "/d3"]
    assert audit.writer.rejected == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("The database refused an audit record" in m for m in messages) == 2
    assert not any("unavailable" in m for m in messages)


def test_segments_being_born_are_never_taken_by_a_recoverer(tmp_path):
    """A segment exists (created) a moment before its process locks it: a
    recoverer looking again and again meanwhile never takes one."""
    directory = tmp_path / "j"
    live = journals.Journal(str(directory), DB)
    live.queue = []
    recovered = Recovered(directory)
    done = threading.Event()

    def recover_again_and_again():
        while not done.is_set():
            try:
                recovered.recover_all()
            except FileNotFoundError:
                pass  # trimmed after the listing (see the test above)

    thread = threading.Thread(target=recover_again_and_again)
    thread.start()
    failures = []
    try:
        stop = time.monotonic() + 3
        n = 0
        while time.monotonic() < stop:
            item = record(n)
            live.add(item)
            live.rotate()
            if live.broken is not None:
                failures.append(live.broken)
            live.trim(journals.Journal.seq_of(item["uid"]))  # as after an insert
            n += 1
    finally:
        done.set()
        thread.join()
    assert n > 100
    assert failures == [] and not live.fallback
    assert recovered.records == []
    abandon(live)


def test_the_writer_looks_again_for_dead_journals_while_it_runs(
    transactional_db, audit_journal, monkeypatch
):
    from django.db import connection

    # The module (``audit.writer`` is the writer itself).
    writers = importlib.import_module("ftpserver_core.audit.writer")
    # Every 60 s in production.
    monkeypatch.setattr(writers, "RECOVER_INTERVAL", 0.5)
    monkeypatch.setattr(audit.writer, "_next_recover", 0.0)
    audit.record(**record(0))
    wait_until(lambda: AuditEvent.objects.count() == 1)  # running, start done
    # A process of the same database dies later.
    dead = journals.Journal(
        str(audit_journal), journals.database_id(connection.settings_dict)
    )
    dead.add(record(1))
    abandon(dead)
    wait_until(lambda: AuditEvent.objects.count() == 2, timeout=20)
    wait_until(
        lambda: not [p for p in journal_files(audit_journal) if dead.instance in p.name]
    )
    assert audit.writer.flush()
