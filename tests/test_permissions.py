"""Live tests: every permission letter, per-directory rules, permissions at login."""

import calendar
import ftplib
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ftpserver_core.models import PERMISSION_LETTERS, DirectoryRule, FTPUserAccount
from tests.conftest import PASSWORD
from tests.test_authorizers import wait_until_validated

ALL = PERMISSION_LETTERS
DENIED = "550 Not enough privileges."
# MFMT's timestamp and the epoch seconds it stands for (UTC).
MFMT_STAMP = "20200102030405"
MFMT_EPOCH = calendar.timegm((2020, 1, 2, 3, 4, 5, 0, 0, 0))


def _write(path, data=b"original"):
    with open(path, "wb") as fh:
        fh.write(data)


def _read(path):
    with open(path, "rb") as fh:
        return fh.read()


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _listing_of(ftp, command):
    lines = []
    ftp.retrlines(command, lines.append)
    return "\n".join(lines)


@dataclass
class Case:
    """One gated command: how to run it and what the home holds after success."""

    letter: str
    run: Callable
    granted: Callable


def _setup_tree(home):
    os.makedirs(os.path.join(home, "sub"))
    _write(os.path.join(home, "file.txt"))
    os.chmod(os.path.join(home, "file.txt"), 0o644)
    os.utime(os.path.join(home, "file.txt"), (1_000_000_000, 1_000_000_000))


def _unchanged(home):
    assert sorted(os.listdir(home)) == ["file.txt", "sub"]
    assert os.listdir(os.path.join(home, "sub")) == []
    assert _read(os.path.join(home, "file.txt")) == b"original"
    assert _mode(os.path.join(home, "file.txt")) == 0o644
    assert os.path.getmtime(os.path.join(home, "file.txt")) == 1_000_000_000


def _file(home):
    return os.path.join(home, "file.txt")


def _cwd(ftp):
    return ftp.cwd("sub"), ftp.pwd()


def _cwd_ok(home, result):
    reply, pwd = result
    assert reply.startswith("250")
    assert pwd == "/sub"


def _list(ftp):
    return _listing_of(ftp, "LIST")


def _list_ok(home, out):
    assert "file.txt" in out
    assert "sub" in out


def _nlst(ftp):
    return sorted(ftp.nlst())


def _nlst_ok(home, out):
    assert out == ["file.txt", "sub"]


def _mlsd(ftp):
    return {name: facts["type"] for name, facts in ftp.mlsd()}


def _mlsd_ok(home, out):
    assert out == {"file.txt": "file", "sub": "dir"}


def _size(ftp):
    ftp.voidcmd("TYPE I")
    return ftp.size("file.txt")


def _size_ok(home, out):
    assert out == len(b"original")


def _mdtm(ftp):
    return ftp.sendcmd("MDTM file.txt")


def _mdtm_ok(home, out):
    assert out == "213 20010909014640"


def _retr(ftp):
    data = io.BytesIO()
    ftp.retrbinary("RETR file.txt", data.write)
    return data.getvalue()


def _retr_ok(home, out):
    assert out == b"original"


def _appe(ftp):
    return ftp.storbinary("APPE file.txt", io.BytesIO(b"+more"))


def _appe_ok(home, out):
    assert _read(_file(home)) == b"original+more"


def _dele(ftp):
    return ftp.delete("file.txt")


def _dele_ok(home, out):
    assert out.startswith("250")
    assert sorted(os.listdir(home)) == ["sub"]


def _rmd(ftp):
    return ftp.rmd("sub")


def _rmd_ok(home, out):
    assert out.startswith("250")
    assert sorted(os.listdir(home)) == ["file.txt"]


def _rename(ftp):
    return ftp.rename("file.txt", "renamed.txt")


def _rename_ok(home, out):
    assert sorted(os.listdir(home)) == ["renamed.txt", "sub"]
    assert _read(os.path.join(home, "renamed.txt")) == b"original"


def _mkd(ftp):
    return ftp.mkd("made")


def _mkd_ok(home, out):
    assert out == "/made"
    assert os.path.isdir(os.path.join(home, "made"))


def _stor(ftp):
    return ftp.storbinary("STOR new.txt", io.BytesIO(b"uploaded"))


def _stor_ok(home, out):
    assert out.startswith("226")
    assert _read(os.path.join(home, "new.txt")) == b"uploaded"


