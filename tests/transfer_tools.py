"""Helpers of the transfer tests: payloads, files on disk, the lftp client."""

import os
import random
import subprocess

LFTP = "/usr/bin/lftp"


def payload(size, seed=0):
    """Return ``size`` reproducible random bytes."""
    return random.Random(seed).randbytes(size)


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def run_lftp(live, script, settings, username, password, cwd=None, timeout=120):
    """Run ``lftp`` against a live server: ``settings`` then ``script``."""
    return subprocess.run(
        [
            LFTP,
            "-u",
            f"{username},{password}",
            "-p",
            str(live.port),
            "-e",
            settings + script + "; bye",
            live.host,
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        cwd=cwd,
    )
