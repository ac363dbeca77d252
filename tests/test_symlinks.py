"""Live tests: links inside a home neither bypass its rules nor leak real paths."""

import ftplib
import io
import os
import stat

import pytest

from tests.test_filesystems import _read, _reply, _snapshot, _stor, _write

ALL = "elradfmwMT"
DENIED = "550 Not enough privileges."


def _appe(ftp, path, data=b"+more"):
    return _reply(ftp.storbinary, f"APPE {path}", io.BytesIO(data))


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _list(ftp, path=""):
    lines = []
    ftp.retrlines(f"LIST {path}".rstrip(), lines.append)
    return lines


def _names(lines):
    """The name column of LIST lines: the 9th field to the end of the line."""
    return sorted(line.split(None, 8)[8] for line in lines)


# --- rules are decided on the real path


@pytest.fixture
def protected(make_account):
    """alice may do anything but change in/ (rule "elr"); alias -> in, flink -> in/file.

    The links are absolute, as the server's real paths: what an administrator
    (or another program sharing the tree) would create.
    """
    account = make_account(
        "alice",
        permission=ALL,
        rules=[{"path": "in", "permission": "elr", "recursive": True}],
    )
    home = account.home_path
    os.makedirs(os.path.join(home, "in", "sub"))
    _write(os.path.join(home, "in", "file"), b"protected")
    os.chmod(os.path.join(home, "in", "file"), 0o644)
    os.utime(os.path.join(home, "in", "file"), (1_000_000_000, 1_000_000_000))
    _write(os.path.join(home, "mine.txt"), b"mine")
    os.symlink(os.path.join(home, "in"), os.path.join(home, "alias"))
    os.symlink("in", os.path.join(home, "rel"))
    os.symlink(os.path.join(home, "in", "file"), os.path.join(home, "flink"))
    return account


def _in_untouched(home, before):
    assert _snapshot(os.path.join(home, "in")) == before
    assert _read(os.path.join(home, "in", "file")) == b"protected"
    assert _mode(os.path.join(home, "in", "file")) == 0o644
    assert os.path.getmtime(os.path.join(home, "in", "file")) == 1_000_000_000
    assert _read(os.path.join(home, "mine.txt")) == b"mine"


@pytest.mark.parametrize("link", ["alias", "rel", "/alias", "alias/sub/.."])
def test_nothing_written_into_protected_dir_through_link(live_ftp, protected, link):
    home = protected.home_path
    before = _snapshot(os.path.join(home, "in"))
    ftp = live_ftp.client("alice")
    assert _stor(ftp, f"{link}/new.txt") == DENIED
    assert _stor(ftp, f"{link}/file") == DENIED
    assert _appe(ftp, f"{link}/file") == DENIED
    assert _reply(ftp.mkd, f"{link}/newdir") == DENIED
    assert _reply(ftp.delete, f"{link}/file") == DENIED
    assert _reply(ftp.rmd, f"{link}/sub") == DENIED
    assert _reply(ftp.sendcmd, f"SITE CHMOD 777 {link}/file") == DENIED
    assert _reply(ftp.sendcmd, f"SITE CHMOD 777 {link}/sub") == DENIED
    assert _reply(ftp.sendcmd, f"MFMT 20200101000000 {link}/file") == DENIED
    ftp.cwd(link)
    assert _stor(ftp, "cwd.txt") == DENIED
    ftp.quit()
    _in_untouched(home, before)


@pytest.mark.parametrize("link", ["alias", "rel"])
def test_nothing_renamed_into_or_out_of_protected_dir_through_link(
    live_ftp, protected, link
):
    home = protected.home_path
    before = _snapshot(os.path.join(home, "in"))
    ftp = live_ftp.client("alice")
    # Out of in/: refused at RNFR.
    assert _reply(ftp.sendcmd, f"RNFR {link}/file") == DENIED
    assert _reply(ftp.sendcmd, f"RNFR {link}/sub") == DENIED
    # Into in/: refused at RNTO.
    assert ftp.sendcmd("RNFR mine.txt").startswith("350")
    assert _reply(ftp.sendcmd, f"RNTO {link}/mine.txt") == DENIED
    ftp.quit()
    _in_untouched(home, before)