def _stou(ftp):
    ftp.voidcmd("TYPE I")
    conn, _ = ftp.ntransfercmd("STOU")
    reply = ftp.lastresp
    with conn:
        conn.sendall(b"unique")
    ftp.voidresp()
    return reply


def _stou_ok(home, out):
    new = sorted(set(os.listdir(home)) - {"file.txt", "sub"})
    assert len(new) == 1, new
    assert new[0].startswith("ftpd.")
    assert _read(os.path.join(home, new[0])) == b"unique"


def _chmod(ftp):
    return ftp.sendcmd("SITE CHMOD 600 file.txt")


def _chmod_ok(home, out):
    assert out.startswith("200")
    assert _mode(_file(home)) == 0o600


def _mfmt(ftp):
    return ftp.sendcmd(f"MFMT {MFMT_STAMP} file.txt")


def _mfmt_ok(home, out):
    assert out.startswith(f"213 Modify={MFMT_STAMP}")
    assert os.path.getmtime(_file(home)) == MFMT_EPOCH


CASES = {
    "e-CWD": Case("e", _cwd, _cwd_ok),
    "l-LIST": Case("l", _list, _list_ok),
    "l-NLST": Case("l", _nlst, _nlst_ok),
    "l-MLSD": Case("l", _mlsd, _mlsd_ok),
    "l-SIZE": Case("l", _size, _size_ok),
    "l-MDTM": Case("l", _mdtm, _mdtm_ok),
    "r-RETR": Case("r", _retr, _retr_ok),
    "a-APPE": Case("a", _appe, _appe_ok),
    "d-DELE": Case("d", _dele, _dele_ok),
    "d-RMD": Case("d", _rmd, _rmd_ok),
    "f-RNFR/RNTO": Case("f", _rename, _rename_ok),
    "m-MKD": Case("m", _mkd, _mkd_ok),
    "w-STOR": Case("w", _stor, _stor_ok),
    "w-STOU": Case("w", _stou, _stou_ok),
    "M-SITE CHMOD": Case("M", _chmod, _chmod_ok),
    "T-MFMT": Case("T", _mfmt, _mfmt_ok),
}


def test_every_letter_has_a_case():
    assert {case.letter for case in CASES.values()} == set(PERMISSION_LETTERS)


@pytest.mark.parametrize("name", list(CASES))
def test_command_allowed_with_only_its_letter(live_ftp, make_account, name):
    case = CASES[name]
    account = make_account("alice", permission=case.letter)
    _setup_tree(account.home_path)
    ftp = live_ftp.client("alice")
    result = case.run(ftp)
    case.granted(account.home_path, result)
    ftp.quit()


@pytest.mark.parametrize("name", list(CASES))
def test_command_denied_without_its_letter(live_ftp, make_account, name):
    case = CASES[name]
    account = make_account("alice", permission=ALL.replace(case.letter, ""))
    _setup_tree(account.home_path)
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm) as info:
        case.run(ftp)
    assert str(info.value) == DENIED
    _unchanged(account.home_path)
    # The session is still usable after the refusal.
    assert ftp.pwd() == "/"
    ftp.quit()


def test_rnto_denied_when_target_lacks_f(live_ftp, make_account):
    account = make_account(
        "alice",
        permission="elrf",
        rules=[{"path": "locked", "permission": "elr", "recursive": True}],
    )
    home = account.home_path
    _write(os.path.join(home, "file.txt"))
    os.mkdir(os.path.join(home, "locked"))
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm, match="^550 Not enough privileges"):
        ftp.rename("file.txt", "locked/file.txt")
    assert os.path.exists(os.path.join(home, "file.txt"))
    assert os.listdir(os.path.join(home, "locked")) == []
    ftp.quit()


# --- per-directory rules


def _upload(ftp, path, data=b"payload"):
    """STOR ``path``; return the reply, or the error reply as a string."""
    try:
        return ftp.storbinary(f"STOR {path}", io.BytesIO(data))
    except ftplib.error_perm as exc:
        return str(exc)


@pytest.fixture
def incoming_home(make_account):
    """Return a factory of read-only accounts with incoming/ and incoming/sub/."""

    def make(username="alice", **kwargs):
        kwargs.setdefault("permission", "elr")
        account = make_account(username, **kwargs)
        os.makedirs(os.path.join(account.home_path, "incoming", "sub"))
        return account

    return make


