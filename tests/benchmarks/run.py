"""Benchmark our server against bare pyftpdlib, side by side in one run.

usage: python -m tests.benchmarks.run [--db sqlite|postgres] [--rounds N]
       [--probes stall,smallops]

Starts both servers as subprocesses on loopback (ours with the Django
authorizer, per-login policy load and Django's default PBKDF2 hasher), runs
each probe against them alternately, and prints medians and ratios.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import probes

REPO = Path(__file__).resolve().parents[2]
N_USERS = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", default="stall,smallops")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ftpbench-"))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        DJANGO_SETTINGS_MODULE="tests.benchmarks.settings",
    )
    if args.db == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    else:
        env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/ftpsuite_bench"
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                "DROP DATABASE IF EXISTS ftpsuite_bench",
            ],
            check=True,
        )
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                "CREATE DATABASE ftpsuite_bench",
            ],
            check=True,
        )
    print(f"setting up {N_USERS + 1} accounts with the default hasher...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.fixtures",
            str(tmp / "ours"),
            str(N_USERS),
        ],
        env=env,
        check=True,
        cwd=REPO,
    )

    ours_port, bare_port = free_port(), free_port()
    ours_log = (tmp / "ours.log").open("w")  # noqa: SIM115  (closed at exit)
    servers = {
        "ours": subprocess.Popen(
            [sys.executable, "-m", "django", "ftpserver", f"127.0.0.1:{ours_port}"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=ours_log,
        ),
        "bare": subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.bare_server",
                str(bare_port),
                str(tmp / "bare"),
                str(N_USERS),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    }
    ports = {"ours": ours_port, "bare": bare_port}
    try:
        for name, proc in servers.items():
            wait_port(ports[name], proc)
        results = {name: {} for name in servers}
        for probe_name in args.probes.split(","):
            probe = getattr(probes, probe_name)
            runs = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name in servers:  # alternate: ours, bare, ours, bare...
                    runs[name].append(probe("127.0.0.1", ports[name]))
            for name in servers:
                results[name][probe_name] = probes.median_of(runs[name])
        report(results, args)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(10)


def report(results, args):
    print(f"\ndatabase: {args.db}; medians of {args.rounds} alternating rounds")
    print(f"{'probe':<10} {'figure':<18} {'ours':>10} {'bare':>10} {'ours/bare':>10}")
    for probe_name, figures in results["ours"].items():
        for key, ours in figures.items():
            bare = results["bare"][probe_name][key]
            ratio = f"{ours / bare:.2f}x" if bare else "-"
            print(f"{probe_name:<10} {key:<18} {ours:>10.1f} {bare:>10.1f} {ratio:>10}")


if __name__ == "__main__":
    main()
