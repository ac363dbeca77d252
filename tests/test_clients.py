"""Real FTP clients (curl, lftp) against the server; passive ports and masquerading."""

import io
import os
import random
import re
import socket
import subprocess

import pytest

from tests.certs import make_certificate
from tests.conftest import PASSWORD
from tests.transfer_tools import read, run_lftp, write

CURL = "/usr/bin/curl"
LFTP = "/usr/bin/lftp"
# Fail fast instead of lftp's endless reconnecting; any failed command exits non-zero.
LFTP_SETTINGS = (
    "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; "
    "set net:reconnect-interval-base 1; set xfer:clobber yes; "
)
LFTP_PLAIN = LFTP_SETTINGS + "set ftp:ssl-allow no; "
LFTP_TLS = (
    LFTP_SETTINGS + "set ssl:verify-certificate no; set ftp:ssl-force yes; "
    "set ftp:ssl-protect-data yes; "
)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


def curl(*args, timeout=60):
    return subprocess.run(
        [CURL, "--silent", "--show-error", "--max-time", "30", *args],
        capture_output=True,
        timeout=timeout,
    )


def lftp(
    live, script, username="alice", password=PASSWORD, settings=LFTP_PLAIN, cwd=None
):
    return run_lftp(live, script, settings, username, password, cwd=cwd)


def url(live, path=""):
    return f"ftp://127.0.0.1:{live.port}/{path}"


def tree(root):
    """Return {relative path: bytes} of every file under ``root``, and its dirs."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirs.update(os.path.normpath(os.path.join(rel, d)) for d in dirnames)
        for name in filenames:
            files[os.path.normpath(os.path.join(rel, name))] = read(
                os.path.join(dirpath, name)
            )
    return files, dirs


def free_port_range(count=5):
    """Return ``count`` consecutive free TCP ports below the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        ports = list(range(base, base + count))
        sockets = []
        try:
            for port in ports:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return ports
    raise AssertionError("no free port range found")


def pasv_address(reply):
    match = re.match(r"^227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply)
    assert match, reply
    numbers = [int(n) for n in match.groups()]
    return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def epsv_port(reply):
    match = re.match(r"^229 .*\(\|\|\|(\d+)\|\)", reply)
    assert match, reply
    return int(match[1])


# --- curl, plain FTP


def test_curl_upload_download_and_listing(live_ftp, make_account, tmp_path, recorder):
    account = make_account("alice")
    payload = random.Random(3).randbytes(250_000)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    auth = ["-u", f"alice:{PASSWORD}"]

    done = curl(*auth, "-T", str(source), url(live_ftp, "data.bin"))
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(account.home_path, "data.bin")) == payload

    target = tmp_path / "copy.bin"
    done = curl(*auth, "-o", str(target), url(live_ftp, "data.bin"))
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == payload

    write(os.path.join(account.home_path, "sub", "inner.txt"), b"inner")
    done = curl(*auth, url(live_ftp))  # a URL ending in / lists the directory
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2, lines
    assert any(
        line.startswith("-") and line.endswith(" data.bin") and " 250000 " in line
        for line in lines
    )
    assert any(line.startswith("d") and line.endswith(" sub") for line in lines)
    done = curl(*auth, "--list-only", url(live_ftp, "sub/"))
    assert done.stdout.decode().split() == ["inner.txt"]
    done = curl(*auth, url(live_ftp, "sub/inner.txt"))
    assert done.stdout == b"inner"

    received = recorder.wait_for("ftp_file_received")
    assert [(e["ftp_path"], e["size"]) for e in received] == [
        ("/data.bin", len(payload))
    ]
    sent = recorder.wait_for("ftp_file_sent", 2)
    assert [(e["ftp_path"], e["size"]) for e in sent] == [
        ("/data.bin", len(payload)),
        ("/sub/inner.txt", 5),
    ]


def test_curl_create_dirs(live_ftp, make_account, tmp_path):
    account = make_account("alice")
    source = tmp_path / "deep.txt"
    source.write_bytes(b"deep down")
    auth = ["-u", f"alice:{PASSWORD}"]
    target = url(live_ftp, "a/b/c/deep.txt")

    # Without --ftp-create-dirs the missing directory stops the upload (CWD fails).
    done = curl(*auth, "-T", str(source), target)
    assert done.returncode == 9, done.stderr
    assert os.listdir(account.home_path) == []

    done = curl(*auth, "--ftp-create-dirs", "-T", str(source), target)
    assert done.returncode == 0, done.stderr
    assert (
        read(os.path.join(account.home_path, "a", "b", "c", "deep.txt")) == b"deep down"
    )