def test_non_recursive_rule_allows_upload_only_directly_in_directory(
    live_ftp, incoming_home
):
    account = incoming_home(
        rules=[{"path": "incoming", "permission": "elrw", "recursive": False}]
    )
    home = account.home_path
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt").startswith("226")
    assert _upload(ftp, "/incoming/sub/b.txt") == DENIED
    assert _upload(ftp, "/c.txt") == DENIED
    ftp.cwd("/incoming")
    assert _upload(ftp, "d.txt").startswith("226")
    ftp.quit()
    assert _read(os.path.join(home, "incoming", "a.txt")) == b"payload"
    assert _read(os.path.join(home, "incoming", "d.txt")) == b"payload"
    assert os.listdir(os.path.join(home, "incoming", "sub")) == []
    assert sorted(os.listdir(home)) == ["incoming"]


def test_recursive_rule_allows_upload_in_subdirectories(live_ftp, incoming_home):
    account = incoming_home(
        rules=[{"path": "incoming", "permission": "elrw", "recursive": True}]
    )
    home = account.home_path
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt").startswith("226")
    assert _upload(ftp, "/incoming/sub/b.txt").startswith("226")
    assert _upload(ftp, "/c.txt") == DENIED
    ftp.quit()
    assert _read(os.path.join(home, "incoming", "a.txt")) == b"payload"
    assert _read(os.path.join(home, "incoming", "sub", "b.txt")) == b"payload"
    assert sorted(os.listdir(home)) == ["incoming"]


def test_rule_can_take_permissions_away(live_ftp, make_account):
    account = make_account(
        "alice",
        permission=ALL,
        rules=[{"path": "archive", "permission": "el", "recursive": True}],
    )
    home = account.home_path
    os.makedirs(os.path.join(home, "archive", "2024"))
    _write(os.path.join(home, "archive", "2024", "report.txt"))
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm, match="^550 Not enough privileges"):
        ftp.retrbinary("RETR /archive/2024/report.txt", lambda data: None)
    with pytest.raises(ftplib.error_perm, match="^550 Not enough privileges"):
        ftp.delete("/archive/2024/report.txt")
    assert ftp.nlst("/archive/2024") == ["report.txt"]
    assert _upload(ftp, "/top.txt").startswith("226")
    ftp.quit()
    assert os.path.exists(os.path.join(home, "archive", "2024", "report.txt"))


def test_group_rule_applies(live_ftp, incoming_home):
    account = incoming_home(group="staff")
    DirectoryRule.objects.create(
        group=account.group, path="incoming", permission="elrw", recursive=False
    )
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt").startswith("226")
    assert _upload(ftp, "/a.txt") == DENIED
    ftp.quit()
    assert os.path.exists(os.path.join(account.home_path, "incoming", "a.txt"))
    assert not os.path.exists(os.path.join(account.home_path, "a.txt"))


def test_home_directory_rule_applies(live_ftp, incoming_home):
    account = incoming_home()
    DirectoryRule.objects.create(
        home_directory=account.home_directory,
        path="incoming",
        permission="elrw",
        recursive=True,
    )
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/sub/a.txt").startswith("226")
    assert _upload(ftp, "/a.txt") == DENIED
    ftp.quit()
    assert os.path.exists(os.path.join(account.home_path, "incoming", "sub", "a.txt"))
    assert not os.path.exists(os.path.join(account.home_path, "a.txt"))


def test_home_directory_rule_with_username_placeholder(live_ftp, make_account):
    alice = make_account("alice", permission="elr")
    bob = make_account("bob", permission="elr")
    DirectoryRule.objects.create(
        home_directory=alice.home_directory,
        path="drop/{username}",
        permission="elrw",
    )
    for account in (alice, bob):
        os.makedirs(os.path.join(account.home_path, "drop", account.get_username()))
        os.makedirs(os.path.join(account.home_path, "drop", "other"))
    for account in (alice, bob):
        name = account.get_username()
        ftp = live_ftp.client(name)
        assert _upload(ftp, f"/drop/{name}/f.txt").startswith("226")
        assert _upload(ftp, "/drop/other/f.txt") == DENIED
        ftp.quit()
        assert os.path.exists(os.path.join(account.home_path, "drop", name, "f.txt"))
        assert os.listdir(os.path.join(account.home_path, "drop", "other")) == []


