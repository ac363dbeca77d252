"""Benchmark our FTP server against bare pyftpdlib and django-ftpserver, in one run.

usage: python -m tests.benchmarks.run [--probes stall,smallops,...]
       [--servers ours-sqlite,ours-postgres,bare,django-ftpserver]
       [--rounds 3] [--rst PATH] [--keep-tmp]

Starts the servers side by side on 127.0.0.1, each as a subprocess, runs
every probe against them in alternating order (round r starts with the r-th
server), and prints the medians, the ratios to bare pyftpdlib and the
targets; ``--rst`` also writes them as reStructuredText.

Servers:

- ``ours-sqlite``, ``ours-postgres``: ``manage.py ftpserver`` with the
  benchmark settings (Django authorizer, policy loaded at every login,
  Django's default PBKDF2 hasher, auditing on), on SQLite or on PostgreSQL
  (127.0.0.1:5432, user postgres, database ``ftpsuite_bench_ftp``, dropped
  at the end). Besides the default configuration (credential cache on),
  the twins the probes ask for, on the same database and homes: one with
  ``FTPSERVER_CREDENTIAL_CACHE_TTL=0`` (every login hashes: the stall and
  cache-off login probes), one with ``--workers 2`` (prefork, parallel),
  one with FTPS (ftps), one with the defender off (defender), one with
  ``FTPSERVER_AUDIT_FSYNC`` (fsync), one with the default per-address
  limits (flood).
- ``baseline-sqlite``: ours as of another revision, on SQLite, from the
  checkout given with ``--baseline PATH`` (e.g. ``git worktree add
  /tmp/before REV``): a change and its baseline measured in one run.
- ``bare``: pyftpdlib 2.2 with DummyAuthorizer (the ceiling); for the
  parallel probe a prefork of 2 (bare_server.py ``--workers 2``), for the
  ftps probe its ``TLS_FTPHandler`` with the same certificate.
- ``django-ftpserver``: the original django-ftpserver 1.0.0 from PyPI, in a
  virtualenv the run creates in its temp dir.

Probes (the default: all but the opt-in ones): stall, smallops, sessions,
logins, ftpbench, transfers, idle, flood, prefork, parallel (8 client
processes against 2 workers: 4 KiB STOR, short-session cycles), ftps (4 KiB
STOR/RETR over FTPS, PROT P) (FTP), admin and export (the audit changelist
and the transfers CSV on a million records; their databases are filled once
and kept for the next runs: ``ftpsuite_bench_admin`` /
``ftpsuite_bench_export`` on PostgreSQL,
``ftpsuite_bench_{admin,export}.sqlite3`` in the temp directory).

Opt-in probes (``--probes``): ours in two configurations against bare in
each round, small files (STOR, RETR, SIZE+MDTM, DELE) and short sessions:
defender (the defender on and off), quota (an account with a quota and one
without), fsync (the audit journal with and without fsync; the journal in
the temp dir, on its disk). About 1.5 minutes a round each (mostly waiting
for the port table: see probes.wait_for_ports), both databases.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import launch, probes, report, thirdparty
from .fixtures import QUOTA_USER, account_names, make_hashes

REPO = launch.REPO
N_USERS = 100
ALL_PROBES = [
    "stall",
    "smallops",
    "sessions",
    "logins",
    "ftpbench",
    "transfers",
    "idle",
    "flood",
    "admin",
    "export",
    "prefork",
    "parallel",
    "ftps",
    "defender",
    "quota",
    "fsync",
]
# Not run unless asked for: each measures ours twice per round.
OPT_IN_PROBES = ["defender", "quota", "fsync"]
DEFAULT_PROBES = [p for p in ALL_PROBES if p not in OPT_IN_PROBES]
FTP_PROBES = {
    "stall",
    "smallops",
    "sessions",
    "logins",
    "ftpbench",
    "transfers",
    "idle",
    "prefork",
    "flood",
    "parallel",
    "ftps",
    "defender",
    "quota",
    "fsync",
}
# The variant probes: {probe: {state: (variant of ours, account)}}; the
# states and their labels are report.VARIANT_PROBES'.
VARIANT_SETUP = {
    "defender": {"on": ("main", "probe"), "off": ("nodefender", "probe")},
    "quota": {"off": ("main", "probe"), "on": ("main", QUOTA_USER)},
    "fsync": {"off": ("main", "probe"), "on": ("fsync", "probe")},
}
# The environment of each variant of ours, beside the cache and --workers.
VARIANT_ENV = {
    "nodefender": {"BENCH_DEFENDER": "0"},
    "fsync": {"BENCH_FSYNC": "1"},
}
DJANGO_FTPSERVER = "django-ftpserver"
PG = "postgres://postgres@127.0.0.1:5432/"
FTP_DB = "ftpsuite_bench_ftp"
ADMIN_ROWS = 1_000_000
EXPORT_ROWS = 1_000_000
TEN_MIB = 10 * probes.MIB


def mount_tmpfs(path, size="16g"):
    """Mount a tmpfs at ``path`` if this process may; return whether it did."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def log(message):
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def pg_admin(sql, params=None):
    import psycopg

    with psycopg.connect(PG + "postgres", autocommit=True, connect_timeout=10) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def pg_recreate(name):
    assert name.startswith("ftpsuite_bench")
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_admin(f'CREATE DATABASE "{name}"')


