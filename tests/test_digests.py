"""File digests: the SHA-256 of transfers in their records, and HASH.

Real servers in this process and real ftplib clients (plain FTP and FTPS).

- An upload's record (the ``ftp_file_received`` signal and its AuditEvent
  row) carries the SHA-256 of the file written from its first byte; a
  resumed upload carries "".
- A download's record carries the SHA-256 of the bytes that passed through
  the server (FTPS, or plain FTP without sendfile), or the one the server
  knows of that very file (sendfile), else "".
- FTPSERVER_DIGESTS False: no digest anywhere.
- HASH (draft-bryan-ftpext-hash) with OPTS HASH, computed off the IO loop.
"""

import ftplib
import hashlib
import io
import os
import random
import threading
import time
import zlib

import pytest

from ftpserver_core import audit
from ftpserver_core.models import AuditEvent
from tests.transfer_tools import payload, read, write

from .certs import make_certificate
from .conftest import PASSWORD

FEATURE = "HASH SHA-256*;SHA-1;MD5;CRC32"


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(ftp_server, request):
    """``server(tls=False, **options)``: a plain or an FTPS server."""

    def start(tls=False, **options):
        if tls:
            cert = request.getfixturevalue("tls_cert")
            options.update(certfile=cert.certfile, keyfile=cert.keyfile)
        return ftp_server(**options)

    return start


def login(live, tls=False):
    ftp = live.client("alice", tls=tls)
    ftp.voidcmd("TYPE I")
    return ftp


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def retr(ftp, name):
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write)
    return out.getvalue()


def flush():
    assert audit.writer.flush(), "the audit writer did not finish"


def rows(event):
    flush()
    return list(AuditEvent.objects.filter(event=event).order_by("id"))


def hash_reply(algorithm, size, digest, ftp_path):
    return f"213 {algorithm} 0-{size} {digest} {ftp_path}"


def raw_reply(ftp):
    """The next reply on the control connection, whatever its code."""
    return ftp.getmultiline()


# --- uploads


@pytest.mark.parametrize("mode", ["atomic", "direct"])
@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_upload_record_has_the_sha256(server, make_account, recorder, tls, mode):
    account = make_account("alice")
    live = server(tls=tls, upload_mode=mode)
    data = payload(1_500_000, seed=1)
    ftp = login(live, tls)
    assert ftp.storbinary("STOR up.bin", io.BytesIO(data)).startswith("226")
    assert ftp.storbinary("STOR empty.bin", io.BytesIO(b"")).startswith("226")
    ftp.quit()
    assert read(os.path.join(account.home_path, "up.bin")) == data
    up, empty = recorder.wait_for("ftp_file_received", count=2)
    assert (up["ftp_path"], up["size"], up["tls"]) == ("/up.bin", len(data), tls)
    assert up["sha256"] == sha256(data)
    assert empty["sha256"] == sha256(b"")
    up_row, empty_row = rows("upload")
    assert (up_row.ftp_path, up_row.sha256, up_row.tls) == (
        "/up.bin",
        sha256(data),
        tls,
    )
    assert empty_row.sha256 == sha256(b"")


