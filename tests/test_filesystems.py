"""Live tests: every session is jailed in its home directory."""

import ftplib
import io
import os
import stat

import pytest

ALL = "elradfmwMT"
SECRET = b"alice's secret"


def _write(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


def _read(path):
    with open(path, "rb") as fh:
        return fh.read()


def _snapshot(root):
    """Return {relative path: bytes or 'dir' or 'link->target'} of a tree."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                result[rel] = "link->" + os.readlink(path)
            elif os.path.isdir(path):
                result[rel] = "dir"
            else:
                result[rel] = _read(path)
    return result


def _reply(call, *args):
    """Run an ftplib call; return its reply or the error reply as a string."""
    try:
        return call(*args)
    except ftplib.error_perm as exc:
        return str(exc)


def _stor(ftp, path, data=b"payload"):
    return _reply(ftp.storbinary, f"STOR {path}", io.BytesIO(data))


def _retr(ftp, path):
    data = io.BytesIO()
    reply = _reply(ftp.retrbinary, f"RETR {path}", data.write)
    return reply, data.getvalue()


# --- isolation between two users


@pytest.fixture
def alice_and_bob(make_account):
    alice = make_account("alice", permission=ALL)
    bob = make_account("bob", permission=ALL)
    _write(os.path.join(alice.home_path, "secret.txt"), SECRET)
    os.mkdir(os.path.join(alice.home_path, "private"))
    return alice, bob


def _alice_paths(alice):
    """Ways bob might try to name alice's secret file."""
    home = alice.home_path
    real = os.path.realpath(home)
    return [
        "../alice/secret.txt",
        "/../alice/secret.txt",
        "../../homes/alice/secret.txt",
        "/../../../../../../../../" + real.lstrip("/") + "/secret.txt",
        f"{home}/secret.txt",
        f"{real}/secret.txt",
        "..//../alice/./secret.txt",
    ]


def test_other_home_cannot_be_read(live_ftp, alice_and_bob):
    alice, bob = alice_and_bob
    ftp = live_ftp.client("bob")
    ftp.voidcmd("TYPE I")
    for path in _alice_paths(alice):
        reply, data = _retr(ftp, path)
        assert reply.startswith("550"), (path, reply)
        assert data == b""
        for command in ("SIZE", "MDTM"):
            reply = _reply(ftp.sendcmd, f"{command} {path}")
            assert reply.startswith("550"), (command, path, reply)
    ftp.quit()


def test_other_home_cannot_be_changed(live_ftp, alice_and_bob):
    alice, bob = alice_and_bob
    before = _snapshot(alice.home_path)
    ftp = live_ftp.client("bob")
    for path in _alice_paths(alice):
        assert _reply(ftp.delete, path).startswith("550"), path
        assert _reply(ftp.sendcmd, f"RNFR {path}").startswith("550"), path
        assert _reply(ftp.sendcmd, f"SITE CHMOD 777 {path}").startswith("550"), path
        assert _reply(ftp.sendcmd, f"MFMT 20200101000000 {path}").startswith("550")
        assert _stor(ftp, path).startswith("550"), path
        appe = _reply(ftp.storbinary, f"APPE {path}", io.BytesIO(b"x"))
        assert appe.startswith("550"), path
    ftp.quit()
    assert _snapshot(alice.home_path) == before
    assert _read(os.path.join(alice.home_path, "secret.txt")) == SECRET


@pytest.mark.parametrize(
    "path",
    ["../alice", "/../alice", "../alice/private", "HOME", "REAL", "REAL/private"],
)
def test_other_home_cannot_be_entered_or_listed(live_ftp, alice_and_bob, path):
    alice, bob = alice_and_bob
    real = os.path.realpath(alice.home_path)
    path = path.replace("HOME", alice.home_path).replace("REAL", real)
    ftp = live_ftp.client("bob")
    assert _reply(ftp.cwd, path).startswith("550")
    assert ftp.pwd() == "/"
    assert _reply(ftp.nlst, path).startswith("550")
    lines = []
    assert _reply(ftp.retrlines, f"LIST {path}", lines.append).startswith("550")
    assert lines == []
    assert _reply(ftp.sendcmd, f"RMD {path}").startswith("550")
    ftp.quit()
    assert os.path.isdir(os.path.join(alice.home_path, "private"))


def test_paths_to_other_home_land_in_own_home(live_ftp, alice_and_bob):
    alice, bob = alice_and_bob
    before = _snapshot(alice.home_path)
    ftp = live_ftp.client("bob")
    # "../alice" is "/alice" in bob's home: bob may create it, as his own.
    assert ftp.mkd("../alice") == "/alice"
    assert _stor(ftp, "/../alice/secret.txt", b"bob's").startswith("226")
    reply, data = _retr(ftp, "../../alice/secret.txt")
    assert reply.startswith("226")
    assert data == b"bob's"
    ftp.quit()
    assert _read(os.path.join(bob.home_path, "alice", "secret.txt")) == b"bob's"
    assert _snapshot(alice.home_path) == before


def test_dotdot_beyond_root_stays_at_root(live_ftp, make_account):
    account = make_account("bob")
    _write(os.path.join(account.home_path, "mine.txt"), b"mine")
    ftp = live_ftp.client("bob")
    assert ftp.pwd() == "/"
    ftp.cwd("..")
    assert ftp.pwd() == "/"
    ftp.cwd("../../../../..")
    assert ftp.pwd() == "/"
    ftp.sendcmd("CDUP")
    assert ftp.pwd() == "/"
    ftp.cwd("/../../..")
    assert ftp.pwd() == "/"
    assert ftp.nlst() == ["mine.txt"]
    assert ftp.nlst("../../..") == ["mine.txt"]
    ftp.quit()


def test_system_paths_map_inside_home(live_ftp, make_account):
    account = make_account("bob")
    ftp = live_ftp.client("bob")
    reply, data = _retr(ftp, "/etc/passwd")
    assert reply.startswith("550")
    assert data == b""
    reply, data = _retr(ftp, "../../../../../../etc/passwd")
    assert reply.startswith("550")
    assert _reply(ftp.cwd, "/etc").startswith("550")
    assert _reply(ftp.cwd, "/").startswith("250")
    assert ftp.nlst("/") == []
    # The same name, created by bob, is bob's own file.
    ftp.mkd("/etc")
    assert _stor(ftp, "/etc/passwd", b"not the real one").startswith("226")
    reply, data = _retr(ftp, "/etc/passwd")
    assert data == b"not the real one"
    ftp.quit()
    assert (
        _read(os.path.join(account.home_path, "etc", "passwd")) == b"not the real one"
    )


# --- symlinks leading out of the home


@pytest.fixture
def linked(make_account, tmp_path):
    """bob's home holds links to a directory and a file outside of it."""
    account = make_account("bob", permission=ALL)
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(outside / "secret.txt", SECRET)
    os.chmod(outside / "secret.txt", 0o640)
    home = account.home_path
    os.symlink(outside, os.path.join(home, "link"))
    os.symlink(outside / "secret.txt", os.path.join(home, "filelink"))
    os.symlink(outside / "created.txt", os.path.join(home, "dangling"))
    os.symlink("../../outside", os.path.join(home, "relative"))
    return account, str(outside)


def _outside_untouched(outside):
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert _read(os.path.join(outside, "secret.txt")) == SECRET
    assert stat.S_IMODE(os.stat(os.path.join(outside, "secret.txt")).st_mode) == 0o640


@pytest.mark.parametrize("link", ["link", "relative", "/link", "link/", "link/."])
def test_symlinked_directory_cannot_be_entered(live_ftp, linked, link):
    account, outside = linked
    assert os.path.isdir(os.path.join(account.home_path, "relative"))
    ftp = live_ftp.client("bob")
    assert _reply(ftp.cwd, link).startswith("550")
    assert ftp.pwd() == "/"
    assert _reply(ftp.nlst, link).startswith("550")
    lines = []
    assert _reply(ftp.retrlines, f"MLSD {link}", lines.append).startswith("550")
    assert lines == []
    ftp.quit()


@pytest.mark.parametrize("path", ["link/secret.txt", "relative/secret.txt", "filelink"])
def test_symlinked_file_cannot_be_read(live_ftp, linked, path):
    account, outside = linked
    ftp = live_ftp.client("bob")
    ftp.voidcmd("TYPE I")
    reply, data = _retr(ftp, path)
    assert reply.startswith("550"), reply
    assert data == b""
    assert _reply(ftp.size, path).startswith("550")
    assert _reply(ftp.sendcmd, f"MDTM {path}").startswith("550")
    ftp.quit()


@pytest.mark.parametrize(
    "path",
    ["link/new.txt", "relative/new.txt", "link/secret.txt", "filelink", "dangling"],
)
def test_nothing_written_through_symlink(live_ftp, linked, path):
    account, outside = linked
    ftp = live_ftp.client("bob")
    assert _stor(ftp, path).startswith("550")
    appe = _reply(ftp.storbinary, f"APPE {path}", io.BytesIO(b"more"))
    assert appe.startswith("550")
    assert _reply(ftp.sendcmd, f"SITE CHMOD 777 {path}").startswith("550")
    assert _reply(ftp.sendcmd, f"MFMT 20200101000000 {path}").startswith("550")
    ftp.quit()
    _outside_untouched(outside)


@pytest.mark.parametrize("path", ["link/x", "relative/x", "link/sub/x"])
def test_stou_through_symlink_is_refused(live_ftp, linked, path):
    account, outside = linked
    ftp = live_ftp.client("bob")
    ftp.voidcmd("TYPE I")
    with pytest.raises(ftplib.error_perm) as info:
        ftp.ntransfercmd(f"STOU {path}")
    assert str(info.value).startswith("550"), info.value
    assert ftp.pwd() == "/"
    ftp.quit()
    _outside_untouched(outside)


def test_stou_inside_home_still_works(live_ftp, linked):
    account, outside = linked
    os.mkdir(os.path.join(account.home_path, "dir"))
    ftp = live_ftp.client("bob")
    ftp.voidcmd("TYPE I")
    conn, _ = ftp.ntransfercmd("STOU dir/x")
    with conn:
        conn.sendall(b"unique")
    assert ftp.voidresp().startswith("226")
    ftp.quit()
    (name,) = os.listdir(os.path.join(account.home_path, "dir"))
    assert name.startswith("x.")
    assert _read(os.path.join(account.home_path, "dir", name)) == b"unique"
    _outside_untouched(outside)


def test_no_directory_tree_changes_through_symlink(live_ftp, linked, tmp_path):
    account, outside = linked
    os.mkdir(os.path.join(outside, "subdir"))
    ftp = live_ftp.client("bob")
    assert _reply(ftp.mkd, "link/newdir").startswith("550")
    assert _reply(ftp.rmd, "link/subdir").startswith("550")
    assert _reply(ftp.delete, "link/secret.txt").startswith("550")
    assert _reply(ftp.sendcmd, "RNFR link/secret.txt").startswith("550")
    assert _reply(ftp.sendcmd, "RNFR filelink").startswith("550")
    _write(os.path.join(account.home_path, "mine.txt"), b"mine")
    assert ftp.sendcmd("RNFR mine.txt").startswith("350")
    assert _reply(ftp.sendcmd, "RNTO link/mine.txt").startswith("550")
    ftp.quit()
    os.rmdir(os.path.join(outside, "subdir"))
    _outside_untouched(outside)
    assert _read(os.path.join(account.home_path, "mine.txt")) == b"mine"


def test_symlink_inside_home_is_followed(live_ftp, make_account):
    account = make_account("bob", permission=ALL)
    home = account.home_path
    os.mkdir(os.path.join(home, "real"))
    _write(os.path.join(home, "real", "f.txt"), b"inside")
    os.symlink(os.path.join(home, "real"), os.path.join(home, "alias"))
    ftp = live_ftp.client("bob")
    reply, data = _retr(ftp, "alias/f.txt")
    assert data == b"inside"
    ftp.cwd("alias")
    assert ftp.nlst() == ["f.txt"]
    ftp.quit()


# --- NUL bytes


@pytest.mark.parametrize(
    "command",
    [
        "DELE a\x00b",
        "DELE a\x00",
        "CWD a\x00b",
        "RETR a\x00b",
        "STOR a\x00b",
        "APPE a\x00b",
        "MKD a\x00b",
        "RMD a\x00b",
        "RNFR a\x00b",
        "SIZE a\x00b",
        "MDTM a\x00b",
        "MLST a\x00b",
        "STAT a\x00b",
        "SITE CHMOD 600 a\x00b",
        "MFMT 20200101000000 a\x00b",
        "STOU a\x00b",
    ],
)
def test_nul_byte_in_path_is_refused(live_ftp, make_account, command):
    account = make_account("bob", permission=ALL)
    _write(os.path.join(account.home_path, "a"), b"aaa")
    os.mkdir(os.path.join(account.home_path, "sub"))
    ftp = live_ftp.client("bob")
    with pytest.raises(ftplib.error_perm) as info:
        ftp.sendcmd(command)
    assert str(info.value).startswith("501"), info.value
    # The connection stays usable.
    assert ftp.pwd() == "/"
    ftp.cwd("sub")
    assert ftp.pwd() == "/sub"
    assert ftp.nlst("/") == ["a", "sub"]
    ftp.quit()
    assert sorted(os.listdir(account.home_path)) == ["a", "sub"]
    assert _read(os.path.join(account.home_path, "a")) == b"aaa"


def test_nul_byte_in_rnto_is_refused(live_ftp, make_account):
    account = make_account("bob", permission=ALL)
    _write(os.path.join(account.home_path, "a"), b"aaa")
    ftp = live_ftp.client("bob")
    assert ftp.sendcmd("RNFR a").startswith("350")
    with pytest.raises(ftplib.error_perm, match="^501"):
        ftp.sendcmd("RNTO b\x00c")
    assert ftp.nlst() == ["a"]
    ftp.quit()
    assert os.listdir(account.home_path) == ["a"]


# --- unusual names


UNICODE_NAMES = [
    "ünïcødé ☃.txt",
    "．．",
    "..／..／etc／passwd",
    "..\\..\\x.txt",
    "bad\ufffdname.txt",
    "e\u0301\u200d\u202etxt.exe",
    "日本語のファイル名.txt",
    "😀 emoji",
    " leading and trailing ",
    "...",
]


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_names_round_trip(live_ftp, make_account, tmp_path, name):
    account = make_account("bob", permission=ALL)
    home = account.home_path
    data = name.encode("utf-8") * 3
    ftp = live_ftp.client("bob")
    assert _stor(ftp, name, data).startswith("226")
    assert ftp.nlst() == [name]
    assert [n for n, _ in ftp.mlsd()] == [name]
    reply, got = _retr(ftp, name)
    assert got == data
    ftp.voidcmd("TYPE I")
    assert ftp.size(name) == len(data)
    ftp.quit()
    assert os.listdir(home) == [name]
    assert _read(os.path.join(home, name)) == data
    assert sorted(os.listdir(tmp_path / "homes")) == ["bob"]


def test_fullwidth_dots_are_an_ordinary_directory(live_ftp, make_account, tmp_path):
    account = make_account("bob", permission=ALL)
    home = account.home_path
    ftp = live_ftp.client("bob")
    assert ftp.mkd("．．") == "/．．"
    assert _stor(ftp, "．．/x", b"fullwidth").startswith("226")
    ftp.cwd("．．")
    assert ftp.pwd() == "/．．"
    assert ftp.nlst() == ["x"]
    reply, data = _retr(ftp, "x")
    assert data == b"fullwidth"
    ftp.cwd("..")
    assert ftp.pwd() == "/"
    ftp.quit()
    assert _read(os.path.join(home, "．．", "x")) == b"fullwidth"
    assert sorted(os.listdir(tmp_path / "homes")) == ["bob"]
    assert not os.path.exists(os.path.join(os.path.dirname(home), "x"))
    assert not (tmp_path / "x").exists()


def test_undecodable_bytes_become_replacement_character(live_ftp, make_account):
    account = make_account("bob", permission=ALL)
    ftp = live_ftp.client("bob")
    # Latin-1 "é" is not valid UTF-8: the server decodes it as U+FFFD.
    ftp.encoding = "latin-1"
    assert _stor(ftp, "café.txt", b"latin").startswith("226")
    ftp.encoding = "utf-8"
    assert ftp.nlst() == ["caf\ufffd.txt"]
    reply, data = _retr(ftp, "caf\ufffd.txt")
    assert data == b"latin"
    ftp.quit()
    assert os.listdir(account.home_path) == ["caf\ufffd.txt"]
