"""Instructions per audited DELE: the IO loop's audit path and the writer's insert.

Counted by ``valgrind --tool=callgrind`` (instructions, not seconds: a busy
machine does not change them), as the difference between a run of N records
and a run of none, on the main thread only:

    python -m tests.benchmarks.audit_instructions [--records 1000]

``loop``: a DELE's signal sent as the handler sends it, the built-in
receiver, the journal line and its write (the writer is kept asleep).
``writer``: the same records inserted by the writer's code in batches of 100.
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


def child(mode, n):
    import django

    django.setup()
    from django.conf import settings

    # The writer thread stays asleep: its records are taken from its queue.
    settings.FTPSERVER_AUDIT_INTERVAL = 3600
    settings.FTPSERVER_AUDIT_BATCH_SIZE = 10**6

    from ftpserver_core.audit import rows

    _records(50)  # warm-up: imports, the journal's first segment
    records = _records(n if mode == "loop" else n + 100)
    if mode == "writer":
        rows.insert(records[:100])  # warm-up: the connection, the statement
        for start in range(100, len(records), 100):
            rows.insert(records[start : start + 100])


def _count(mode, n, out, env):
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
        ],
        check=True,
        cwd=REPO,
        env=env,
        capture_output=True,
    )
    text = Path(f"{path}-01").read_text(errors="replace")
    return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--child", choices=("loop", "writer"))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.records)
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
            mode: [_count(mode, n, tmp, env) for n in (0, args.records)]
            for mode in ("loop", "writer")
        }
    loop = (counts["loop"][1] - counts["loop"][0]) / args.records
    writer = (counts["writer"][1] - counts["writer"][0]) / args.records - loop
    print(f"IO loop, per audited DELE:     {loop:10,.0f} instructions")
    print(f"writer insert, per record:     {writer:10,.0f} instructions")


if __name__ == "__main__":
    sys.exit(main())
