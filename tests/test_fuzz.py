"""The FTP command parser under random input, before and after login (tests/fuzz.py).

A few thousand lines at every run, each run with a new seed: the failure
message names it, and ``python -m tests.fuzz --lines N --seed SEED`` sends
the same lines again. ``FTPSUITE_FUZZ_SEED`` and ``FTPSUITE_FUZZ_LINES``
set them for this test.
"""

import os
import random
import socket
from pathlib import Path

import pytest

from .conftest import PASSWORD
from .fuzz import Fuzz, secrets_of_server, write_settings
from .processes import ServerProcess, command_env

LINES = int(os.environ.get("FTPSUITE_FUZZ_LINES") or 6000)


@pytest.fixture
def fuzzed_server(transactional_db, make_account, tmp_path):
    """A server process whose log (WARNING and up) is its stderr."""
    account = make_account("alice")
    name = write_settings(tmp_path / "settings", tmp_path / "journal")
    env = command_env(tmp_path / "settings", DJANGO_SETTINGS_MODULE=name)
    server = ServerProcess(["127.0.0.1:0"], tmp_path / "server", env)
    try:
        server.wait_started()
        server.account = account
        yield server
    finally:
        server.kill()


def test_random_command_lines_get_well_formed_replies_and_no_error(fuzzed_server):
    seed = os.environ.get("FTPSUITE_FUZZ_SEED")
    seed = int(seed) if seed else random.SystemRandom().getrandbits(32)
    print(f"fuzz seed {seed}, {LINES} lines")  # shown with a failure's output
    fuzz = Fuzz(
        fuzzed_server.host,
        fuzzed_server.port,
        "alice",
        PASSWORD,
        lines=LINES,
        seed=seed,
        log_path=fuzzed_server.err_path,
        secrets_=secrets_of_server(fuzzed_server.account.home_path),
    )
    stats = fuzz.run()
    assert stats["lines"] + stats["transfers"] >= LINES
    # Both phases ran, with real transfers after the login.
    assert stats["sessions"] >= 2 and stats["data"] > 0, stats
    # The server is fine afterwards: a normal session, then a clean stop.
    ftp = fuzzed_server.client("alice")
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()
    assert fuzzed_server.stop() == 0, fuzzed_server.stderr[-4000:]
    fuzz.check_log()


# --- what the fuzz found, one test each