@pytest.mark.parametrize("mode", ["atomic", "direct"])
def test_resumed_upload_has_no_sha256(server, make_account, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    data = payload(300_000, seed=2)
    write(os.path.join(home, "rest.bin"), data[:100_000])
    write(os.path.join(home, "appe.bin"), data[:100_000])
    live = server(upload_mode=mode)
    ftp = login(live)
    ftp.storbinary("STOR rest.bin", io.BytesIO(data[100_000:]), rest=100_000)
    ftp.storbinary("APPE appe.bin", io.BytesIO(data[100_000:]))
    # APPE of a file that does not exist writes it from its first byte.
    ftp.storbinary("APPE new.bin", io.BytesIO(data))
    ftp.quit()
    assert read(os.path.join(home, "rest.bin")) == data
    assert read(os.path.join(home, "appe.bin")) == data
    rest, appe, new = recorder.wait_for("ftp_file_received", count=3)
    assert (rest["size"], rest["sha256"]) == (200_000, "")
    assert (appe["size"], appe["sha256"]) == (200_000, "")
    # A digest, when there is one, is the file's.
    assert new["sha256"] in ("", sha256(data))
    assert [r.sha256 for r in rows("upload")] == ["", "", new["sha256"]]


def test_ascii_upload_has_the_digest_of_the_stored_bytes(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    rng = random.Random(3)
    lines = [
        "".join(rng.choice("abcdefgh \t") for _ in range(rng.randint(0, 120)))
        for _ in range(5000)
    ]
    text = ("\n".join(lines) + "\n").encode()
    ftp = live_ftp.client("alice")
    # storlines sends CRLF line ends; the server stores its own (LF).
    assert ftp.storlines("STOR a.txt", io.BytesIO(text)).startswith("226")
    ftp.quit()
    stored = read(os.path.join(account.home_path, "a.txt"))
    assert stored == text
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == len(stored)
    assert received["sha256"] == sha256(stored)
    (row,) = rows("upload")
    assert row.sha256 == sha256(stored)


# --- downloads


@pytest.mark.parametrize("mode", ["atomic", "direct"])
def test_ftps_download_record_has_the_sha256(server, make_account, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    on_disk = payload(2_000_000, seed=4)
    write(os.path.join(home, "disk.bin"), on_disk)  # never seen by the server
    uploaded = payload(700_000, seed=5)
    live = server(tls=True, upload_mode=mode)
    ftp = login(live, tls=True)
    ftp.storbinary("STOR up.bin", io.BytesIO(uploaded))
    assert retr(ftp, "disk.bin") == on_disk
    assert retr(ftp, "up.bin") == uploaded
    ftp.quit()
    disk, up = recorder.wait_for("ftp_file_sent", count=2)
    assert (disk["ftp_path"], disk["size"]) == ("/disk.bin", len(on_disk))
    assert disk["sha256"] == sha256(on_disk)
    assert up["sha256"] == sha256(uploaded)
    assert [(r.ftp_path, r.sha256, r.tls) for r in rows("download")] == [
        ("/disk.bin", sha256(on_disk), True),
        ("/up.bin", sha256(uploaded), True),
    ]


@pytest.mark.parametrize("mode", ["atomic", "direct"])
def test_plain_sendfile_download_has_the_sha256_the_server_knows(
    server, make_account, recorder, mode
):
    account = make_account("alice")
    home = account.home_path
    on_disk = payload(1_000_000, seed=6)
    write(os.path.join(home, "disk.bin"), on_disk)
    uploaded = payload(800_000, seed=7)
    live = server(upload_mode=mode)
    assert live.options.use_sendfile
    ftp = login(live)
    ftp.storbinary("STOR up.bin", io.BytesIO(uploaded))
    assert retr(ftp, "up.bin") == uploaded
    assert retr(ftp, "disk.bin") == on_disk
    ftp.quit()
    up, disk = recorder.wait_for("ftp_file_sent", count=2)
    # sendfile(): the server never sees the bytes. It saw up.bin arrive...
    assert (up["size"], up["sha256"]) == (len(uploaded), sha256(uploaded))
    # ... but knows nothing of a file put on its disk by someone else.
    assert (disk["size"], disk["sha256"]) == (len(on_disk), "")
    assert [(r.ftp_path, r.sha256) for r in rows("download")] == [
        ("/up.bin", sha256(uploaded)),
        ("/disk.bin", ""),
    ]


def test_plain_download_without_sendfile_has_the_sha256(server, make_account, recorder):
    account = make_account("alice")
    on_disk = payload(1_000_000, seed=8)
    write(os.path.join(account.home_path, "disk.bin"), on_disk)
    live = server(use_sendfile=False)
    ftp = login(live)
    assert retr(ftp, "disk.bin") == on_disk
    ftp.quit()
    (sent,) = recorder.wait_for("ftp_file_sent")
    assert sent["sha256"] == sha256(on_disk)
    assert [r.sha256 for r in rows("download")] == [sha256(on_disk)]


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_digests_off_leaves_every_sha256_empty(server, make_account, recorder, tls):
    account = make_account("alice")
    home = account.home_path
    on_disk = payload(600_000, seed=9)
    write(os.path.join(home, "disk.bin"), on_disk)
    uploaded = payload(500_000, seed=10)
    live = server(tls=tls, digests=False)
    assert live.options.digests is False
    ftp = login(live, tls)
    ftp.storbinary("STOR up.bin", io.BytesIO(uploaded))
    ftp.storbinary("STOR empty.bin", io.BytesIO(b""))
    assert retr(ftp, "up.bin") == uploaded
    assert retr(ftp, "disk.bin") == on_disk
    ftp.quit()
    received = recorder.wait_for("ftp_file_received", count=2)
    sent = recorder.wait_for("ftp_file_sent", count=2)
    assert [r["sha256"] for r in received + sent] == ["", "", "", ""]
    assert [r.sha256 for r in rows("upload") + rows("download")] == ["", "", "", ""]


def test_digests_off_ignores_digests_known_from_another_server(
    server, make_account, recorder
):
    account = make_account("alice")
    data = payload(300_000, seed=11)
    with_digests = server()
    ftp = login(with_digests)
    ftp.storbinary("STOR up.bin", io.BytesIO(data))
    ftp.quit()
    assert recorder.wait_for("ftp_file_received")[0]["sha256"] == sha256(data)
    recorder.clear()
    without = server(digests=False)
    ftp = login(without)
    assert retr(ftp, "up.bin") == data
    ftp.quit()
    (sent,) = recorder.wait_for("ftp_file_sent")
    assert sent["sha256"] == ""
    assert read(os.path.join(account.home_path, "up.bin")) == data


# --- HASH


@pytest.fixture
def alice(live_ftp, make_account):
    """alice's home with a few files, and a logged-in binary-mode client."""
    account = make_account("alice")
    home = account.home_path
    write(os.path.join(home, "file.bin"), payload(123_457, seed=12))
    write(os.path.join(home, "sub dir", "nested.txt"), b"nested\n")
    write(os.path.join(home, "empty"), b"")
    ftp = login(live_ftp)
    yield home, ftp
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        ftp.close()


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_feat_lists_hash(server, make_account, tls):
    make_account("alice")
    live = server(tls=tls)
    ftp = live.client(tls=tls)
    feat = ftp.sendcmd("FEAT")
    assert f" {FEATURE}" in feat.splitlines(), feat
    ftp.login("alice", PASSWORD)
    assert f" {FEATURE}" in ftp.sendcmd("FEAT").splitlines()
    assert feat.count("HASH") == 1
    ftp.quit()


def test_hash_defaults_to_sha256(alice):
    home, ftp = alice
    data = read(os.path.join(home, "file.bin"))
    assert ftp.sendcmd("HASH file.bin") == hash_reply(
        "SHA-256", len(data), sha256(data), "/file.bin"
    )
    assert ftp.sendcmd("HASH /sub dir/nested.txt") == hash_reply(
        "SHA-256", 7, sha256(b"nested\n"), "/sub dir/nested.txt"
    )
    assert ftp.sendcmd("HASH empty") == hash_reply("SHA-256", 0, sha256(b""), "/empty")
    ftp.cwd("sub dir")
    assert ftp.sendcmd("HASH nested.txt").endswith(" /sub dir/nested.txt")


def test_hash_of_a_file_just_uploaded(alice):
    home, ftp = alice
    data = payload(200_000, seed=13)
    ftp.storbinary("STOR new.bin", io.BytesIO(data))
    assert ftp.sendcmd("HASH new.bin") == hash_reply(
        "SHA-256", len(data), sha256(data), "/new.bin"
    )
    # Changed on disk since: the new content's digest, not the remembered one.
    with open(os.path.join(home, "new.bin"), "ab") as fh:
        fh.write(b"more")
    assert ftp.sendcmd("HASH new.bin") == hash_reply(
        "SHA-256", len(data) + 4, sha256(data + b"more"), "/new.bin"
    )


@pytest.mark.parametrize(
    ("name", "canonical", "digest"),
    [
        ("SHA-1", "SHA-1", lambda d: hashlib.sha1(d).hexdigest()),
        ("MD5", "MD5", lambda d: hashlib.md5(d).hexdigest()),
        ("CRC32", "CRC32", lambda d: f"{zlib.crc32(d):08x}"),
        ("sha-256", "SHA-256", lambda d: hashlib.sha256(d).hexdigest()),
    ],
)
def test_opts_hash_selects_the_algorithm(alice, name, canonical, digest):
    home, ftp = alice
    data = read(os.path.join(home, "file.bin"))
    assert ftp.sendcmd("OPTS HASH") == "200 SHA-256"
    assert ftp.sendcmd(f"OPTS HASH {name}") == f"200 {canonical}"
    assert ftp.sendcmd("OPTS HASH") == f"200 {canonical}"
    assert ftp.sendcmd("HASH file.bin") == hash_reply(
        canonical, len(data), digest(data), "/file.bin"
    )
    assert ftp.sendcmd("HASH empty") == hash_reply(canonical, 0, digest(b""), "/empty")


def test_crc32_keeps_its_leading_zeros(alice):
    home, ftp = alice
    # A file whose CRC32 is below 0x10000000.
    rng = random.Random(14)
    while True:
        data = rng.randbytes(64)
        if zlib.crc32(data) < 0x10000000:
            break
    write(os.path.join(home, "crc.bin"), data)
    ftp.sendcmd("OPTS HASH CRC32")
    reply = ftp.sendcmd("HASH crc.bin")
    assert reply == hash_reply("CRC32", 64, f"{zlib.crc32(data):08x}", "/crc.bin")
    assert len(reply.split()[3]) == 8


def test_opts_hash_refuses_an_unknown_algorithm(alice):
    _, ftp = alice
    ftp.sendcmd("OPTS HASH MD5")
    with pytest.raises(ftplib.error_perm, match="^504"):
        ftp.sendcmd("OPTS HASH SHA-512")
    # The selection is unchanged.
    assert ftp.sendcmd("OPTS HASH") == "200 MD5"


def test_the_algorithm_is_per_session(live_ftp, alice):
    home, ftp = alice
    data = read(os.path.join(home, "file.bin"))
    ftp.sendcmd("OPTS HASH MD5")
    other = login(live_ftp)
    assert other.sendcmd("OPTS HASH") == "200 SHA-256"
    assert other.sendcmd("HASH file.bin").split()[1] == "SHA-256"
    assert ftp.sendcmd("HASH file.bin").split()[3] == hashlib.md5(data).hexdigest()
    other.quit()


@pytest.mark.parametrize(
    "path", ["sub dir", "/", ".", "missing.bin", "sub dir/missing", "../../etc/passwd"]
)
def test_hash_of_no_file_is_550(alice, path):
    _, ftp = alice
    with pytest.raises(ftplib.error_perm, match="^550") as info:
        ftp.sendcmd(f"HASH {path}")
    assert " 0-" not in str(info.value)
    assert ftp.voidcmd("NOOP").startswith("200")


def test_hash_does_not_reach_outside_the_home(alice):
    home, ftp = alice
    with open("/etc/passwd", "rb") as fh:
        secret = fh.read()
    digests = {
        hashlib.new(a, secret).hexdigest() for a in ("sha256", "sha1", "md5")
    } | {f"{zlib.crc32(secret):08x}"}
    os.symlink("/etc/passwd", os.path.join(home, "link"))
    os.symlink("/etc", os.path.join(home, "etc-link"))
    for algorithm in ("SHA-256", "SHA-1", "MD5", "CRC32"):
        ftp.sendcmd(f"OPTS HASH {algorithm}")
        for path in ("../../etc/passwd", "/../etc/passwd", "link", "etc-link/passwd"):
            try:
                reply = ftp.sendcmd(f"HASH {path}")
            except ftplib.error_perm as exc:
                reply = str(exc)
            assert reply.startswith("550"), (path, reply)
            assert not any(d in reply for d in digests), (path, reply)


def test_hash_needs_a_login(live_ftp, make_account):
    account = make_account("alice")
    write(os.path.join(account.home_path, "file.bin"), b"data")
    ftp = live_ftp.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.sendcmd("HASH file.bin")
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.sendcmd("HASH /etc/passwd")
    ftp.login("alice", PASSWORD)
    assert ftp.sendcmd("HASH file.bin").startswith("213 ")
    ftp.quit()


def test_hash_needs_the_read_permission(ftp_server, make_account):
    account = make_account("alice", permission="elw")
    write(os.path.join(account.home_path, "file.bin"), b"data")
    live = ftp_server()
    ftp = login(live)
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("HASH file.bin")
    ftp.quit()


def test_hash_without_argument_is_501(alice):
    _, ftp = alice
    with pytest.raises(ftplib.error_perm, match="^501"):
        ftp.sendcmd("HASH")


# --- HASH off the IO loop

BIG = 128 << 20


@pytest.fixture
def big_file(alice):
    """A 128 MiB (sparse) file: hashing it takes a while."""
    home, _ = alice
    path = os.path.join(home, "big.bin")
    with open(path, "wb") as fh:
        fh.truncate(BIG)
    # Its digest, computed here (not through the server: no cache entry).
    digest = hashlib.sha256()
    chunk = bytes(1 << 20)
    for _ in range(BIG >> 20):
        digest.update(chunk)
    return path, digest.hexdigest()


def test_a_long_hash_does_not_stop_other_clients(live_ftp, alice, big_file):
    _, ftp = alice
    _, digest = big_file
    other = login(live_ftp)
    answered = {}

    def read_hash_reply():
        answered["reply"] = raw_reply(ftp)
        answered["at"] = time.monotonic()

    reader = threading.Thread(target=read_hash_reply, daemon=True)
    sent_at = time.monotonic()
    ftp.putcmd("HASH big.bin")
    reader.start()
    time.sleep(0.05)  # the server has the HASH and is hashing
    noop = other.sendcmd("NOOP")
    noop_at = time.monotonic()
    reader.join(60)
    assert not reader.is_alive(), "no reply to HASH"
    assert noop.startswith("200")
    assert answered["reply"] == hash_reply("SHA-256", BIG, digest, "/big.bin")
    # The NOOP was answered while the HASH was being computed.
    assert noop_at < answered["at"], (
        f"NOOP answered {noop_at - sent_at:.3f}s after the HASH was sent, the "
        f"HASH {answered['at'] - sent_at:.3f}s"
    )
    other.quit()
    # The session goes on.
    assert ftp.voidcmd("NOOP").startswith("200")


def test_commands_pipelined_after_hash_are_answered_in_order(alice, big_file):
    home, ftp = alice
    _, digest = big_file
    small = read(os.path.join(home, "file.bin"))
    ftp.sock.sendall(b"HASH big.bin\r\nNOOP\r\nHASH file.bin\r\nPWD\r\n")
    replies = [raw_reply(ftp) for _ in range(4)]
    assert [r[:3] for r in replies] == ["213", "200", "213", "257"], replies
    assert replies[0] == hash_reply("SHA-256", BIG, digest, "/big.bin")
    assert replies[2] == hash_reply("SHA-256", len(small), sha256(small), "/file.bin")


def test_commands_pipelined_after_a_small_hash_are_answered_in_order(alice):
    home, ftp = alice
    data = read(os.path.join(home, "file.bin"))
    ftp.sock.sendall(b"HASH file.bin\r\nNOOP\r\n")
    replies = [raw_reply(ftp) for _ in range(2)]
    assert [r[:3] for r in replies] == ["213", "200"], replies
    assert replies[0] == hash_reply("SHA-256", len(data), sha256(data), "/file.bin")


def test_quit_pipelined_after_hash(alice, big_file):
    _, ftp = alice
    _, digest = big_file
    ftp.sock.sendall(b"HASH big.bin\r\nQUIT\r\n")
    replies = []
    try:
        while len(replies) < 2:
            replies.append(raw_reply(ftp))
    except EOFError:
        pass  # the server closed the connection
    assert [r[:3] for r in replies] == ["213", "221"], replies
    assert replies[0] == hash_reply("SHA-256", BIG, digest, "/big.bin")


# --- what the server remembers is the file's digest


def test_hash_after_the_file_was_replaced_during_a_download(
    server, make_account, recorder
):
    """A file overwritten (STOR) while another session downloads it: the
    download's digest is the old content's, and must not be taken for the
    new file's."""
    account = make_account("alice")
    old = payload(32 << 20, seed=15)
    new = payload(3000, seed=16)
    write(os.path.join(account.home_path, "f.bin"), old)
    # The download is hashed as it streams; the upload replaces the file (a
    # new inode) rather than rewriting it under the reader.
    live = server(use_sendfile=False, upload_mode="atomic")
    reader, writer = login(live), login(live)
    conn = reader.transfercmd("RETR f.bin")
    got = bytearray(conn.recv(65536))
    assert writer.storbinary("STOR f.bin", io.BytesIO(new)).startswith("226")
    while chunk := conn.recv(1 << 20):
        got += chunk
    conn.close()
    assert reader.voidresp().startswith("226")
    assert bytes(got) == old  # it had the old file open
    (sent,) = recorder.wait_for("ftp_file_sent")
    assert sent["sha256"] == sha256(old)
    assert read(os.path.join(account.home_path, "f.bin")) == new
    assert writer.sendcmd("HASH f.bin") == hash_reply(
        "SHA-256", len(new), sha256(new), "/f.bin"
    )
    reader.quit()
    writer.quit()


def test_hash_after_the_file_was_replaced_during_a_hash(ftp_server, alice, big_file):
    """The same with HASH: a digest computed of the old file must not be
    taken for the new one."""
    home, ftp = alice
    _, old_digest = big_file
    new = payload(5000, seed=17)
    # Replaced by an atomic upload (a new inode), through another server.
    other = login(ftp_server(upload_mode="atomic"))
    ftp.putcmd("HASH big.bin")
    time.sleep(0.05)
    # Replaced while the server reads the old one.
    assert other.storbinary("STOR big.bin", io.BytesIO(new)).startswith("226")
    first = raw_reply(ftp)
    assert first == hash_reply("SHA-256", BIG, old_digest, "/big.bin")
    assert read(os.path.join(home, "big.bin")) == new
    assert ftp.sendcmd("HASH big.bin") == hash_reply(
        "SHA-256", len(new), sha256(new), "/big.bin"
    )
    other.quit()


def test_a_server_stopped_during_a_hash_closes_that_session(
    ftp_server, make_account, recorder
):
    account = make_account("alice")
    with open(os.path.join(account.home_path, "huge.bin"), "wb") as fh:
        fh.truncate(1 << 30)  # sparse; hashing it takes seconds
    live = ftp_server()
    hashing, idle = login(live), login(live)
    hashing.putcmd("HASH huge.bin")
    time.sleep(0.3)
    live.stop()
    # Every session ends with the server: the idle one and the hashing one.
    for name, ftp in (("idle", idle), ("hashing", hashing)):
        ftp.sock.settimeout(3)
        try:
            while True:
                line = ftp.getline()
                assert not line.startswith("213"), line
        except EOFError:
            pass
        except TimeoutError:
            pytest.fail(f"the {name} session is still open 3 s after the stop")
    recorder.wait_for("ftp_client_disconnected", count=2, timeout=10)
