"""Start and stop the benchmark's servers: ours, bare pyftpdlib, django-ftpserver.

Every server is a subprocess listening on a free loopback port, with its
file-descriptor limit raised to the hard limit (1000 idle clients need more
than the usual 1024), its output in a log file of the run's temp dir.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
# 1000 idle clients plus headroom; pyftpdlib's and our default is 512.
MAX_CONNECTIONS = 2000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit():
    """Raise this process's open-file limit to its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 65536
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def read_line(sock, deadline):
    data = b""
    while not data.endswith(b"\n"):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


class Server:
    """One server subprocess; ``name`` is how the tables call it."""

    def __init__(self, name, argv, env, cwd, log_path):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.port = None
        self.proc = None

    def start(self):
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child keeps it)
        try:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=raise_fd_limit,  # noqa: PLW1509  (no threads yet)
            )
        finally:
            log.close()

    def wait_ready(self, timeout=90):
        """Wait for the 220 greeting; raise with the log's tail if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if read_line(s, deadline).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")

    def tail(self, lines=20):
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self):
        return self.proc.pid

    def rss(self):
        """Resident memory of the server and its child processes, in bytes."""
        try:
            proc = psutil.Process(self.proc.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Only this server's own process group member: its pid.
            self.proc.kill()
            self.proc.wait(timeout)


def ours(name, env, extra_args=(), cache_ttl=None, log_dir=None, repo=None):
    """Our server (``manage.py ftpserver``) with the benchmark settings.

    ``repo``: a checkout of another revision to run instead of this one.
    """
    env = dict(env)
    if cache_ttl is not None:
        env["FTPSERVER_CREDENTIAL_CACHE_TTL"] = str(cache_ttl)
    argv = [
        sys.executable,
        "-m",
        "django",
        "ftpserver",
        "127.0.0.1:{port}",
        "--max-connections",
        str(MAX_CONNECTIONS),
        *extra_args,
    ]
    return Server(name, argv, env, repo or REPO, Path(log_dir) / f"{name}.log")


def bare(name, env, root, n_users, log_dir, extra_args=()):
    """pyftpdlib 2.2 with DummyAuthorizer and the same accounts.

    ``extra_args``: bare_server's options (``--workers``, ``--certfile``).
    """
    argv = [
        sys.executable,
        "-m",
        "tests.benchmarks.bare_server",
        "{port}",
        str(root),
        str(n_users),
        *extra_args,
    ]
    return Server(name, argv, dict(env), REPO, Path(log_dir) / f"{name}.log")


def django_ftpserver(name, project, log_dir):
    """The original django-ftpserver 1.0.0, from its own virtualenv."""
    argv = [
        str(project.python),
        "manage.py",
        "ftpserver",
        "127.0.0.1:{port}",
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")
    }
    return Server(name, argv, env, project.path, Path(log_dir) / f"{name}.log")