def test_nothing_changed_through_link_to_protected_file(live_ftp, protected):
    home = protected.home_path
    before = _snapshot(os.path.join(home, "in"))
    ftp = live_ftp.client("alice")
    assert _stor(ftp, "flink", b"overwritten") == DENIED
    assert _appe(ftp, "flink") == DENIED
    assert _reply(ftp.sendcmd, "SITE CHMOD 777 flink") == DENIED
    assert _reply(ftp.sendcmd, "MFMT 20200101000000 flink") == DENIED
    # Reading is what the rule grants.
    data = io.BytesIO()
    ftp.retrbinary("RETR flink", data.write)
    assert data.getvalue() == b"protected"
    ftp.quit()
    _in_untouched(home, before)
    assert os.readlink(os.path.join(home, "flink")) == os.path.join(home, "in", "file")


def test_link_itself_is_deleted_and_renamed_as_an_entry_of_its_directory(
    live_ftp, protected
):
    """DELE, RNFR and RNTO act on the link, not on where it leads: they are
    decided where the link lies (in the home: granted; in in/: refused)."""
    home = protected.home_path
    os.mkdir(os.path.join(home, "free"))
    os.symlink(os.path.join(home, "free"), os.path.join(home, "in", "out"))
    before = _snapshot(os.path.join(home, "in"))
    ftp = live_ftp.client("alice")
    # in/out leads out of in/, but removing or moving it changes in/.
    assert _reply(ftp.delete, "in/out") == DENIED
    assert _reply(ftp.sendcmd, "RNFR in/out") == DENIED
    assert _reply(ftp.delete, "alias/out") == DENIED
    assert ftp.sendcmd("RNFR free").startswith("350")
    assert _reply(ftp.sendcmd, "RNTO in/out") == DENIED
    _in_untouched(home, before)
    # flink lies in the home: renaming and deleting it leave in/file alone.
    ftp.rename("flink", "flink2")
    assert ftp.delete("flink2").startswith("250")
    ftp.quit()
    _in_untouched(home, before)
    assert not os.path.lexists(os.path.join(home, "flink2"))


def test_rule_on_a_linked_directory_covers_both_ways_in(live_ftp, make_account):
    """A rule whose directory is itself a link protects where the link leads."""
    account = make_account(
        "alice",
        permission=ALL,
        rules=[{"path": "pub", "permission": "elr", "recursive": True}],
    )
    home = account.home_path
    os.makedirs(os.path.join(home, "data", "pub"))
    os.symlink(os.path.join(home, "data", "pub"), os.path.join(home, "pub"))
    ftp = live_ftp.client("alice")
    assert _stor(ftp, "pub/x") == DENIED
    assert _stor(ftp, "data/pub/x") == DENIED
    assert _stor(ftp, "data/y").startswith("226")
    ftp.quit()
    assert os.listdir(os.path.join(home, "data", "pub")) == []


def test_links_inside_home_still_work_where_rules_allow(live_ftp, make_account):
    account = make_account(
        "alice",
        permission="elr",
        rules=[{"path": "up", "permission": "elrw", "recursive": True}],
    )
    home = account.home_path
    os.mkdir(os.path.join(home, "up"))
    os.symlink(os.path.join(home, "up"), os.path.join(home, "drop"))
    ftp = live_ftp.client("alice")
    # The link lies outside up/ but leads into it: the rule of up/ applies.
    assert _stor(ftp, "drop/a.txt").startswith("226")
    assert _stor(ftp, "b.txt") == DENIED
    ftp.quit()
    assert _read(os.path.join(home, "up", "a.txt")) == b"payload"


# --- the home's own mode


@pytest.mark.parametrize(
    ("cwd", "path"),
    [
        ("/", "/"),
        ("/", "."),
        ("/", "sub/.."),
        ("/sub", ".."),
        ("/sub", "/"),
        ("/", "self"),
        ("/", "sub/home"),
    ],
)
def test_home_mode_cannot_be_changed(live_ftp, make_account, cwd, path):
    account = make_account("bob", permission=ALL)
    home = account.home_path
    os.mkdir(os.path.join(home, "sub"))
    os.symlink(home, os.path.join(home, "self"))
    os.symlink("..", os.path.join(home, "sub", "home"))
    os.chmod(home, 0o700)
    ftp = live_ftp.client("bob")
    ftp.cwd(cwd)
    with pytest.raises(ftplib.error_perm) as info:
        ftp.sendcmd(f"SITE CHMOD 777 {path}")
    assert str(info.value) == (
        f'550 "{path}" is the home directory, whose mode cannot be changed.'
    )
    # Everything below the home still can.
    assert ftp.sendcmd("SITE CHMOD 750 /sub").startswith("200")
    ftp.quit()
    assert _mode(home) == 0o700
    assert _mode(os.path.join(home, "sub")) == 0o750