def pg_exists(name):
    return bool(pg_admin("SELECT 1 FROM pg_database WHERE datname = %s", [name]))


class Bench:
    def __init__(self, args):
        self.args = args
        self.probes = args.probes
        self.servers = args.servers
        self.rounds = args.rounds
        self.tmp = Path(tempfile.mkdtemp(prefix="ftpsuite-bench-"))
        # Home directories in memory (a tmpfs of the run's own) when root can
        # mount one: transfers then measure the servers, not a disk that
        # other users share. Not /dev/shm: the server refuses homes under
        # /dev (a system directory).
        self.homes = Path(
            tempfile.mkdtemp(prefix="ftpsuite-bench-homes-", dir=args.homes)
        )
        self.homes_mounted = args.homes is None and mount_tmpfs(self.homes)
        self.results = report.Results()
        self.procs = {}  # (public name, variant) -> launch.Server
        self.ftpbench_script = None
        self.env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            DJANGO_SETTINGS_MODULE="tests.benchmarks.settings",
            BENCH_TMP=str(self.tmp),
        )
        self.started = time.monotonic()
        self.load_start = os.getloadavg()
        self.versions = {}
        self.cert = None  # tests.certs.CertFiles, for the ftps probe

    # --- setup ------------------------------------------------------------------

    def db_url(self, server, purpose):
        """DATABASE_URL of ``server`` (ours-sqlite/ours-postgres) for a purpose."""
        if server == "baseline-sqlite":
            return f"sqlite:///{self.tmp / 'baseline.sqlite3'}"
        if server == "ours-sqlite":
            if purpose == "ftp":
                return f"sqlite:///{self.tmp / 'ours.sqlite3'}"
            return f"sqlite:///{Path(tempfile.gettempdir()) / f'ftpsuite_bench_{purpose}.sqlite3'}"
        return PG + (FTP_DB if purpose == "ftp" else f"ftpsuite_bench_{purpose}")

    def django_env(self, server, purpose):
        return dict(self.env, DATABASE_URL=self.db_url(server, purpose))

    def variants_needed(self):
        needed = {"main"}
        if {"stall", "logins"} & set(self.probes):
            needed.add("nocache")
        if {"prefork", "parallel"} & set(self.probes):
            needed.add("workers2")
        if "flood" in self.probes:
            needed.add("flood")
        if "ftps" in self.probes:
            needed.add("tls")
        for probe, states in VARIANT_SETUP.items():
            if probe in self.probes:
                needed.update(variant for variant, _ in states.values())
        return needed

    def bare_variants(self):
        """{variant: bare_server options} of the bare servers the probes need."""
        variants = {"main": ()}
        if "parallel" in self.probes:
            variants["workers2"] = ("--workers", "2")
        if "ftps" in self.probes:
            variants["tls"] = (
                "--certfile",
                self.cert.certfile,
                "--keyfile",
                self.cert.keyfile,
            )
        return variants

    def setup(self):
        ftp = bool(FTP_PROBES & set(self.probes))
        if not ftp:
            return
        names = account_names(N_USERS)
        if "ftps" in self.probes:
            from tests.certs import make_certificate

            self.cert = make_certificate(self.tmp / "tls", common_name="127.0.0.1")
        log(f"password hashes for {len(names)} accounts (PBKDF2, cached)...")
        hashes_file = self.tmp / "hashes.json"
        thirdparty.write_hashes(hashes_file, make_hashes(names))
        to_start = []
        for server in self.servers:
            if server == "baseline-sqlite":
                self.setup_baseline(server, hashes_file)
            elif server in report.OURS:
                if server == "ours-postgres":
                    pg_recreate(FTP_DB)
                log(f"{server}: migrate and create the accounts...")
                env = self.django_env(server, "ftp")
                root = self.homes / server
                thirdparty.run(
                    [
                        sys.executable,
                        "-m",
                        "tests.benchmarks.fixtures",
                        str(root),
                        str(hashes_file),
                    ],
                    timeout=600,
                    env=env,
                    cwd=REPO,
                )
                for variant in sorted(self.variants_needed()):
                    extra, ttl = (), None
                    if variant == "nocache":
                        ttl = 0
                    elif variant == "workers2":
                        extra = ("--workers", "2")
                    variant_env = dict(env, **VARIANT_ENV.get(variant, {}))
                    if variant == "tls":
                        variant_env.update(
                            BENCH_CERTFILE=self.cert.certfile,
                            BENCH_KEYFILE=self.cert.keyfile,
                        )
                    if variant == "flood":
                        # The defaults' per-address limits, the defender off:
                        # what admission alone does (test_admission.py has
                        # the defender's part).
                        ttl = 0
                        variant_env = dict(env, BENCH_DEFAULT_LIMITS="1")
                    self.procs[server, variant] = launch.ours(
                        f"{server}-{variant}", variant_env, extra, ttl, self.tmp
                    )
            elif server == "bare":
                for variant, extra in self.bare_variants().items():
                    self.procs[server, variant] = launch.bare(
                        "bare" if variant == "main" else f"bare-{variant}",
                        self.env,
                        self.homes / "bare",
                        N_USERS,
                        self.tmp,
                        extra,
                    )
            elif server == DJANGO_FTPSERVER:
                log("django-ftpserver 1.0.0: virtualenv and project...")
                project = thirdparty.DjangoFtpserverProject(
                    self.tmp, self.homes / DJANGO_FTPSERVER
                )
                version, django_version, pyftpdlib_version = project.install()
                self.versions[DJANGO_FTPSERVER] = (
                    f"django-ftpserver {version}, Django {django_version}, "
                    f"pyftpdlib {pyftpdlib_version}"
                )
                project.create(hashes_file, names)
                self.procs[server, "main"] = launch.django_ftpserver(
                    DJANGO_FTPSERVER, project, self.tmp
                )
        if "ftpbench" in self.probes:
            log("ftpbench from the pyftpdlib 2.2.0 sdist...")
            self.ftpbench_script = thirdparty.fetch_ftpbench(self.tmp)
        for proc in self.procs.values():
            proc.start()
            to_start.append(proc)
        for proc in to_start:
            proc.wait_ready()
        log("servers ready: " + ", ".join(f"{p.name}:{p.port}" for p in to_start))

    def teardown(self):
        for proc in self.procs.values():
            proc.stop()
        if "ours-postgres" in self.servers and FTP_PROBES & set(self.probes):
            try:
                pg_admin(f'DROP DATABASE IF EXISTS "{FTP_DB}" WITH (FORCE)')
            except Exception as exc:
                log(f"could not drop {FTP_DB}: {exc}")
        if self.homes_mounted:
            subprocess.run(["umount", str(self.homes)], check=False)
        shutil.rmtree(self.homes, ignore_errors=True)
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers --------------------------------------------------------------

    def port(self, server, variant="main"):
        return self.procs[server, variant].port

    def clear_uploads(self, server, pattern="t*.bin"):
        """Delete the probe account's uploads (they live in memory)."""
        for path in (self.homes / server / "probe").glob(pattern):
            path.unlink()

    def ftp_servers(self, exclude=()):
        return [s for s in self.servers if s not in exclude]

    def alternate(self, probe, servers, measure, max_rounds=None):
        """Run ``measure(server, round)`` for every round, rotating the order."""
        max_rounds = max_rounds or {}
        for r in range(self.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for server in order:
                if r >= max_rounds.get(server, self.rounds):
                    continue
                self.attempt(probe, server, r, measure)

    def attempt(self, probe, server, r, measure, label=None):
        t = time.monotonic()
        try:
            figures = measure(server, r)
        except Exception as exc:
            self.note(f"{probe} on {server}, round {r + 1} failed: {exc!r}")
            traceback.print_exc()
            return
        self.results.add(probe, server, figures)
        shown = ", ".join(
            f"{k}={report.fmt(v)}"
            for k, v in sorted(figures.items())
            if isinstance(v, int | float)
        )
        log(
            f"{probe:9s} {label or server:17s} round {r + 1}: {shown} "
            f"({time.monotonic() - t:.0f} s)"
        )

    def note(self, text):
        self.results.notes.append(text)
        log("NOTE: " + text)

    def setup_baseline(self, server, hashes_file):
        """Ours at another revision: its own code, database and accounts."""
        if not self.args.baseline:
            raise SystemExit("baseline-sqlite needs --baseline PATH (a checkout).")
        repo = Path(self.args.baseline).resolve()
        log(f"{server}: {repo}: migrate and create the accounts...")
        env = dict(
            self.django_env(server, "ftp"),
            PYTHONPATH=str(repo),
        )
        thirdparty.run(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.fixtures",
                str(self.homes / server),
                str(hashes_file),
            ],
            timeout=600,
            env=env,
            cwd=repo,
        )
        self.procs[server, "main"] = launch.ours(
            f"{server}-main", env, (), None, self.tmp, repo=repo
        )

    # --- FTP probes -------------------------------------------------------------

    def probe_stall(self):
        def measure(server, r):
            variant = "nocache" if server in report.OURS else "main"
            return probes.stall(
                "127.0.0.1", self.port(server, variant), n_users=N_USERS
            )

        self.alternate("stall", self.ftp_servers(), measure)

    def probe_smallops(self):
        self.alternate(
            "smallops",
            self.ftp_servers(),
            lambda server, r: probes.smallops(
                "127.0.0.1", self.port(server), self.homes / server / "probe"
            ),
        )

    def probe_sessions(self):
        self.alternate(
            "sessions",
            self.ftp_servers(),
            lambda server, r: probes.sessions("127.0.0.1", self.port(server)),
        )

    def probe_logins(self):
        users = [f"u{i}" for i in range(N_USERS)]
        cores = os.cpu_count() or 1

        def measure(server, r):
            figures = {}
            ours = server in report.OURS
            if server != "bare":
                t_hash = probes.pbkdf2_seconds()
                figures["pbkdf2_ms"] = t_hash * 1000
                figures["hasher_limit_s"] = len(users) * t_hash / cores
            port = self.port(server, "nocache" if ours else "main")
            burst = probes.login_burst("127.0.0.1", port, users)
            figures["burst_s"] = burst["seconds"]
            figures["fails"] = burst["fails"]
            if burst["fails"]:
                self.note(
                    f"logins on {server}: {burst['fails']} failed {burst['errors']}"
                )
            if "hasher_limit_s" in figures:
                figures["burst_vs_limit"] = burst["seconds"] / figures["hasher_limit_s"]
            if server != DJANGO_FTPSERVER:
                # Warm the cache with one login, then 100 at once.
                probes.close_quietly(
                    probes.login("127.0.0.1", self.port(server), "probe")
                )
                cached = probes.login_burst(
                    "127.0.0.1", self.port(server), ["probe"] * len(users)
                )
                figures["cached_burst_s"] = cached["seconds"]
                figures["fails"] += cached["fails"]
            return figures

        if DJANGO_FTPSERVER in self.servers:
            self.note(
                "logins on django-ftpserver: one round, cache-off burst only (it "
                "has no credential cache; it hashes on its IO loop, one login at "
                "a time, so a burst of 100 takes 100 PBKDF2 checks in a row)."
            )
        self.alternate("logins", self.ftp_servers(), measure, {DJANGO_FTPSERVER: 1})

    def probe_flood(self):
        """Ours only: bare pyftpdlib hashes nothing (DummyAuthorizer)."""

        def measure(server, r):
            return probes.flood("127.0.0.1", self.port(server, "flood"), "u1")

        self.alternate(
            "flood", [s for s in self.ftp_servers() if s in report.OURS], measure
        )

    def probe_ftpbench(self):
        def measure(server, r):
            port = self.port(server)
            figures = probes.ftpbench(
                self.ftpbench_script, "127.0.0.1", port, "transfer"
            )
            if server != DJANGO_FTPSERVER or r == 0:
                figures.update(
                    probes.ftpbench(
                        self.ftpbench_script, "127.0.0.1", port, "concurrence", 100
                    )
                )
            return figures

        if DJANGO_FTPSERVER in self.servers:
            self.note(
                "ftpbench concurrence on django-ftpserver: one round (its 100 "
                "serial logins hash one after another on its IO loop)."
            )
        self.alternate("ftpbench", self.ftp_servers(), measure)

    def open_sessions(self, servers_variants, n=100):
        sessions = {}
        for key in servers_variants:
            server, variant = key
            port = self.procs[key].port
            log(f"{n} sessions on {server}-{variant}...")
            try:
                probes.put_file("127.0.0.1", port, "big10m", TEN_MIB)
                sessions[key] = probes.Sessions("127.0.0.1", port, n)
            except Exception as exc:
                self.note(f"sessions on {server}-{variant} failed: {exc!r}")
        return sessions

    def probe_transfers(self):
        sessions = self.open_sessions([(s, "main") for s in self.ftp_servers()])
        try:

            def measure(server, r):
                s = sessions[server, "main"]
                retr_s, got = s.retr_all("big10m")
                if got != TEN_MIB * len(s.clients):
                    raise RuntimeError(f"RETR received {got} bytes")
                stor_s = s.stor_all(TEN_MIB)
                self.clear_uploads(server)
                return {"retr_s": retr_s, "stor_s": stor_s}

            self.alternate(
                "transfers",
                [s for s in self.ftp_servers() if (s, "main") in sessions],
                measure,
            )
        finally:
            for s in sessions.values():
                s.close()
            for server, _ in sessions:
                self.clear_uploads(server, "big10m")

    def probe_idle(self):
        servers = self.ftp_servers(exclude=[DJANGO_FTPSERVER])
        if DJANGO_FTPSERVER in self.servers:
            self.note(
                "idle: django-ftpserver not measured (1000 logins would hash one "
                "after another on its IO loop: 1000 PBKDF2 checks in a row)."
            )

        def measure(server, r):
            proc = self.procs[server, "main"]
            return probes.idle("127.0.0.1", proc.port, proc.rss)

        self.alternate("idle", servers, measure)

    def probe_prefork(self):
        ours = [s for s in self.servers if s in report.OURS]
        keys = [(s, v) for s in ours for v in ("main", "workers2")]
        sessions = self.open_sessions(keys)
        try:
            for r in range(self.rounds):
                for server in ours:
                    variants = (
                        ["main", "workers2"] if r % 2 == 0 else ["workers2", "main"]
                    )
                    for variant in variants:
                        key = "w1_stor_s" if variant == "main" else "w2_stor_s"
                        if (server, variant) not in sessions:
                            continue

                        def measure(server, r, variant=variant, key=key):
                            seconds = sessions[server, variant].stor_all(TEN_MIB)
                            self.clear_uploads(server)
                            return {key: seconds}

                        self.attempt("prefork", server, r, measure)
            for server in ours:
                w1 = self.results.median("prefork", "w1_stor_s", server)
                w2 = self.results.median("prefork", "w2_stor_s", server)
                if w1 and w2:
                    self.results.add("prefork", server, {"speedup": w1 / w2})
        finally:
            for s in sessions.values():
                s.close()
            for server, _ in sessions:
                self.clear_uploads(server, "big10m")

    def ours_and_bare(self, probe, why):
        """The servers a probe measures when only ours and bare can take it."""
        servers = [s for s in self.ftp_servers() if s in report.OURS or s == "bare"]
        others = [s for s in self.servers if s not in servers]
        if others:
            self.note(f"{probe}: {', '.join(others)} not measured ({why}).")
        return servers

    def probe_parallel(self):
        """--workers 2 against a prefork of 2 bare servers, 8 client processes."""

        def measure(server, r):
            return probes.parallel(
                "127.0.0.1",
                self.port(server, "workers2"),
                self.homes / server / "probe",
            )

        self.alternate(
            "parallel",
            self.ours_and_bare("parallel", "started with one process only"),
            measure,
        )

    def probe_ftps(self):
        def measure(server, r):
            figures = probes.ftps_small_files(
                "127.0.0.1", self.port(server, "tls"), self.cert.certfile
            )
            if r == 0:
                self.note(f"ftps on {server}: {figures['tls_version']}.")
            return figures

        self.alternate(
            "ftps", self.ours_and_bare("ftps", "started without FTPS"), measure
        )

    def probe_variants(self, probe):
        """Ours in each state of ``probe`` and bare, alternating every round.

        Bare pyftpdlib is measured once a round and its figures recorded
        under every state: each state's ratio is to the same bare.
        """
        states = VARIANT_SETUP[probe]
        entries = [
            (server, state)
            for server in self.ours_and_bare(probe, "ours and bare only")
            for state in ([None] if server == "bare" else states)
        ]

        def measure_entry(server, state):
            variant, user = ("main", "probe") if state is None else states[state]

            def measure(server, r):
                figures = probes.small_files_and_sessions(
                    "127.0.0.1",
                    self.port(server, variant),
                    self.homes / server / user,
                    user,
                )
                tags = states if state is None else [state]
                return {f"{tag}_{k}": v for tag in tags for k, v in figures.items()}

            return measure

        for r in range(self.rounds):
            shift = r % len(entries)
            for server, state in entries[shift:] + entries[:shift]:
                label = server if state is None else f"{server} {probe} {state}"
                self.attempt(probe, server, r, measure_entry(server, state), label)

    def probe_defender(self):
        self.probe_variants("defender")

    def probe_quota(self):
        self.probe_variants("quota")

    def probe_fsync(self):
        self.probe_variants("fsync")

    # --- admin and export ---------------------------------------------------------

    def admin_probe(self, server, purpose, *args, timeout=1800):
        out = thirdparty.run(
            [sys.executable, "-m", "tests.benchmarks.admin_probe", *args],
            timeout=timeout,
            env=self.django_env(server, purpose),
            cwd=REPO,
        )
        return json.loads(out.strip().splitlines()[-1])

    def ensure_filled(self, server, purpose, rows):
        if server == "ours-postgres" and not pg_exists(f"ftpsuite_bench_{purpose}"):
            pg_admin(f'CREATE DATABASE "ftpsuite_bench_{purpose}"')
        log(
            f"{purpose} database of {server}: {rows:,} rows (filled once, then kept)..."
        )
        t = time.monotonic()
        got = self.admin_probe(
            server, purpose, f"fill-{purpose}", str(rows), timeout=3600
        )
        log(f"  {got['rows']:,} rows ready ({time.monotonic() - t:.0f} s)")

    def probe_admin(self):
        for server in [s for s in self.servers if s in report.OURS]:
            try:
                self.ensure_filled(server, "admin", ADMIN_ROWS)
                got = self.admin_probe(server, "admin", "changelist", str(self.rounds))
            except Exception as exc:
                self.note(f"admin on {server} failed: {exc}")
                continue
            self.results.details[server] = got
            cases = got["cases"]

            def worst(kind, cases=cases):
                return max(
                    (c for c in cases if c["kind"] == kind),
                    key=lambda c: c["median_ms"],
                )

            unfiltered = next(c for c in cases if c["name"] == "unfiltered")
            figures = {
                "unfiltered_ms": unfiltered["median_ms"],
                "filter_worst_ms": worst("filter")["median_ms"],
                "search_worst_ms": worst("search")["median_ms"],
            }
            self.results.add("admin", server, figures)
            for c in cases:
                log(
                    f"admin     {server:17s} {c['name']:22s} {c['median_ms']:8.1f} ms ({c['queries']} queries)"
                )
            log(f"admin     {server}: slowest filter {worst('filter')['name']!r}")

    def probe_export(self):
        for server in [s for s in self.servers if s in report.OURS]:
            try:
                self.ensure_filled(server, "export", EXPORT_ROWS)
                got = self.admin_probe(server, "export", "export")
            except Exception as exc:
                self.note(f"export on {server} failed: {exc}")
                continue
            figures = {
                "csv_s": got["csv_s"],
                "peak_rss_mb": got["peak_rss"] / probes.MB,
                "lines": got["lines"],
            }
            self.results.add("export", server, figures)
            log(f"export    {server:17s} {got}")

    # --- the run ----------------------------------------------------------------

    def run(self):
        try:
            self.setup()
            for probe in self.probes:
                log(f"== {probe}")
                getattr(self, f"probe_{probe}")()
        finally:
            self.teardown()
        self.load_end = os.getloadavg()
        return self.render()

    def render(self):
        elapsed = time.monotonic() - self.started
        try:
            import pyftpdlib

            ours_versions = f"pyftpdlib {pyftpdlib.__ver__}"
        except ImportError:
            ours_versions = ""
        import django

        lines = [
            f"Run of {datetime.datetime.now().isoformat(timespec='minutes')}: "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Django {django.get_version()}, {ours_versions}; medians of "
            f"{self.rounds} alternating rounds; {elapsed / 60:.1f} minutes; load "
            f"average {self.load_start[0]:.2f} at the start, "
            f"{self.load_end[0]:.2f} at the end.",
        ]
        if DJANGO_FTPSERVER in self.versions:
            lines.append(
                f"django-ftpserver's virtualenv: {self.versions[DJANGO_FTPSERVER]}."
            )
        text = "\n".join(lines) + "\n\n"
        text += report.figures_table(self.results, self.servers, self.rounds) + "\n"
        targets = report.targets_table(self.results, self.servers)
        if targets:
            text += "\nTargets:\n\n" + targets + "\n"
        admin = report.admin_table(self.results.details)
        if admin:
            text += (
                "\nAdmin changelist cases (median server time, 1,000,000 audit "
                "records):\n\n" + admin + "\n"
            )
        if self.results.notes:
            text += (
                "\nNotes:\n\n" + "\n".join(f"- {n}" for n in self.results.notes) + "\n"
            )
        return text