def test_curl_quote_commands(live_ftp, make_account, recorder):
    account = make_account("alice")
    home = account.home_path
    for name in ("x.txt", "a.txt", "keep.txt"):
        write(os.path.join(home, name), name.encode())
    done = curl(
        "-u",
        f"alice:{PASSWORD}",
        "--list-only",
        "-Q",
        "DELE x.txt",
        "-Q",
        "MKD made",
        "-Q",
        "-RNFR a.txt",  # "-" prefix: after the transfer
        "-Q",
        "-RNTO renamed.txt",
        url(live_ftp),
    )
    assert done.returncode == 0, done.stderr
    # The listing ran after DELE and MKD, before the rename.
    assert sorted(done.stdout.decode().split()) == ["a.txt", "keep.txt", "made"]
    assert sorted(os.listdir(home)) == ["keep.txt", "made", "renamed.txt"]
    assert read(os.path.join(home, "renamed.txt")) == b"a.txt"
    assert os.path.isdir(os.path.join(home, "made"))
    assert recorder.wait_for("ftp_file_deleted")[0]["ftp_path"] == "/x.txt"
    renamed = recorder.wait_for("ftp_file_renamed")[0]
    assert (renamed["ftp_path_from"], renamed["ftp_path_to"]) == (
        "/a.txt",
        "/renamed.txt",
    )

    # A refused quote command fails the whole run (21: quote error).
    done = curl("-u", f"alice:{PASSWORD}", "-Q", "DELE missing.txt", url(live_ftp))
    assert done.returncode == 21, done.stderr
    assert b"550" in done.stderr


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong-password"), ("nobody", PASSWORD)],
)
def test_curl_failed_login(live_ftp, make_account, recorder, username, password):
    make_account("alice")
    done = curl("-u", f"{username}:{password}", url(live_ftp))
    assert done.returncode == 67, done.stderr
    assert b"530" in done.stderr
    (failed,) = recorder.wait_for("ftp_login_failed")
    assert (failed["username"], failed["reason"]) == (username, "bad_credentials")
    assert "ftp_login" not in recorder.names()
    # The right password works on the same server.
    done = curl("-u", f"alice:{PASSWORD}", url(live_ftp))
    assert done.returncode == 0, done.stderr


def test_curl_resumes_download_and_upload(live_ftp, make_account, tmp_path, recorder):
    account = make_account("alice")
    payload = random.Random(4).randbytes(200_000)
    write(os.path.join(account.home_path, "big.bin"), payload)
    auth = ["-u", f"alice:{PASSWORD}"]

    partial = tmp_path / "big.bin"
    partial.write_bytes(payload[:70_000])
    done = curl(*auth, "-C", "-", "-o", str(partial), url(live_ftp, "big.bin"))
    assert done.returncode == 0, done.stderr
    assert partial.read_bytes() == payload
    # REST 70000: only the rest crossed the wire.
    (sent,) = recorder.wait_for("ftp_file_sent")
    assert sent["size"] == 130_000

    write(os.path.join(account.home_path, "up.bin"), payload[:50_000])
    done = curl(*auth, "-C", "-", "-T", str(partial), url(live_ftp, "up.bin"))
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(account.home_path, "up.bin")) == payload
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == 150_000