@pytest.mark.parametrize("other_owner", ["group", "home"])
def test_account_rule_wins_over_group_and_home_rule_denying(
    live_ftp, incoming_home, other_owner
):
    account = incoming_home(
        group="staff",
        rules=[{"path": "incoming", "permission": "elr", "recursive": False}],
    )
    owner = (
        {"group": account.group}
        if other_owner == "group"
        else {"home_directory": account.home_directory}
    )
    DirectoryRule.objects.create(path="incoming", permission="elrw", **owner)
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt") == DENIED
    ftp.quit()
    assert os.listdir(os.path.join(account.home_path, "incoming")) == ["sub"]


@pytest.mark.parametrize("other_owner", ["group", "home"])
def test_account_rule_wins_over_group_and_home_rule_granting(
    live_ftp, incoming_home, other_owner
):
    account = incoming_home(
        group="staff",
        rules=[{"path": "incoming", "permission": "elrw", "recursive": False}],
    )
    owner = (
        {"group": account.group}
        if other_owner == "group"
        else {"home_directory": account.home_directory}
    )
    DirectoryRule.objects.create(path="incoming", permission="el", **owner)
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt").startswith("226")
    ftp.quit()
    assert os.path.exists(os.path.join(account.home_path, "incoming", "a.txt"))


def test_group_rule_wins_over_home_rule(live_ftp, incoming_home):
    account = incoming_home(group="staff")
    DirectoryRule.objects.create(
        home_directory=account.home_directory, path="incoming", permission="elrw"
    )
    DirectoryRule.objects.create(group=account.group, path="incoming", permission="elr")
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt") == DENIED
    ftp.quit()
    assert os.listdir(os.path.join(account.home_path, "incoming")) == ["sub"]


def test_rules_of_another_account_do_not_apply(live_ftp, incoming_home):
    alice = incoming_home("alice")
    incoming_home(
        "bob", rules=[{"path": "incoming", "permission": "elrw", "recursive": True}]
    )
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "/incoming/a.txt") == DENIED
    ftp.quit()
    assert os.listdir(os.path.join(alice.home_path, "incoming")) == ["sub"]


# --- permissions are read at login


def test_granting_affects_only_new_sessions(live_ftp, make_account):
    account = make_account("alice", permission="elr")
    home = account.home_path
    old = live_ftp.client("alice")
    FTPUserAccount.objects.filter(pk=account.pk).update(permission="elrw")
    assert _upload(old, "old.txt") == DENIED
    wait_until_validated(live_ftp)  # see test_revoking_affects_only_new_sessions
    new = live_ftp.client("alice")
    assert _upload(new, "new.txt").startswith("226")
    # The old session still has its permissions from login.
    assert _upload(old, "old.txt") == DENIED
    old.quit()
    new.quit()
    assert sorted(os.listdir(home)) == ["new.txt"]


def test_revoking_affects_only_new_sessions(live_ftp, make_account):
    account = make_account("alice", permission="elrw")
    home = account.home_path
    old = live_ftp.client("alice")
    account.permission = "elr"
    account.save()
    # Applies to logins once a round of the state thread has seen it (a
    # repeat login is answered from memory until then: logincache.py).
    wait_until_validated(live_ftp)
    new = live_ftp.client("alice")
    assert _upload(new, "new.txt") == DENIED
    assert _upload(old, "old.txt").startswith("226")
    old.quit()
    new.quit()
    assert sorted(os.listdir(home)) == ["old.txt"]


def test_rule_changes_affect_only_new_sessions(live_ftp, incoming_home):
    account = incoming_home()
    old = live_ftp.client("alice")
    DirectoryRule.objects.create(account=account, path="incoming", permission="elrw")
    assert _upload(old, "/incoming/old.txt") == DENIED
    wait_until_validated(live_ftp)  # see test_revoking_affects_only_new_sessions
    new = live_ftp.client("alice")
    assert _upload(new, "/incoming/new.txt").startswith("226")
    old.quit()
    new.quit()
    assert sorted(os.listdir(os.path.join(account.home_path, "incoming"))) == [
        "new.txt",
        "sub",
    ]


def test_reinitialized_login_reads_permissions_again(live_ftp, make_account):
    account = make_account("alice", permission="elr")
    ftp = live_ftp.client("alice")
    assert _upload(ftp, "a.txt") == DENIED
    FTPUserAccount.objects.filter(pk=account.pk).update(permission="elrw")
    wait_until_validated(live_ftp)  # see test_revoking_affects_only_new_sessions
    ftp.login("alice", PASSWORD)
    assert _upload(ftp, "a.txt").startswith("226")
    ftp.quit()
    assert os.listdir(account.home_path) == ["a.txt"]
