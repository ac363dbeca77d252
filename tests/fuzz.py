"""Fuzzing the FTP command parser of a real server, before and after login.

A seeded random stream of command lines goes to a running server: verbs
from pyftpdlib's ``proto_cmds`` (and ours) and unknown ones, in any case,
with random arguments; random bytes with NUL, CR, LF, high bytes and
invalid UTF-8; lines from 0 to about 5000 bytes; several lines pipelined in
one write. Each batch of lines ends with a unique unknown command whose
``500`` reply echoes it, so the replies of a batch are known to be complete.
After login, data transfers (``PASV``/``EPSV`` then a transfer verb) are
carried out for real.

A run fails on:

- a reply that is not well formed: a first line that is not 3 digits and a
  space or hyphen, a multi-line reply that does not end with its code and a
  space, a bare CR, LF or NUL inside a line (a client splitting on LF would
  see a reply the server did not send);
- a reply that leaks the server's internals: ``Traceback``, an exception
  class name (``TypeError``...), ``object at 0x``, ``[Errno``, a path of the
  server's disk (the account's real home, the project, Python's);
- a count of replies that is not one per line (a desynchronized session);
- a hang: no reply within ``--timeout`` seconds, or a session that no longer
  answers ``NOOP`` at its end;
- an ERROR, CRITICAL or traceback in the server's log.

The failure message names the seed; the same seed sends the same lines::

    python -m tests.fuzz --lines 100000 --seed 1234

runs a server of its own (a temporary SQLite database, an account, the
server's log captured) and prints what it did. ``tests/test_fuzz.py`` runs
a few thousand lines with a fresh seed at every test run.
"""