@pytest.mark.parametrize("method", ["multicwd", "nocwd", "singlecwd"])
def test_curl_ftp_methods_resume_and_append(
    live_ftp, make_account, tmp_path, recorder, method
):
    """Each --ftp-method reaches a file two directories down for every transfer."""
    account = make_account("alice")
    home = os.path.join(account.home_path, "a", "b")
    os.makedirs(home)
    payload = random.Random(5).randbytes(120_000)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    auth = ["-u", f"alice:{PASSWORD}", "--ftp-method", method]

    done = curl(*auth, "--verbose", "-T", str(source), url(live_ftp, "a/b/up.bin"))
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(home, "up.bin")) == payload
    expected = {
        "multicwd": ["CWD a", "CWD b", "STOR up.bin"],
        "nocwd": ["STOR a/b/up.bin"],
        "singlecwd": ["CWD a/b", "STOR up.bin"],
    }[method]
    commands = re.findall(r"^> ((?:CWD|STOR) .*?)\r?$", done.stderr.decode(), re.M)
    assert commands == expected
    done = curl(*auth, "--list-only", url(live_ftp, "a/b/"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["up.bin"]

    partial = tmp_path / "down.bin"
    partial.write_bytes(payload[:40_000])
    done = curl(*auth, "-C", "-", "-o", str(partial), url(live_ftp, "a/b/up.bin"))
    assert done.returncode == 0, done.stderr
    assert partial.read_bytes() == payload

    write(os.path.join(home, "resumed.bin"), payload[:30_000])
    done = curl(*auth, "-C", "-", "-T", str(source), url(live_ftp, "a/b/resumed.bin"))
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(home, "resumed.bin")) == payload

    tail = tmp_path / "tail.bin"
    tail.write_bytes(b"appended tail")
    done = curl(*auth, "--append", "-T", str(tail), url(live_ftp, "a/b/up.bin"))
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(home, "up.bin")) == payload + b"appended tail"

    received = recorder.wait_for("ftp_file_received", 3)
    assert [(e["ftp_path"], e["size"]) for e in received] == [
        ("/a/b/up.bin", 120_000),
        ("/a/b/resumed.bin", 90_000),
        ("/a/b/up.bin", 13),
    ]
    (sent,) = recorder.wait_for("ftp_file_sent")
    assert (sent["ftp_path"], sent["size"]) == ("/a/b/up.bin", 80_000)


# --- lftp, plain FTP


def test_lftp_session(live_ftp, make_account, tmp_path, recorder):
    account = make_account("alice")
    home = account.home_path
    payload = random.Random(5).randbytes(123_456)
    local = tmp_path / "local.bin"
    local.write_bytes(payload)
    local2 = tmp_path / "local2.bin"

    done = lftp(
        live_ftp,
        f"put {local} -o remote.bin; ls; get remote.bin -o {local2}; "
        "mkdir d; mv remote.bin d/r.bin; cls -1 d",
    )
    assert done.returncode == 0, done.stderr
    assert local2.read_bytes() == payload
    assert not os.path.exists(os.path.join(home, "remote.bin"))
    assert read(os.path.join(home, "d", "r.bin")) == payload
    out = done.stdout.decode().splitlines()
    listing = [line for line in out if line.endswith(" remote.bin")]
    assert len(listing) == 1 and " 123456 " in listing[0], out
    assert out[-1] == "d/r.bin"

    done = lftp(live_ftp, "rm d/r.bin; rmdir d; cls -1")
    assert done.returncode == 0, done.stderr
    assert os.listdir(home) == []
    assert done.stdout == b""

    assert [e["ftp_path"] for e in recorder.wait_for("ftp_file_received")] == [
        "/remote.bin"
    ]
    assert [e["ftp_path"] for e in recorder.wait_for("ftp_file_sent")] == [
        "/remote.bin"
    ]
    assert recorder.wait_for("ftp_file_renamed")[0]["ftp_path_to"] == "/d/r.bin"
    assert recorder.wait_for("ftp_file_deleted")[0]["ftp_path"] == "/d/r.bin"
    assert recorder.wait_for("ftp_directory_created")[0]["ftp_path"] == "/d"
    assert recorder.wait_for("ftp_directory_deleted")[0]["ftp_path"] == "/d"


def test_lftp_failed_command_and_login(live_ftp, make_account):
    make_account("alice")
    done = lftp(live_ftp, "rm no-such-file")
    assert done.returncode != 0
    assert b"550" in done.stderr
    done = lftp(live_ftp, "ls", password="wrong-password")
    assert done.returncode != 0
    assert b"530" in done.stderr


def test_lftp_mirror_reverse(live_ftp, make_account, tmp_path):
    account = make_account("alice")
    rng = random.Random(6)
    source = tmp_path / "project"
    expected = {
        "README.txt": b"read me\n",
        "empty.dat": b"",
        "bin/blob.bin": rng.randbytes(300_000),
        "src/pkg/module.py": b"print('hi')\n" * 500,
        "src/pkg/deeper/data.csv": b"a,b\n1,2\n",
        "src/other/name with spaces.txt": b"spaces",
    }
    for rel, data in expected.items():
        write(str(source / rel), data)
    os.makedirs(source / "empty-dir")

    done = lftp(live_ftp, f"mirror -R {source} uploaded")
    assert done.returncode == 0, done.stderr
    files, dirs = tree(os.path.join(account.home_path, "uploaded"))
    assert files == expected
    assert dirs == {"bin", "src", "src/pkg", "src/pkg/deeper", "src/other", "empty-dir"}

    # A second mirror finds nothing to do; a changed file is sent again.
    write(str(source / "README.txt"), b"read me, changed\n")
    done = lftp(live_ftp, f"mirror -R --verbose=1 {source} uploaded")
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(account.home_path, "uploaded", "README.txt")) == (
        b"read me, changed\n"
    )
    assert b"README.txt" in done.stdout
    assert b"blob.bin" not in done.stdout


