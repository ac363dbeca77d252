"""Instructions per audited DELE: the IO loop's audit path and the writer's insert.

Counted by ``valgrind --tool=callgrind`` (instructions, not seconds: a busy
machine does not change them), as the difference between a run of N records
and a run of none, on the main thread only:

    python -m tests.benchmarks.audit_instructions [--records 1000]

``loop``: a DELE's signal sent as the handler sends it, the built-in
receiver, the journal line and its write (the writer is kept asleep).
``writer``: the same records inserted by the writer's code in batches of 100,
with the part SQLite runs without the GIL (on PostgreSQL the server does the
database's work, in its own process);
``--tuples`` takes the tuple path instead of the JSON batch, to compare.
Needs valgrind, and a database the benchmark settings reach (SQLite in a
temporary directory by default; DATABASE_URL for another).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _records(n):
    """Send ``n`` DELE signals as a session's handler does; return the records."""
    from ftpserver_core import audit, signals

    class Policy:
        account_id = None
        group = "bench"

    class Handler:
        remote_ip = "127.0.0.1"
        remote_port = 40000
        session_id = "0123456789abcdef"
        tls = False
        policy = Policy()

    handler = Handler()
    for i in range(n):
        with audit.batch():
            signals.dispatch(
                signals.ftp_file_deleted,
                Handler,
                handler=handler,
                remote_ip=handler.remote_ip,
                session_id=handler.session_id,
                remote_port=handler.remote_port,
                tls=False,
                username="probe",
                path=f"/srv/ftp/probe/f{i}",
                ftp_path=f"/f{i}",
            )
    records = list(audit.writer._queue)
    audit.writer._queue.clear()
    return records


def child(mode, n, tuples=False):
    import django

    django.setup()
    from django.conf import settings

    # The writer thread stays asleep: its records are taken from its queue.
    settings.FTPSERVER_AUDIT_INTERVAL = 3600
    settings.FTPSERVER_AUDIT_BATCH_SIZE = 10**6

    from ftpserver_core.audit import rows

    if tuples:
        rows._fast_sql = lambda: None
    _records(50)  # warm-up: imports, the journal's first segment
    records = _records(n if mode == "loop" else n + 100)
    if mode == "writer":
        rows.insert(records[:100])  # warm-up: the connection, the statement
        for start in range(100, len(records), 100):
            rows.insert(records[start : start + 100])


# The calls the sqlite3 module makes without the GIL (inclusive counts).
_WITHOUT_GIL = re.compile(r":(?:sqlite3_step|sqlite3_prepare_v2) \[")


def _count(mode, n, out, env, tuples=False):
    """Return (instructions, of which run without the GIL) of one run."""
    path = Path(out) / f"cg.{mode}.{n}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={path}",
            sys.executable,
            "-m",
            "tests.benchmarks.audit_instructions",
            "--child",
            mode,
            "--records",
            str(n),
            *(["--tuples"] if tuples else []),
        ],
        check=True,
        cwd=REPO,
        env=env,
        capture_output=True,
    )
    text = Path(f"{path}-01").read_text(errors="replace")
    total = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", f"{path}-01"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    library = sum(
        int(line.split()[0].replace(",", ""))
        for line in annotated.splitlines()
        if _WITHOUT_GIL.search(line)
    )
    return total, library


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--child", choices=("loop", "writer"))
    parser.add_argument(
        "--tuples", action="store_true", help="insert by the tuple path, not JSON"
    )
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.records, args.tuples)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="tests.benchmarks.settings",
            BENCH_TMP=tmp,
        )
        env.setdefault("DATABASE_URL", f"sqlite:///{tmp}/audit.sqlite3")
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity=0"],
            check=True,
            cwd=REPO,
            env=env,
        )
        counts = {
            mode: [_count(mode, n, tmp, env, args.tuples) for n in (0, args.records)]
            for mode in ("loop", "writer")
        }

    def per_record(mode, part):
        return (counts[mode][1][part] - counts[mode][0][part]) / args.records

    loop = per_record("loop", 0)
    writer = per_record("writer", 0) - loop
    library = per_record("writer", 1) - per_record("loop", 1)
    print(f"IO loop, per audited DELE:     {loop:10,.0f} instructions")
    print(f"writer insert, per record:     {writer:10,.0f} instructions")
    print(f"  of which SQLite without the GIL: {library:10,.0f}")
    print(f"  holding the GIL:                 {writer - library:10,.0f}")


if __name__ == "__main__":
    sys.exit(main())