import argparse
import collections
import os
import random
import re
import secrets
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Commands that move data: after login they run as transfer steps (with a
# data connection), never inside a pipelined batch.
TRANSFER_VERBS = frozenset({"LIST", "NLST", "MLSD", "RETR", "STOR", "STOU", "APPE"})
UPLOAD_VERBS = frozenset({"STOR", "STOU", "APPE"})
# Commands after which the session may be logged out.
LOGIN_VERBS = frozenset({"USER", "PASS", "REIN"})
ACTIVE_VERBS = frozenset({"PORT", "EPRT"})
# Lines longer than this are answered "500 Command too long." whatever they say
# (handlers.DjangoHandlerMixin.MAX_LINE).
MAX_LINE = 2048

REPLY_RE = re.compile(rb"^([1-5][0-9]{2})([ -])")
PASV_RE = re.compile(rb"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
EPSV_RE = re.compile(rb"\(\|\|\|(\d+)\|\)")
LEAK_RE = re.compile(
    r"Traceback|object at 0x|\[Errno|File \"|site-packages|dist-packages"
    r"|\b[A-Za-z_]\w*(?:Error|Exception|Warning)\b"
)


class FuzzFailure(AssertionError):
    """The server misbehaved; the message says how, with the seed and the lines."""


def known_verbs():
    """Every command the server knows (pyftpdlib's and this project's)."""
    from pyftpdlib.handlers import FTPHandler

    verbs = set(FTPHandler.proto_cmds)
    try:
        from ftpserver_core.handlers import EXTRA_COMMANDS
    except Exception:  # Django not configured: the script's own server says
        EXTRA_COMMANDS = {"HASH": None}
    return sorted(verbs | set(EXTRA_COMMANDS))


def classify(line, verbs):
    """Return the command the server runs for ``line`` (bytes), as it parses it.

    None for a line it answers "too long" or does not know.
    """
    if len(line) > MAX_LINE:
        return None
    text = line.decode("utf8", "replace")
    cmd = text.split(" ")[0].upper()
    if cmd == "SITE" and text[5:]:
        site = f"SITE {text[5:].split(' ')[0].upper()}"
        if site in verbs:
            return site
    if cmd not in verbs:
        # pyftpdlib's reading of Telnet "IP/Synch" before these three.
        return cmd[-4:] if cmd[-4:] in ("ABOR", "STAT", "QUIT") else None
    return cmd


# --- the lines


NAMES = [
    "/",
    ".",
    "..",
    "../..",
    "../../../../..",
    "~",
    "*",
    "?",
    "[a-z]*",
    "//",
    "a/b/c",
    "dir",
    "file.txt",
    " spaced name ",
    "-la",
    "-a",
    "/etc/passwd",
    "\\..\\..\\windows",
    "%s%s%n",
    "{username}",
    "$(id)",
    "`id`",
    "..\x00/x",
    "\u00e9t\u00e9",
    "\u65e5\u672c",
    "\U0001f600",
    "\u202etxt.exe",
    "con",
    ".ftpupload-x-y",
]
NUMBERS = ["0", "1", "-1", "007", "4294967296", "9" * 40, "1e9", "0x10", "", " 5"]
TYPES = ["A", "I", "E", "L 8", "L 7", "A N", "A T", "I X", "a", "i", "L", "X"]
OPTS = [
    "MLST type;size;modify;perm;unique;",
    "MLST",
    "MLST nonsense;",
    "UTF8 ON",
    "UTF8 OFF",
    "HASH",
    "HASH SHA-256",
    "HASH sha-1",
    "HASH MD5",
    "HASH CRC32",
    "HASH nope",
    "NOPE",
]
TIMES = ["20240101000000", "19700101000000", "99991231235959", "20241301000000", "x"]
# Sequences that are no UTF-8: a lone continuation byte, a truncated
# sequence, an overlong "/", a surrogate, bytes UTF-8 never has.
BAD_UTF8 = [b"\x80", b"\xc3", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff\xfe"]
SPECIAL_BYTES = [b"\x00", b"\r", b"\n", b"\t", b"\x1b", b"\x7f", b"\xff", b" "]


class Lines:
    """A seeded generator of command lines (bytes, without their CRLF)."""

    def __init__(self, rng, verbs, active_port, closed_port):
        self.rng = rng
        self.verbs = verbs
        self.active_port = active_port
        self.closed_port = closed_port

    def line(self, exclude=frozenset()):
        """A random line whose command (as the server reads it) is not in ``exclude``."""
        while True:
            line = self._line()
            while b"\r\n" in line:  # one line: the server splits at CRLF only
                line = line.replace(b"\r\n", b"\n")
            if classify(line, self.verbs) in exclude:
                continue
            if LEAK_RE.search(line.decode("utf8", "replace")):
                continue  # an echo of it would look like a leak
            return line

    def _line(self):
        rng = self.rng
        kind = rng.random()
        if kind < 0.55:
            verb = rng.choice(self.verbs)
            line = self._verb_case(verb).encode()
            arg = self.argument(verb)
            if arg is not None:
                line += b" " + arg
        elif kind < 0.70:
            line = self._unknown_verb()
            arg = self.argument(None)
            if arg is not None and rng.random() < 0.5:
                line += b" " + arg
        elif kind < 0.80:
            line = self.random_bytes(rng.randint(0, 200))
        elif kind < 0.84:
            line = b" " * rng.randint(0, 3)
        elif kind < 0.90:
            # Around the line limit, and far past it.
            size = rng.choice(
                [rng.randint(MAX_LINE - 8, MAX_LINE + 8), rng.randint(100, 5000)]
            )
            line = (self._verb_case(rng.choice(self.verbs)) + " ").encode()
            line += self.random_bytes(max(0, size - len(line)), printable=0.8)
        else:
            # Telnet IP/Synch before ABOR, STAT or QUIT (pyftpdlib honours it).
            line = rng.choice([b"\xff\xf4\xff\xf2", b"\xff\xf4", b"\xf2", b"XX"])
            line += rng.choice([b"ABOR", b"STAT", b"abor", b"STAT /"])
        if rng.random() < 0.15:
            line = self.mutate(line)
        return line

    def _verb_case(self, verb):
        rng = self.rng
        roll = rng.random()
        if roll < 0.8:
            return verb
        if roll < 0.9:
            return verb.lower()
        return "".join(c.lower() if rng.random() < 0.5 else c for c in verb)

    def _unknown_verb(self):
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            return "".join(
                rng.choice(letters) for _ in range(rng.randint(1, 8))
            ).encode()
        if roll < 0.7:
            verb = rng.choice(self.verbs).replace(" ", "")
            return (verb + rng.choice(["X", "1", "_", "?", verb[-1]])).encode()
        return self.random_bytes(rng.randint(1, 10), printable=0.5)

    def argument(self, verb):
        """A random argument for ``verb`` (None: none at all)."""
        rng = self.rng
        if rng.random() < 0.12:
            return None
        if rng.random() < 0.15:
            return self.random_bytes(rng.randint(0, 60), printable=0.5)
        if verb in ("PORT",):
            return self.port_argument().encode()
        if verb in ("EPRT",):
            return self.eprt_argument().encode()
        if verb in ("TYPE",):
            return rng.choice(TYPES).encode()
        if verb in ("MODE", "STRU"):
            return rng.choice(["S", "B", "C", "F", "R", "P", "s", ""]).encode()
        if verb in ("REST", "ALLO"):
            return rng.choice(NUMBERS).encode()
        if verb in ("OPTS",):
            return rng.choice(OPTS).encode()
        if verb in ("MFMT",):
            return f"{rng.choice(TIMES)} {self.name()}".encode("utf8", "surrogatepass")
        if verb in ("SITE CHMOD",):
            mode = rng.choice(["755", "777", "0", "9999", "-1", "abc", "u+x"])
            return f"{mode} {self.name()}".encode("utf8", "surrogatepass")
        if verb in ("SITE",):
            return rng.choice([b"HELP", b"CHMOD", b"CHMOD 755", b"EXEC id", b"X"])
        if verb in ("EPSV",):
            return rng.choice([b"ALL", b"1", b"2", b"3", b"all"])
        if verb in ("HELP", "SITE HELP"):
            return rng.choice(self.verbs).encode()
        if verb in ("USER",):
            # Random names: no real account is guessed at, and no one name
            # fails often enough to be slowed down.
            return f"u{rng.getrandbits(40):x}".encode()
        if verb in ("PASS",):
            return self.random_bytes(rng.randint(0, 40), printable=0.9)
        return self.name().encode("utf8", "surrogatepass")

    def name(self):
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return rng.choice(NAMES)
        if roll < 0.8:
            return f"f{rng.randint(0, 30)}{rng.choice(['', '.txt', '/', '/..'])}"
        return "/".join(rng.choice(NAMES) for _ in range(rng.randint(2, 4)))

    def port_argument(self):
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            port = rng.choice([self.active_port, self.closed_port])
            fields = [127, 0, 0, 1, port >> 8, port & 0xFF]
        elif roll < 0.6:
            fields = [127, 0, 0, 1, 0, rng.randint(1, 255)]  # privileged
        elif roll < 0.7:
            fields = [10, 0, 0, 1, 100, 1]  # a foreign address
        else:
            fields = [
                rng.choice([0, 1, 255, 256, -1, 999]) for _ in range(rng.randint(0, 8))
            ]
        return ",".join(map(str, fields))

    def eprt_argument(self):
        rng = self.rng
        port = rng.choice([self.active_port, self.closed_port, 21, 0, 70000, -1])
        return rng.choice(
            [
                f"|1|127.0.0.1|{port}|",
                f"|2|::1|{port}|",
                f"|1|10.0.0.1|{port}|",
                f"|3|x|{port}|",
                "|||",
                "|1|127.0.0.1|",
                f"#1#127.0.0.1#{port}#",
                "|1|999.1.1.1|2000|",
            ]
        )

    def random_bytes(self, size, printable=0.3):
        rng = self.rng
        out = bytearray()
        while len(out) < size:
            roll = rng.random()
            if roll < printable:
                out.append(rng.randint(0x21, 0x7E))
            elif roll < printable + 0.1:
                out += rng.choice(SPECIAL_BYTES)
            elif roll < printable + 0.2:
                out += rng.choice(BAD_UTF8)
            elif roll < printable + 0.3:
                out += rng.choice(["\u00e9", "\u65e5", "\U0001f600"]).encode()
            else:
                out.append(rng.randint(0, 255))
        return bytes(out[:size])

    def mutate(self, line):
        """Insert, replace or drop a few bytes."""
        rng = self.rng
        data = bytearray(line)
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(data))
            roll = rng.random()
            if roll < 0.5:
                data[at:at] = rng.choice(SPECIAL_BYTES + BAD_UTF8)
            elif roll < 0.8 and at < len(data):
                data[at] = rng.randint(0, 255)
            elif at < len(data):
                del data[at]
        return bytes(data)


# --- the client side


@dataclass
class Reply:
    code: int
    lines: list = field(default_factory=list)  # bytes, without CRLF

    @property
    def text(self):
        return b"\n".join(self.lines).decode("utf8", "replace")

    @property
    def closes(self):
        """True when the server closes the session after this reply."""
        first = self.lines[0]
        return self.code in (221, 421) or (
            self.code == 530 and first.rstrip().endswith(b"Disconnecting.")
        )


class Closed(Exception):
    """The server closed the control connection."""


class Session:
    """One control connection, read reply by reply."""

    def __init__(self, fuzz):
        self.fuzz = fuzz
        self.sock = socket.create_connection(
            (fuzz.host, fuzz.port), timeout=fuzz.timeout
        )
        self.buffer = b""
        self.data_sockets = []  # active data connections the server made
        self.passive = None  # (host, port) of the last PASV/EPSV reply
        self.logged_in = False
        self.closed = False

    def close(self):
        for sock in [self.sock, *self.data_sockets]:
            try:
                sock.close()
            except OSError:
                pass
        self.data_sockets = []
        self.closed = True

    def send(self, data):
        self.fuzz.history.append((">>>", data))
        try:
            self.sock.sendall(data)
        except OSError as exc:
            # The server closed first; the replies read next say whether
            # it was entitled to.
            self.fuzz.history.append(("!!!", f"send failed: {exc}".encode()))

    def _read_line(self, deadline):
        while b"\r\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:  # a reset after the server closed
                self.fuzz.history.append(("!!!", f"recv failed: {exc}".encode()))
                chunk = b""
            if not chunk:
                if self.buffer:
                    self.fuzz.fail(
                        f"the connection ended inside a line: {self.buffer!r}"
                    )
                raise Closed
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_reply(self, waiting_for="a reply"):
        """Read one reply; fail when it is malformed, leaks, or never comes."""
        deadline = time.monotonic() + self.fuzz.timeout
        try:
            first = self._read_line(deadline)
            match = REPLY_RE.match(first)
            if not match:
                self.fuzz.fail(f"malformed reply line {first!r}")
            reply = Reply(int(match[1]), [first])
            if match[2] == b"-":
                end = match[1] + b" "
                while True:
                    line = self._read_line(deadline)
                    reply.lines.append(line)
                    if line.startswith(end):
                        break
        except TimeoutError:
            self.fuzz.fail(f"no {waiting_for} within {self.fuzz.timeout:g} s (a hang)")
        self.fuzz.history.append(("<<<", b"\r\n".join(reply.lines)))
        self.fuzz.check_reply(reply)
        return reply

    def command(self, line):
        """Send one line and return its final reply (preliminary ones skipped)."""
        self.send(line + b"\r\n")
        reply = self.read_reply(f"reply to {line[:60]!r}")
        while reply.code < 200:
            reply = self.read_reply(f"final reply to {line[:60]!r}")
        return reply

    def drain_active(self):
        """Take the active data connections the server made to us."""
        listener = self.fuzz.listener
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.data_sockets.append(conn)


class Fuzz:
    """Send ``lines`` random lines to a server; raise FuzzFailure when it errs."""

    def __init__(
        self,
        host,
        port,
        username,
        password,
        *,
        lines=3000,
        seed=None,
        timeout=15.0,
        log_path=None,
        secrets_=(),
        command="python -m tests.fuzz",
        out=None,
    ):
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.total = lines
        self.seed = seed if seed is not None else random.SystemRandom().getrandbits(32)
        self.timeout = timeout
        self.log_path = Path(log_path) if log_path else None
        self.log_offset = self.log_path.stat().st_size if self.log_path else 0
        self.command = command
        self.out = out
        self.rng = random.Random(self.seed)
        self.verbs = known_verbs()
        self.history = collections.deque(maxlen=100)
        self.phase = None
        self.sent = 0
        self.stats = collections.Counter()
        self.marker = 0
        paths = {str(p) for p in secrets_ if p and len(str(p)) > 4}
        self.secret_re = (
            re.compile("|".join(re.escape(p) for p in sorted(paths, key=len)[::-1]))
            if paths
            else None
        )
        self.listener = socket.socket()
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        with socket.socket() as closed:
            closed.bind((host, 0))
            closed_port = closed.getsockname()[1]
        self.lines = Lines(
            self.rng, self.verbs, self.listener.getsockname()[1], closed_port
        )

    # --- reporting

    def fail(self, reason):
        shown = []
        for direction, data in self.history:
            if len(data) > 300:
                data = data[:300] + b"...(%d bytes)" % len(data)
            shown.append(f"  {direction} {data!r}")
        raise FuzzFailure(
            f"FTP fuzz failure (seed {self.seed}, {self.phase}, line {self.sent} "
            f"of {self.total}): {reason}\n"
            f"reproduce with: {self.command} --lines {self.total} --seed {self.seed}"
            f" (or FTPSUITE_FUZZ_SEED={self.seed} FTPSUITE_FUZZ_LINES={self.total} "
            "pytest tests/test_fuzz.py)\n"
            "last exchanges:\n" + "\n".join(shown)
        )

    def say(self, message):
        if self.out is not None:
            print(message, file=self.out, flush=True)

    # --- checks

    def check_reply(self, reply):
        for line in reply.lines:
            if b"\r" in line or b"\n" in line or b"\x00" in line:
                self.fail(f"a bare CR, LF or NUL inside the reply line {line!r}")
        text = reply.text
        leak = LEAK_RE.search(text) or (self.secret_re and self.secret_re.search(text))
        if leak:
            self.fail(f"the reply leaks {leak[0]!r}: {text!r}")

    def check_log(self):
        """Fail on an error or a traceback the server logged since the last look."""
        if self.log_path is None:
            return
        size = self.log_path.stat().st_size
        if size == self.log_offset:
            return
        with open(self.log_path, "rb") as fh:
            fh.seek(self.log_offset)
            new = fh.read(size - self.log_offset)
        self.log_offset = size
        text = new.decode("utf8", "replace")
        for line in text.splitlines():
            if (
                line.startswith(("ERROR", "CRITICAL", "Traceback"))
                or "Traceback" in line
            ):
                self.fail(f"the server logged an error:\n{text[-4000:]}")

    # --- the run

    def run(self):
        started = time.monotonic()
        self.stats["next_report"] = 10000
        try:
            before = self.total // 2
            self.phase = "before login"
            self._phase(before, login=False)
            self.phase = "after login"
            self._phase(self.total, login=True)
        finally:
            self.listener.close()
        self.check_log()
        del self.stats["next_report"]
        self.stats["seconds"] = round(time.monotonic() - started, 1)
        return self.stats

    def _phase(self, until, login):
        while self.sent < until:
            session = self._open(login)
            budget = self.rng.randint(30, 400)
            try:
                while budget > 0 and self.sent < until and not session.closed:
                    if login and session.logged_in and self.rng.random() < 0.25:
                        self._transfer(session)
                        budget -= 1
                    else:
                        budget -= self._batch(session, login)
                    self.check_log()
                    if self.sent >= self.stats["next_report"]:
                        self.stats["next_report"] = self.sent + 10000
                        self.say(f"{self.sent} lines ({self.phase})")
                if not session.closed:
                    self._finish(session)
            finally:
                session.close()
            self.stats["sessions"] += 1

    def _open(self, login):
        try:
            session = Session(self)
        except OSError as exc:
            self.fail(f"cannot connect to the server: {exc}")
        try:
            greeting = session.read_reply("greeting")
        except Closed:
            self.fail("the server closed the connection before its greeting")
        if greeting.code != 220:
            hint = (
                " (the fuzz has one session at a time: the server keeps sessions "
                "it closed open)"
                if b"Too many connections" in greeting.lines[0]
                else ""
            )
            self.fail(f"greeting {greeting.lines[0]!r}{hint}")
        if login:
            try:
                if session.command(b"USER " + self.username.encode()).code != 331:
                    self.fail("USER of the fuzz account was refused")
                reply = session.command(b"PASS " + self.password.encode())
            except Closed:
                self.fail("the server closed the connection during the login")
            if reply.code != 230:
                self.fail(f"the fuzz account could not log in: {reply.text!r}")
            session.logged_in = True
        return session

    def _batch(self, session, login):
        """Send a few random lines at once; check one reply comes for each."""
        rng = self.rng
        count = 1 if rng.random() < 0.4 else rng.randint(2, 12)
        exclude = TRANSFER_VERBS if login else frozenset()
        lines = [self.lines.line(exclude) for _ in range(count)]
        verbs = [classify(line, self.verbs) for line in lines]
        self.marker += 1
        barrier = f"ZZFUZZ{self.marker}".encode()
        session.send(b"".join(line + b"\r\n" for line in lines) + barrier + b"\r\n")
        self.sent += count
        self.stats["lines"] += count
        expected = count + 1
        replies = []
        barrier_reply = f'500 Command "{barrier.decode()}" not understood.'.encode()
        seen_barrier = False
        try:
            while not (seen_barrier and len(replies) >= expected):
                reply = session.read_reply(
                    f"reply {len(replies) + 1} of {expected} of a batch"
                )
                if reply.code < 200:
                    self.fail(f"a preliminary reply {reply.lines[0]!r} in a batch")
                replies.append(reply)
                if reply.lines == [barrier_reply]:
                    seen_barrier = True
                if reply.closes:
                    # The session ends here: the lines after the one that
                    # closed it are never read.
                    self._expect_close(session)
                    break
                if len(replies) > expected:
                    self.fail(f"{len(replies)} replies to {count} lines and the marker")
        except Closed:
            self.fail(
                f"the server closed the session after {len(replies)} of {expected} "
                "replies, without a reply that says so"
            )
        if not session.closed:
            if ACTIVE_VERBS & set(verbs):
                session.drain_active()
            if login and LOGIN_VERBS & set(verbs):
                # USER or REIN may have logged the session out: start afresh.
                self._finish(session)
                session.close()
        self.stats["replies"] += len(replies)
        return count

    def _expect_close(self, session):
        try:
            extra = session.read_reply("the end of the session")
        except Closed:
            session.close()
            # The lines after the one that closed it are the server's to
            # ignore: a moment to log what it did with them, for this batch.
            time.sleep(0.05)
            self.check_log()
            return
        self.fail(f"a reply after one that closes the session: {extra.lines[0]!r}")

    def _transfer(self, session):
        """PASV or EPSV, then a transfer command with a real data connection."""
        rng = self.rng
        verb = rng.choice(sorted(TRANSFER_VERBS))
        verb_text = verb if rng.random() < 0.8 else verb.lower()
        arg = self.lines.argument(verb)
        line = verb_text.encode() + (b" " + arg if arg is not None else b"")
        line = line.replace(b"\r\n", b"\n")
        if len(line) > MAX_LINE or classify(line, self.verbs) != verb:
            return
        if LEAK_RE.search(line.decode("utf8", "replace")):
            return
        extended = rng.random() < 0.5
        try:
            reply = session.command(b"EPSV" if extended else b"PASV")
            if reply.code == 501 and not extended:
                # After "EPSV ALL" only EPSV sets up a data connection.
                extended = True
                reply = session.command(b"EPSV")
            if reply.code not in (227, 229):
                self.fail(f"no passive port: {reply.lines[0]!r}")
            match = (EPSV_RE if extended else PASV_RE).search(reply.lines[0])
            if not match:
                self.fail(f"a passive reply without its port: {reply.lines[0]!r}")
            port = int(match[1]) if extended else (int(match[5]) << 8) + int(match[6])
            session.send(line + b"\r\n")
            self.sent += 1
            self.stats["transfers"] += 1
            reply = session.read_reply(f"reply to {line[:60]!r}")
            if reply.code >= 200:
                if reply.closes:
                    self._expect_close(session)
                return
            self._move_data(verb, port)
            reply = session.read_reply(f"final reply to {line[:60]!r}")
            if reply.code < 200:
                self.fail(f"a second preliminary reply {reply.lines[0]!r}")
            self.stats["data"] += 1
            if reply.closes:
                self._expect_close(session)
        except Closed:
            self.fail("the server closed the session during a transfer")

    def _move_data(self, verb, port):
        try:
            data = socket.create_connection((self.host, port), timeout=self.timeout)
        except OSError as exc:
            self.fail(
                f"the server announced a transfer but its data port is shut: {exc}"
            )
        with data:
            if verb in UPLOAD_VERBS:
                payload = self.lines.random_bytes(self.rng.randint(0, 8192))
                data.sendall(payload)
            else:
                received = 0
                while True:
                    try:
                        chunk = data.recv(65536)
                    except TimeoutError:
                        self.fail(f"the data of {verb} stopped coming (a hang)")
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > 64 << 20:
                        break

    def _finish(self, session):
        """The session still answers; then QUIT."""
        try:
            reply = session.command(b"NOOP")
            if reply.code != 200:
                self.fail(f"NOOP at the end of a session got {reply.lines[0]!r}")
            reply = session.command(b"QUIT")
            if reply.code != 221:
                self.fail(f"QUIT got {reply.lines[0]!r}")
        except Closed:
            self.fail("the session ended without answering NOOP and QUIT")


# --- the script: a server of its own


SETTINGS = '''\
"""Settings of a fuzzed server: tests.settings, the log at WARNING on stderr."""

from tests.settings import *  # noqa: F403

FTPSERVER_AUDIT_JOURNAL_DIR = {journal!r}
LOGGING = {{
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {{"plain": {{"format": "%(levelname)s %(name)s: %(message)s"}}}},
    "handlers": {{
        "stderr": {{"class": "logging.StreamHandler", "formatter": "plain"}}
    }},
    "root": {{"handlers": ["stderr"], "level": "WARNING"}},
}}
'''


def write_settings(directory, journal):
    """Write the settings module of a fuzzed server; return its name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fuzz_settings.py").write_text(SETTINGS.format(journal=str(journal)))
    return "fuzz_settings"


def secrets_of_server(home):
    """Paths a reply must never show: the server's disk, not the client's view."""
    import sysconfig

    return [
        os.path.realpath(home),
        str(REPO_ROOT),
        sys.prefix,
        sys.base_prefix,
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["stdlib"],
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Fuzz the FTP command parser of a server of its own.",
    )
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds a reply may take"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)

    workdir = Path(tempfile.mkdtemp(prefix="ftpsuite-fuzz-"))
    settings_dir = workdir / "settings"
    os.environ["DJANGO_SETTINGS_MODULE"] = write_settings(
        settings_dir, workdir / "journal"
    )
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'fuzz.sqlite3'}"
    sys.path.insert(0, str(settings_dir))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model

    from ftpserver_core.models import FTPUserAccount, HomeDirectory

    from .processes import ServerProcess, command_env

    password = secrets.token_urlsafe(12)
    user = get_user_model().objects.create_user("fuzz", password=password)
    home = workdir / "homes" / "fuzz"
    home.mkdir(parents=True)
    FTPUserAccount.objects.create(
        user=user,
        home_directory=HomeDirectory.objects.create(path=str(home)),
        permission="elradfmwMT",
    )
    env = command_env(settings_dir, DJANGO_SETTINGS_MODULE="fuzz_settings")
    server = ServerProcess(["127.0.0.1:0"], workdir / "server", env)
    print(f"fuzz seed {seed}, {args.lines} lines; files in {workdir}", flush=True)
    failed = True
    try:
        server.wait_started()
        fuzz = Fuzz(
            server.host,
            server.port,
            "fuzz",
            password,
            lines=args.lines,
            seed=seed,
            timeout=args.timeout,
            log_path=server.err_path,
            secrets_=secrets_of_server(home),
            out=sys.stdout,
        )
        stats = fuzz.run()
        code = server.stop()
        if code != 0:
            raise FuzzFailure(
                f"the server exited with {code}:\n{server.stderr[-4000:]}"
            )
        fuzz.check_log()
        failed = False
        print(
            f"ok: {stats['lines']} lines in batches and {stats['transfers']} transfer "
            f"commands ({stats['data']} with data) over {stats['sessions']} sessions, "
            f"{stats['replies']} replies, {stats['seconds']} s (seed {seed})"
        )
    except FuzzFailure as exc:
        print(exc, file=sys.stderr)
    finally:
        server.kill()
        if failed or args.keep:
            print(f"server log: {server.err_path}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