# --- passive ports and masquerading


def test_passive_ports_range(ftp_server, make_account):
    make_account("alice")
    ports = free_port_range(5)
    live = ftp_server(passive_ports=f"{ports[0]}-{ports[-1]}")
    assert live.options.passive_ports == ports
    ftp = live.client("alice")
    seen = set()
    for _ in range(6):
        host, port = pasv_address(ftp.sendcmd("PASV"))
        assert host == "127.0.0.1"
        seen.add(port)
        seen.add(epsv_port(ftp.sendcmd("EPSV")))
    assert seen <= set(ports), (seen, ports)
    # Transfers work through those ports.
    ftp.storbinary("STOR p.txt", io.BytesIO(b"passive"))
    assert ftp.nlst() == ["p.txt"]
    ftp.quit()


def test_masquerade_address_in_pasv_reply(ftp_server, make_account, tmp_path):
    account = make_account("alice")
    ports = free_port_range(5)
    live = ftp_server(masquerade_address="203.0.113.10", passive_ports=ports)
    ftp = live.client("alice")
    reply = ftp.sendcmd("PASV")
    assert re.match(r"^227 .*\(203,0,113,10,\d+,\d+\)", reply), reply
    host, port = pasv_address(reply)
    assert (host, port in ports) == ("203.0.113.10", True)
    # EPSV carries no address, only the port.
    assert epsv_port(ftp.sendcmd("EPSV")) in ports
    # ftplib ignores the announced address (trust_server_pasv_ipv4_address
    # is False) and connects to the server's own: transfers still work.
    ftp.storbinary("STOR m.txt", io.BytesIO(b"masqueraded"))
    ftp.quit()
    assert read(os.path.join(account.home_path, "m.txt")) == b"masqueraded"
    # So does curl, which skips the PASV address by default.
    done = curl("--disable-epsv", "-u", f"alice:{PASSWORD}", url(live, "m.txt"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"masqueraded"


def test_default_server_pasv_reply_is_the_real_address(live_ftp, make_account):
    make_account("alice")
    ftp = live_ftp.client("alice")
    host, port = pasv_address(ftp.sendcmd("PASV"))
    ftp.quit()
    assert host == "127.0.0.1"
    assert 0 < port < 65536


# --- lftp against the TLS server


def test_lftp_over_tls(ftp_server, tls_cert, make_account, tmp_path, recorder):
    account = make_account("alice")
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    payload = random.Random(7).randbytes(100_000)
    local = tmp_path / "secure.bin"
    local.write_bytes(payload)
    back = tmp_path / "back.bin"

    done = lftp(
        live,
        f"put {local} -o secure.bin; mkdir s; cls -1; get secure.bin -o {back}",
        settings=LFTP_TLS,
    )
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(account.home_path, "secure.bin")) == payload
    assert back.read_bytes() == payload
    assert done.stdout.decode().split() == ["s/", "secure.bin"]
    (login,) = recorder.wait_for("ftp_login")
    assert login["tls"] is True

    # Without TLS lftp cannot log in: the server requires it.
    done = lftp(live, "cls -1")
    assert done.returncode != 0
    assert b"550" in done.stderr


def test_lftp_mirror_over_tls(ftp_server, tls_cert, make_account, tmp_path):
    account = make_account("alice")
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    rng = random.Random(8)
    expected = {
        f"dir{i}/file{j}.bin": rng.randbytes(rng.randrange(0, 40_000))
        for i in range(3)
        for j in range(3)
    }
    for rel, data in expected.items():
        write(str(tmp_path / "src" / rel), data)
    done = lftp(live, f"mirror -R {tmp_path / 'src'} dst", settings=LFTP_TLS)
    assert done.returncode == 0, done.stderr
    assert tree(os.path.join(account.home_path, "dst"))[0] == expected
    # And back down again.
    done = lftp(live, f"mirror dst {tmp_path / 'down'}", settings=LFTP_TLS)
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "down")[0] == expected
