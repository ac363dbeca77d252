"""rclone (Debian's ``rclone``) copying a nested tree; MLSD of a missing path.

rclone lists a destination directory before it makes it. pyftpdlib answered
``MLSD`` of a missing directory ``501 No such directory.``, which rclone takes
for a fatal error (171 errors copying a tree); the server answers 550, as for
LIST, and keeps 501 for a path that is a file (RFC 3659).
"""

import ftplib
import io
import os
import random
import subprocess

import pytest

from tests.certs import make_certificate
from tests.conftest import PASSWORD
from tests.transfer_tools import read, write

RCLONE = "/usr/bin/rclone"


# --- the replies, through ftplib


@pytest.fixture
def ftp(live_ftp, make_account):
    account = make_account("alice")
    home = account.home_path
    os.mkdir(os.path.join(home, "dir"))
    write(os.path.join(home, "dir", "inner.txt"), b"inner")
    write(os.path.join(home, "file.txt"), b"a file")
    os.symlink(os.path.join(home, "gone"), os.path.join(home, "dangling"))
    client = live_ftp.client("alice")
    yield client
    client.close()


def listing(ftp, command):
    lines = []
    ftp.retrlines(command, lines.append)
    return lines


def test_mlsd_of_a_missing_directory_is_550(ftp):
    for path in ("missing", "missing/deeper", "dir/missing", "dangling"):
        with pytest.raises(ftplib.error_perm) as refused:
            listing(ftp, f"MLSD {path}")
        assert str(refused.value) == f'550 "{path}": No such file or directory.'
    # The connection is still in step: the next command gets its own reply.
    assert listing(ftp, "MLSD dir")[0].endswith("; inner.txt")


def test_mlsd_of_a_file_stays_501(ftp):
    with pytest.raises(ftplib.error_perm, match=r"^501 No such directory\.$"):
        listing(ftp, "MLSD file.txt")
    # A dangling link is left out of a listing (pyftpdlib's MLSD).
    assert sorted(line.split("; ")[1] for line in listing(ftp, "MLSD")) == [
        "dir",
        "file.txt",
    ]


@pytest.mark.parametrize("command", ["MLST", "LIST", "NLST", "STAT"])
def test_other_listings_of_a_missing_path_are_550(ftp, command):
    with pytest.raises(ftplib.error_perm, match=r"^550 "):
        if command in ("MLST", "STAT"):
            ftp.sendcmd(f"{command} missing")
        else:
            listing(ftp, f"{command} missing")


# --- rclone


def rclone(*args, timeout=180):
    return subprocess.run(
        [RCLONE, "--config", os.devnull, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def remote(live, path, **options):
    """An on-the-fly rclone remote (no config file) for alice on ``live``."""
    obscured = rclone("obscure", PASSWORD)
    assert obscured.returncode == 0, obscured.stderr
    options = {
        "host": "127.0.0.1",
        "port": live.port,
        "user": "alice",
        "pass": obscured.stdout.strip(),
        **options,
    }
    return ":ftp," + ",".join(f"{k}={v}" for k, v in options.items()) + ":" + path


def make_tree(root):
    """A tree three levels deep: 30 files, an empty one, non-ASCII names."""
    rng = random.Random(13)
    files = {
        "top.txt": b"top",
        "empty.bin": b"",
        "résumé.txt": "curriculum vitæ".encode(),
    }
    for a in ("alpha", "beta", "données"):
        for b in ("one", "two"):
            for c in ("x", "y", "z"):
                files[f"{a}/{b}/{c}/file-{rng.randrange(10**6)}.bin"] = rng.randbytes(
                    rng.randrange(1, 40_000)
                )
            files[f"{a}/{b}/mid.txt"] = f"{a}/{b}".encode()
        files[f"{a}/first.txt"] = a.encode()
    for name, data in files.items():
        write(os.path.join(root, *name.split("/")), data)
    return files


def on_disk(root):
    found = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root).replace(os.sep, "/")] = read(path)
    return found


def copy_and_check(live, account, tmp_path, **options):
    source = tmp_path / "source"
    files = make_tree(source)
    assert len(files) == 30
    target = remote(live, "/dest/sub", **options)
    copied = rclone(
        "copy", "--retries", "1", "--low-level-retries", "2", source, target
    )
    assert copied.returncode == 0, copied.stderr
    assert "ERROR" not in copied.stderr, copied.stderr
    assert on_disk(os.path.join(account.home_path, "dest", "sub")) == files
    checked = rclone("check", source, target)
    assert checked.returncode == 0, checked.stderr
    assert "0 differences found" in checked.stderr, checked.stderr
    assert "30 matching files" in checked.stderr, checked.stderr


def test_rclone_copies_and_checks_a_nested_tree(live_ftp, make_account, tmp_path):
    account = make_account("alice")
    copy_and_check(live_ftp, account, tmp_path)
    # A second copy finds everything there: nothing to transfer, no error.
    again = rclone("copy", "-v", tmp_path / "source", remote(live_ftp, "/dest/sub"))
    assert again.returncode == 0, again.stderr
    assert "ERROR" not in again.stderr and "Copied" not in again.stderr, again.stderr


def test_rclone_over_explicit_ftps(ftp_server, make_account, tmp_path):
    cert = make_certificate(tmp_path / "tls")
    live = ftp_server(certfile=cert.certfile, keyfile=cert.keyfile)
    account = make_account("alice")
    copy_and_check(
        live, account, tmp_path, explicit_tls="true", no_check_certificate="true"
    )


def test_rclone_refused_login_fails(live_ftp, make_account, tmp_path):
    make_account("alice")
    (tmp_path / "one.txt").write_bytes(b"one")
    obscured = rclone("obscure", "wrong-password").stdout.strip()
    target = remote(live_ftp, "/dest", **{"pass": obscured})
    failed = rclone(
        "copy", "--retries", "1", "--low-level-retries", "1", tmp_path, target
    )
    assert failed.returncode != 0
    assert "530" in failed.stderr, failed.stderr


def test_stor_into_a_fresh_directory_as_rclone_does(live_ftp, make_account):
    """The command sequence behind rclone's copy: list, make, list, store."""
    account = make_account("alice")
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm, match=r"^550 "):
        listing(ftp, "MLSD new")
    ftp.mkd("new")
    assert listing(ftp, "MLSD new") == []
    ftp.storbinary("STOR new/a.txt", io.BytesIO(b"a"))
    ftp.quit()
    assert read(os.path.join(account.home_path, "new", "a.txt")) == b"a"
