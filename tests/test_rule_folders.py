"""The folders of directory rules: made with the home at login, never outside it.

The admin's everyday case: permission ``el`` on the home, a rule ``incoming``
/ ``elw`` / recursive, the home created on first login. Before, the rule's
folder never existed and the user could not make it (MKD needs ``m``).
"""

import errno
import ftplib
import html
import io
import logging
import os
import re

import pytest
from django.urls import reverse

from ftpserver_core.models import DirectoryRule, FTPUserGroup, HomeDirectory
from ftpserver_core.policy import make_folder

INCOMING = {"path": "incoming", "permission": "elw", "recursive": True}


def mode(path):
    return os.lstat(path).st_mode & 0o7777


def stor(ftp, name, data=b"payload"):
    return ftp.storbinary(f"STOR {name}", io.BytesIO(data))


def tree(root):
    """Every path under ``root``, relative to it."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def test_upload_only_to_incoming_works_from_the_first_login(live_ftp, make_account):
    account = make_account("alice", permission="el", rules=[INCOMING])
    home = account.home_path
    os.rmdir(home)  # never logged in: the home does not exist yet

    ftp = live_ftp.client("alice")
    incoming = os.path.join(home, "incoming")
    assert os.path.isdir(incoming) and not os.path.islink(incoming)
    # The same mode as the home made beside it.
    assert mode(incoming) == mode(home)
    assert ftp.nlst() == ["incoming"]
    assert stor(ftp, "incoming/report.csv").startswith("226")
    with open(os.path.join(incoming, "report.csv"), "rb") as f:
        assert f.read() == b"payload"
    with pytest.raises(ftplib.error_perm, match=r"^550 Not enough privileges"):
        stor(ftp, "root.csv")
    assert sorted(os.listdir(home)) == ["incoming"]
    ftp.quit()


def test_rule_added_later_is_created_at_the_next_login(live_ftp, make_account):
    account = make_account("alice", permission="el")
    live_ftp.client("alice").quit()
    DirectoryRule.objects.create(account=account, **INCOMING)
    assert not os.path.exists(os.path.join(account.home_path, "incoming"))
    ftp = live_ftp.client("alice")
    assert stor(ftp, "incoming/x.bin").startswith("226")
    ftp.quit()


def test_group_and_home_rules_and_templates_are_created(live_ftp, make_account):
    group = FTPUserGroup.objects.create(name="staff")
    account = make_account("alice", permission="el", group=group)
    DirectoryRule.objects.create(
        group=group, path="drop/{username}/in", permission="elw", recursive=True
    )
    DirectoryRule.objects.create(
        home_directory=account.home_directory, path="/pub/", permission="elr"
    )
    home = account.home_path
    os.rmdir(home)

    ftp = live_ftp.client("alice")
    assert os.path.isdir(os.path.join(home, "drop", "alice", "in"))
    assert os.path.isdir(os.path.join(home, "pub"))
    assert mode(os.path.join(home, "drop", "alice")) == mode(home)
    assert stor(ftp, "drop/alice/in/a.txt").startswith("226")
    ftp.quit()


def test_no_folders_without_create_on_first_login(live_ftp, make_account):
    account = make_account("alice", permission="el", rules=[INCOMING])
    HomeDirectory.objects.filter(pk=account.home_directory_id).update(
        create_on_login=False
    )
    ftp = live_ftp.client("alice")
    assert os.listdir(account.home_path) == []
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        stor(ftp, "incoming/x.bin")
    ftp.quit()


# --- nothing outside the home, nothing through a link


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside"
    path.mkdir()
    return path


def escaping_rules(account, outside):
    """Rules saved past the form's validation (an import, the shell, old rows)."""
    home = account.home_path
    os.symlink(outside, os.path.join(home, "link"))
    os.symlink(outside / "new", os.path.join(home, "dangling"))
    with open(os.path.join(home, "afile"), "wb") as f:
        f.write(b"a file in the way")
    for path in (
        "../outside/dotdot",
        "../../outside/dotdot2",
        "sub/../../outside/dotdot3",
        "link/made",
        "link/deep/er",
        "dangling",
        "dangling/under",
        "afile/sub",
        f"{outside}/absolute",
    ):
        DirectoryRule.objects.create(
            account=account, path=path, permission="elw", recursive=True
        )