# --- LIST shows link targets as the client sees them


@pytest.fixture
def listed(make_account, tmp_path):
    account = make_account("bob", permission=ALL)
    home = account.home_path
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(os.path.join(home, "in", "deep"))
    _write(os.path.join(home, "in", "f.txt"), b"f")
    links = {
        "abs": os.path.join(home, "in"),
        "rel": "in/deep",
        "file": os.path.join(home, "in", "f.txt"),
        "root": home,
        "dangling": os.path.join(home, "gone"),
        "out": str(outside),
        "outrel": "../../outside",
        "outgone": str(outside / "gone"),
        "chain": "out",
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(home, name))
    os.symlink("..", os.path.join(home, "in", "up"))
    return account, str(tmp_path)


EXPECTED_NAMES = [
    "abs -> /in",
    "chain",
    "dangling -> /gone",
    "file -> /in/f.txt",
    "in",
    "out",
    "outgone",
    "outrel",
    "rel -> /in/deep",
    "root -> /",
]


def test_list_shows_link_targets_as_client_paths(live_ftp, listed):
    account, tmp = listed
    ftp = live_ftp.client("bob")
    lines = _list(ftp)
    assert _names(lines) == EXPECTED_NAMES
    assert _names(_list(ftp, "/in")) == ["deep", "f.txt", "up -> /"]
    ftp.cwd("in")
    assert _names(_list(ftp)) == ["deep", "f.txt", "up -> /"]
    # One file named by its path (listed from its directory).
    assert _names(_list(ftp, "/file")) == ["file -> /in/f.txt"]
    ftp.quit()
    assert not any(tmp in line for line in lines)


def test_stat_shows_link_targets_as_client_paths(live_ftp, listed):
    account, tmp = listed
    ftp = live_ftp.client("bob")
    reply = ftp.sendcmd("STAT /")
    ftp.quit()
    lines = reply.splitlines()[1:-1]
    assert _names(lines) == EXPECTED_NAMES
    assert tmp not in reply


# --- a path outside the home is named as the client sent it


@pytest.fixture
def escape(make_account, tmp_path):
    account = make_account("bob", permission=ALL)
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(outside / "secret.txt", b"secret")
    os.mkdir(os.path.join(account.home_path, "sub"))
    os.symlink(outside, os.path.join(account.home_path, "out"))
    return account


@pytest.mark.parametrize(
    ("command", "sent"),
    [
        ("CWD ../../out", "../../out"),
        ("CWD out", "out"),
        ("RETR /out/secret.txt", "/out/secret.txt"),
        ("SIZE sub/../out/secret.txt", "sub/../out/secret.txt"),
        ("DELE out/secret.txt", "out/secret.txt"),
        ("MKD out/new", "out/new"),
        ("RNFR out/secret.txt", "out/secret.txt"),
        ("SITE CHMOD 777 out/secret.txt", "out/secret.txt"),
        ("MFMT 20200101000000 out/secret.txt", "out/secret.txt"),
        ("MLST out", "out"),
        ("STAT out", "out"),
        ('DELE out/"quoted"', 'out/""quoted""'),
    ],
)
def test_path_outside_home_is_named_as_sent(live_ftp, escape, command, sent):
    ftp = live_ftp.client("bob")
    ftp.cwd("/")
    with pytest.raises(ftplib.error_perm) as info:
        ftp.sendcmd(command)
    assert str(info.value) == f'550 "{sent}" points outside the home directory.'
    assert ftp.pwd() == "/"
    ftp.quit()


def test_list_outside_home_is_named_as_sent(live_ftp, escape):
    ftp = live_ftp.client("bob")
    ftp.cwd("sub")
    with pytest.raises(ftplib.error_perm) as info:
        _list(ftp, "../out")
    assert str(info.value) == '550 "../out" points outside the home directory.'
    ftp.quit()


def test_outside_reply_stays_one_line(live_ftp, escape):
    ftp = live_ftp.client("bob")
    # A lone LF is part of the path, not a line end: the reply must not
    # carry it (the client would read the rest as another reply).
    ftp.sock.sendall(b"CWD out/\n226 fake\r\n")
    reply = ftp.getline()
    assert reply == '550 "out/\\n226 fake" points outside the home directory.'
    assert ftp.pwd() == "/"
    ftp.quit()
