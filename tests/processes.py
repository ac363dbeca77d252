"""Real server processes for the tests: ``python -m django ftpserver ARGS``."""

import ftplib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .conftest import PASSWORD, database_url

REPO_ROOT = Path(__file__).resolve().parent.parent
BANNER_RE = re.compile(
    r"^Starting FTP server at (?P<scheme>ftps?)://(?P<host>\[[^\]]+\]|[^:/\[]+):"
    r"(?P<port>\d+)/$",
    re.M,
)
STARTUP_TIMEOUT = 30


def has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def command_env(extra_path=None, **extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    path = [str(REPO_ROOT)]
    if extra_path:
        path.insert(0, str(extra_path))
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join(path),
        DATABASE_URL=database_url(),
    )
    env.update(extra)
    return env


class ServerProcess:
    """``python -m django ftpserver ARGS`` with its output in files."""

    def __init__(self, args, workdir, env, program=("-m", "django")):
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = workdir / "stdout.txt"
        self.err_path = workdir / "stderr.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *program, "ftpserver", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=REPO_ROOT,
            )
        self.pid = self.proc.pid
        self.scheme = self.host = self.port = None

    @property
    def stdout(self):
        return self.out_path.read_text()

    @property
    def stderr(self):
        return self.err_path.read_text()

    def wait_started(self, timeout=STARTUP_TIMEOUT):
        """Wait for the banner's address line; parse the real host and port."""
        deadline = time.monotonic() + timeout
        while True:
            match = BANNER_RE.search(self.stdout)
            if match:
                # The banner block is written and flushed in one go.
                self.scheme = match["scheme"]
                self.host = match["host"].strip("[]")
                self.port = int(match["port"])
                return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ftpserver exited with {self.proc.returncode} before its banner:\n"
                    f"stdout: {self.stdout}\nstderr: {self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no banner after {timeout}s:\nstdout: {self.stdout}\n"
                    f"stderr: {self.stderr}"
                )
            time.sleep(0.05)

    def client(self, username=None, password=PASSWORD, source=None, timeout=10):
        ftp = ftplib.FTP(timeout=timeout, source_address=source)
        ftp.connect(self.host, self.port)
        if username is not None:
            ftp.login(username, password)
        return ftp

    def stop(self, signum=signal.SIGTERM, timeout=15):
        """Send ``signum`` and return the exit code."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self):
        """Stop the server at teardown: SIGTERM first, so prefork workers and
        audit writers finish before the next test flushes the database."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