def test_escaping_rules_create_nothing_outside(live_ftp, make_account, outside, caplog):
    account = make_account("alice", permission="el", home=str(outside.parent / "h"))
    escaping_rules(account, outside)
    home = account.home_path
    before = tree(home)

    with caplog.at_level(logging.WARNING, logger="ftpserver_core.policy"):
        ftp = live_ftp.client("alice")  # the login goes on
        ftp.quit()
    assert os.listdir(outside) == []
    assert not os.path.lexists(outside.parent.parent / "outside")
    # An absolute rule path is a path inside the home, as the server reads it:
    # the only folders made are that one and its parents.
    parts = str(outside / "absolute").strip("/").split("/")
    made = tree(home) - before
    assert made == {os.path.join(*parts[:i]) for i in range(1, len(parts) + 1)}
    assert os.path.islink(os.path.join(home, "dangling"))
    refused = {
        re.search(r"directory rule '([^']+)'", r.getMessage())[1]
        for r in caplog.records
    }
    assert refused == {
        "../outside/dotdot",
        "../../outside/dotdot2",
        "sub/../../outside/dotdot3",
        "link/made",
        "link/deep/er",
        "dangling",
        "dangling/under",
        "afile/sub",
    }


def test_make_folder_never_follows_a_link(tmp_path, outside):
    home = tmp_path / "home"
    home.mkdir()
    (home / "a").mkdir()
    os.symlink(outside, home / "a" / "b")
    with pytest.raises(OSError) as raised:
        make_folder(str(home), str(home / "a" / "b" / "c"))
    # O_NOFOLLOW with O_DIRECTORY: ENOTDIR on Linux, ELOOP elsewhere.
    assert raised.value.errno in (errno.ENOTDIR, errno.ELOOP)
    assert os.listdir(outside) == []
    with pytest.raises(OSError, match="is not inside the home"):
        make_folder(str(home), str(tmp_path / "outside" / "x"))
    assert os.listdir(outside) == []
    make_folder(str(home), str(home / "a" / "x" / "y"))
    assert (home / "a" / "x" / "y").is_dir()


# --- the admin's effective-policy box


def folder_notes(response):
    """{rule path template: the box's folder note} of the account page."""
    assert response.status_code == 200
    page = response.content.decode()
    return {
        html.unescape(template): html.unescape(note)
        for template, note in re.findall(
            r'<tr class="ftp-policy-rule">(?:<td>.*?</td>){4}<td>(.*?)</td>'
            r'<td class="ftp-rule-folder [^"]+">(.*?)</td></tr>',
            page,
        )
    }


def change_url(account):
    return reverse("admin:ftpserver_core_ftpuseraccount_change", args=[account.pk])


def test_admin_box_says_the_folder_is_created_at_the_next_login(
    admin_client, live_ftp, make_account
):
    account = make_account("alice", permission="el", rules=[INCOMING])
    os.rmdir(account.home_path)
    notes = folder_notes(admin_client.get(change_url(account)))
    assert notes == {"incoming": "does not exist; created at the next login"}

    live_ftp.client("alice").quit()
    notes = folder_notes(admin_client.get(change_url(account)))
    assert notes == {"incoming": "exists"}


def test_admin_box_says_the_folder_will_not_be_created(
    admin_client, make_account, outside
):
    account = make_account("alice", permission="el", rules=[INCOMING])
    HomeDirectory.objects.filter(pk=account.home_directory_id).update(
        create_on_login=False
    )
    os.symlink(outside, os.path.join(account.home_path, "link"))
    DirectoryRule.objects.create(account=account, path="link/in", permission="elw")
    notes = folder_notes(admin_client.get(change_url(account)))
    assert notes == {
        "incoming": "does not exist and will not be created: the home is not "
        "created at login (create the folder on the server, or set the home's "
        '"create on first login")',
        "link/in": "does not exist and will not be created: a link or a file is "
        "in its way, or it is outside the home",
    }