class Raw:
    """A control connection that sends bytes as they are and reads whole replies."""

    def __init__(self, server, timeout=10):
        self.sock = socket.create_connection((server.host, server.port), timeout)
        self.buffer = b""
        assert self.reply()[0].startswith(b"220")

    def login(self, username="alice", password=PASSWORD):
        self.send(f"USER {username}\r\nPASS {password}\r\n".encode())
        assert self.reply()[0].startswith(b"331")
        assert self.reply()[0].startswith(b"230")
        return self

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def reply(self):
        """The lines of one reply (a multi-line one ends at its code and a space)."""
        lines = [self.line()]
        if lines[0][3:4] == b"-":
            while not lines[-1].startswith(lines[0][:3] + b" "):
                lines.append(self.line())
        return lines

    def at_eof(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def test_a_line_break_or_nul_in_an_echoed_command_stays_inside_its_reply(
    fuzzed_server,
):
    # The 500 of an unknown command echoes it: a bare LF cut the reply in
    # two, so a client splitting at LF read "226 Faked" as a reply.
    ftp = Raw(fuzzed_server)
    ftp.send(b"FOO\n226\x00\rX\r\nNOOP\r\n")
    assert ftp.reply() == [b'500 Command "FOO\\n226\\x00\\rX" not understood.']
    assert ftp.reply()[0].startswith(b"200")
    ftp.close()


def test_stat_lists_a_name_with_a_line_break_inside_its_own_line(fuzzed_server):
    home = Path(fuzzed_server.account.home_path)
    (home / "a\n213 Faked end").write_bytes(b"x")
    (home / "b\r\nc").mkdir()
    ftp = Raw(fuzzed_server).login()
    ftp.send(b"STAT /\r\nNOOP\r\n")
    lines = ftp.reply()
    assert lines[0] == b'213-Status of "/":'
    assert lines[-1] == b"213 End of status."
    assert len(lines) == 4, lines
    assert lines[1].endswith(b" a\\n213 Faked end")
    assert lines[2].endswith(b" b\\r\\nc")
    assert ftp.reply()[0].startswith(b"200")
    # A name made over FTP with a LF in STOR's argument, listed the same way.
    ftp.send(b"MKD d\ne\r\nSTAT d\ne\r\n")
    assert ftp.reply() == [b'257 "/d\\ne" directory created.']
    assert ftp.reply() == [b'213-Status of "/d\\ne":', b"213 End of status."]
    ftp.close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("canceller", [b"ABOR", b"PASV", b"REIN", b"QUIT", b"PORT"])
def test_a_port_cancelled_by_the_next_command_is_answered_first(
    fuzzed_server, canceller
):
    # PORT is answered once its connection is made; a command pipelined
    # behind it closed the attempt, and PORT never got a reply.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(0)
        # A full accept queue: the server's connection attempt gets no
        # answer and is still pending when the next command comes.
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(busy.getsockname())
        port = busy.getsockname()[1]
        if canceller == b"PORT":
            closed = closed_port()
            canceller = b"PORT 127,0,0,1,%d,%d" % (closed >> 8, closed & 255)
        ftp = Raw(fuzzed_server).login()
        ftp.send(b"PORT 127,0,0,1,%d,%d\r\n%s\r\n" % (port >> 8, port & 255, canceller))
        assert ftp.reply() == [
            b"425 Can't open data connection: cancelled by a later command."
        ]
        reply = ftp.reply()[0]
        expected = {
            b"ABOR": b"225 ABOR command successful; data channel closed.",
            b"PASV": b"227 Entering passive mode",
            b"REIN": b"230 Ready for new user.",
            b"QUIT": b"221 Goodbye.",
            b"PORT": b"425 Can't connect to specified address.",
        }[canceller[:4]]
        assert reply.startswith(expected), reply
        if canceller == b"QUIT":
            assert ftp.at_eof()
        else:
            ftp.send(b"NOOP\r\n")
            assert ftp.reply()[0].startswith(b"200")
        ftp.close()
        for filler in fillers:
            filler.close()
    assert "Traceback" not in fuzzed_server.stderr


def test_nothing_sent_after_quit_runs(fuzzed_server):
    # The lines after QUIT in the same packet ran on the closed session: a
    # traceback each (its filesystem is gone), or, while the goodbye was
    # still being sent, for real.
    home = Path(fuzzed_server.account.home_path)
    (home / "keep.txt").write_bytes(b"keep")
    ftp = Raw(fuzzed_server).login()
    ftp.send(b"QUIT\r\nDELE keep.txt\r\nMKD made\r\nSTAT /\r\nLIST\r\n")
    assert ftp.reply() == [b"221 Goodbye."]
    assert ftp.at_eof()
    ftp.close()
    # The server's next session is served after whatever it did with them.
    other = Raw(fuzzed_server).login()
    other.send(b"NOOP\r\n")
    assert other.reply()[0].startswith(b"200")
    other.close()
    assert (home / "keep.txt").read_bytes() == b"keep"
    assert not (home / "made").exists()
    assert "Traceback" not in fuzzed_server.stderr
    assert "ERROR" not in fuzzed_server.stderr


@pytest.mark.parametrize("mode", ["active", "passive"])
def test_quit_with_an_unused_data_connection_ends_the_session(fuzzed_server, mode):
    # pyftpdlib took an open data connection for a transfer in progress: the
    # session stayed open after 221, no longer reading, until the data
    # timeout. The fuzz ran into the per-address connection limit with them.
    ftp = Raw(fuzzed_server).login()
    with socket.socket() as listener:
        if mode == "active":
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            ftp.send(b"PORT 127,0,0,1,%d,%d\r\n" % (port >> 8, port & 255))
            assert ftp.reply() == [b"200 Active data connection established."]
            data, _ = listener.accept()
        else:
            ftp.send(b"EPSV\r\n")
            reply = ftp.reply()[0]
            port = int(reply.split(b"|||")[1].split(b"|")[0])
            data = socket.create_connection(("127.0.0.1", port), 10)
        with data:
            ftp.send(b"QUIT\r\n")
            assert ftp.reply() == [b"221 Goodbye."]
            # Ends now, not at the data timeout (FTPSERVER_DATA_TIMEOUT, 120 s).
            assert ftp.at_eof()
            data.settimeout(10)
            try:
                assert data.recv(1) == b""
            except ConnectionResetError:
                # Still in the passive listener's backlog when the session
                # ended: closing the listener resets it. Ended either way.
                pass
    ftp.close()