def parse_list(value, allowed, what):
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})"
        )
    return items


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument(
        "--probes",
        default=",".join(DEFAULT_PROBES),
        help=f"default: {','.join(DEFAULT_PROBES)}; opt-in: {','.join(OPT_IN_PROBES)}",
        type=lambda v: parse_list(v, ALL_PROBES, "probe"),
    )
    parser.add_argument(
        "--servers",
        default=",".join(report.SERVERS),
        type=lambda v: parse_list(v, report.SERVERS, "server"),
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline",
        help="a checkout of an earlier revision, run as the server baseline-sqlite",
    )
    parser.add_argument("--rst", help="also write the tables to this file")
    parser.add_argument(
        "--homes",
        help="parent directory of the FTP home directories (default: /dev/shm "
        "when it has 8 GB free, else the temp dir)",
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temp dir (logs, homes)"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    launch.raise_fd_limit()
    bench = Bench(args)
    log(
        f"probes {','.join(args.probes)}; servers {','.join(args.servers)}; "
        f"{args.rounds} rounds; load average {bench.load_start[0]:.2f}; tmp {bench.tmp}"
    )
    text = bench.run()
    print("\n" + text)
    if args.rst:
        Path(args.rst).write_text(text)
        log(f"wrote {args.rst}")


if __name__ == "__main__":
    main()
