"""manage.py ftpquotascan: usage recomputed from what the homes hold."""

import io
import os

import pytest
from django.core.management import CommandError, call_command

from ftpserver_core.models import QuotaUsage
from ftpserver_core.uploads import TEMP_PREFIX


def usage(account):
    row = QuotaUsage.objects.filter(pk=account.pk).values_list("bytes", "files")
    return tuple(row.first() or (0, 0))


def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(b"x" * size)


def scan(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("ftpquotascan", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_files_changed_outside_ftp_are_counted(make_account, tmp_path):
    alice = make_account("alice", quota_bytes=10**9)
    home = alice.home_path
    QuotaUsage.objects.create(account=alice, bytes=5, files=1)  # stale
    write(os.path.join(home, "a"), 1000)
    write(os.path.join(home, "sub", "deeper", "b"), 234)
    write(os.path.join(home, f"{TEMP_PREFIX}1234-c"), 999)  # an upload in progress
    outside = tmp_path / "outside"
    write(str(outside / "big"), 50_000)
    os.symlink(outside, os.path.join(home, "linked-dir"))  # not followed
    os.symlink(os.path.join(home, "a"), os.path.join(home, "link-to-a"))  # no file
    os.mkdir(os.path.join(home, "empty"))

    output = scan("alice")
    assert usage(alice) == (1234, 2)
    assert QuotaUsage.objects.get(pk=alice.pk).scanned_at is not None
    assert output.splitlines() == [
        "alice: 5 bytes, 1 files -> 1.2 KiB, 2 files (1234 bytes)"
    ]

    os.remove(os.path.join(home, "a"))
    scan("alice")
    assert usage(alice) == (234, 1)


def test_every_account_by_default(make_account):
    alice = make_account("alice")
    bob = make_account("bob")
    write(os.path.join(alice.home_path, "f"), 10)
    write(os.path.join(bob.home_path, "g"), 20)
    output = scan()
    assert usage(alice) == (10, 1) and usage(bob) == (20, 1)
    assert [line.split(":")[0] for line in output.splitlines()] == ["alice", "bob"]
    scan("--all")
    assert usage(bob) == (20, 1)


def test_unknown_user_is_an_error_naming_it(make_account):
    alice = make_account("alice")
    with pytest.raises(CommandError, match="'nobody'"):
        scan("alice", "nobody")
    assert not QuotaUsage.objects.filter(pk=alice.pk).exists()


def test_a_home_not_created_yet_holds_nothing(make_account):
    alice = make_account("alice")
    os.rmdir(alice.home_path)
    scan("alice")
    assert usage(alice) == (0, 0)


def test_a_home_that_cannot_be_walked_fails_the_command(make_account):
    alice = make_account("alice")
    bob = make_account("bob")
    os.rmdir(alice.home_path)
    write(alice.home_path, 10)  # a file where the home should be
    write(os.path.join(bob.home_path, "g"), 20)
    err = io.StringIO()
    with pytest.raises(CommandError, match="not scanned: 'alice'"):
        call_command("ftpquotascan", stdout=io.StringIO(), stderr=err)
    assert "alice: cannot scan its home" in err.getvalue()
    assert usage(bob) == (20, 1)  # the others are scanned
