"""FTP handlers that log in through Django and send a signal for every event.

``DjangoFTPHandler`` and ``DjangoTLS_FTPHandler`` are the classes named by
``FTPSERVER_HANDLER`` and ``FTPSERVER_TLSHANDLER``. ``servers.build_server``
subclasses the selected one per server, carrying that server's options, its
authorizer and its worker pool; pyftpdlib's own classes are never modified.
"""

import logging
import os
import re
import secrets

from django.core.exceptions import ImproperlyConfigured
from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.utils import strerror

from . import audit, digests, signals, tls
from .authorizers import DjangoAuthorizer
from .defender import REFUSAL_MESSAGES, address_key
from .dtp import DataChannel, PassiveListener, PassivePortsExhausted
from .filesystems import DjangoFilesystem, OutsideHome, quoted
from .uploads import RestartError, Upload

logger = logging.getLogger(__name__)

# Commands this server adds to pyftpdlib's (draft-bryan-ftpext-hash).
EXTRA_COMMANDS = {
    "HASH": dict(
        perm="r",
        auth=True,
        arg=True,
        help="Syntax: HASH <SP> file-name (get the file's digest).",
    ),
}

UNAVAILABLE = "421 Service not available, try again later."

# Commands that transfer over the data connection.
TRANSFER_COMMANDS = frozenset(("RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"))

# Login failures the defender scores: guessing, not the server's trouble.
SCORED_LOGIN_FAILURES = frozenset(
    {
        "bad_credentials",
        "inactive_user",
        "no_ftp_account",
        "account_disabled",
        "account_expired",
        "network_not_allowed",
        "tls_required",
        # The right password refused for the server's reasons scores as a
        # wrong one: a different score would tell the password was right.
        "too_many_sessions",
        "home_unavailable",
    }
)


class _ReplyBatch:
    """The context manager of ``reply_batch()`` (a class: it runs per command)."""

    __slots__ = ("handler", "journal")

    def __init__(self, handler):
        self.handler = handler
        self.journal = None

    def __enter__(self):
        handler = self.handler
        if handler._held_replies is None:
            handler._held_replies = []
            self.journal = audit.writer.journal
            self.journal.start_batch()

    def __exit__(self, *exc_info):
        if self.journal is None:
            return  # nested: the outermost batch writes and replies
        handler = self.handler
        held, handler._held_replies = handler._held_replies, None
        try:
            self.journal.end_batch()
        finally:
            respond = super(DjangoHandlerMixin, handler).respond
            for resp, logfun in held:
                respond(resp, logfun)


class DjangoHandlerMixin:
    """Django login off the IO loop, per-session policy, and the signals."""

    authorizer = DjangoAuthorizer()
    abstracted_fs = DjangoFilesystem
    dtp_handler = DataChannel
    passive_dtp = PassiveListener
    # Set per server (FTPSERVER_PASSIVE_PORTS_FALLBACK).
    passive_fallback = False
    # Set per server by servers.build_server().
    worker_pool = None
    digest_pool = None
    upload_mode = "atomic"
    digests = True
    login_timeout = 10.0
    login_grace = 60.0
    logins_per_address = 10
    # The class receivers connect to: the configured handler, not the
    # per-server subclass (so ``sender=DjangoFTPHandler`` matches).
    signal_sender = None

    _login_attempt = None
    _login_task = None
    _hash_task = None
    _login_slot = None
    _login_delayed = None
    _grace = None
    # Set once the defender has heard of this session (a score, a refusal):
    # its end then scores nothing more.
    _defender_told = False
    _ever_logged_in = False

    def __init__(self, conn, server, ioloop=None):
        self.session_id = secrets.token_hex(8)
        self.policy = None
        self._login_failure = None
        self._transfer = {}
        self._disconnect_sent = False
        self._held_input = b""
        self._held_replies = None
        self._login_deadline = None
        self._hash_algorithm = digests.DEFAULT
        super().__init__(conn, server, ioloop=ioloop)
        self._extra_feats.append(digests.FEATURE)
        sessions = getattr(server, "sessions", None)
        if sessions is not None:
            # A session waiting on a worker thread is off the loop's map; the
            # server still closes it at a stop.
            sessions.add(self)

    # Set once AUTH TLS succeeded: pyftpdlib clears _ssl_established in its
    # TLS shutdown at QUIT, before on_logout and on_disconnect run.
    _tls_established = False

    @property
    def tls(self):
        """True when the control channel is encrypted."""
        return self._tls_established

    def handle_ssl_established(self):
        self._tls_established = True
        super().handle_ssl_established()

    # --- admission

    @property
    def defender(self):
        return getattr(self.server, "defender", None)

    _address_slot = None

    def handle(self):
        defender = self.defender
        if defender is not None:
            reason = defender.refusal(self.remote_ip)
            if reason is not None:
                self.refuse(reason, REFUSAL_MESSAGES[reason])
                return
        counts = getattr(self.server, "sessions_per_address", None)
        if counts is not None:
            # pyftpdlib's per-IP limit counts exact addresses; an IPv6
            # client has its whole /64 (the defender's key) to spread over.
            key = address_key(self.remote_ip)
            limit = self.server.max_sessions_per_address
            if limit and counts[key] >= limit:
                self.handle_max_cons_per_ip()
                return
            counts[key] += 1
            self._address_slot = key
        if self.login_grace:
            self._grace = self.ioloop.call_later(
                self.login_grace, self._grace_expired, _errback=self.handle_error
            )
        super().handle()

    _refused = False

    def refuse(self, reason, message):
        """Answer ``message`` (a 421), report the refusal, close the session."""
        if self._closed or self._refused:
            return
        self._refused = True
        self._defender_told = True
        defender = self.defender
        if defender is None or defender.should_record_refusal(self.remote_ip, reason):
            self.send_signal(signals.ftp_connection_refused, reason=reason)
        self._abandon_login()
        failed = self._auth_failed_call
        if failed is not None:
            # In the failed-login delay: the 421 replaces the 530.
            self._auth_failed_call = None
            failed.cancel()
        elif self._fileno not in self.ioloop.socket_map:
            # Off the loop for another reason (a HASH in a worker): nothing
            # can be sent from here, the connection just ends.
            self.close()
            return
        if self._fileno not in self.ioloop.socket_map:
            self.add_channel()
        self._held_input = b""
        with self.reply_batch():
            self.respond(message, logfun=logger.info)
            if failed is not None:
                self.on_login_failed(self._auth_failed_user, "")
        self.close_when_done()

    # pyftpdlib schedules the delayed 530 of a failed login without keeping
    # the call, so nothing can cancel it: a session closed meanwhile (a ban,
    # a stop) got add_channel() on a closed socket. The same, kept.
    _auth_failed_call = None
    _auth_failed_user = ""

    def handle_auth_failed(self, msg, password):
        self.del_channel()
        self._auth_failed_user = self.username
        self._auth_failed_call = self.ioloop.call_later(
            self.auth_failed_timeout,
            self._auth_failed_reply,
            self.username,
            msg.capitalize() if msg else "Authentication failed.",
            _errback=self.handle_error,
        )
        self.username = ""

    def _auth_failed_reply(self, username, msg):
        self._auth_failed_call = None
        self.add_channel()
        self.attempted_logins += 1
        if self.attempted_logins >= self.max_login_attempts:
            self.respond(f"530 {msg} Disconnecting.")
            self.close_when_done()
        else:
            self.respond(f"530 {msg}")
        self.log(f"USER '{username}' failed login.")
        self.on_login_failed(username, "")

    def handle_max_cons(self):
        self._refused = self._defender_told = True
        self.send_signal(signals.ftp_connection_refused, reason="too_many_connections")
        super().handle_max_cons()

    def handle_max_cons_per_ip(self):
        self._refused = self._defender_told = True
        self.send_signal(
            signals.ftp_connection_refused, reason="too_many_connections_per_ip"
        )
        super().handle_max_cons_per_ip()
        if self.defender is not None:
            self.defender.offend(self.remote_ip, "limit_exceeded")

    def _grace_expired(self):
        self._grace = None
        if self._closed or self._ever_logged_in:
            return
        if self._login_attempt is not None:
            # Its verdict is on the way (or held by a spraying delay): the
            # login deadline answers for it; look again shortly.
            self._grace = self.ioloop.call_later(
                5, self._grace_expired, _errback=self.handle_error
            )
            return
        if self.defender is not None:
            self.defender.offend(self.remote_ip, "no_login")
        self.refuse(
            "login_timeout",
            f"421 Login timeout: no login within {self.login_grace:g} s.",
        )

    def _abandon_login(self):
        """Forget a login in progress: no hash for a client that is gone."""
        self._awaiting_verdict = False
        self._login_attempt = None
        task, self._login_task = self._login_task, None
        if task is not None:
            task.cancel()
        delayed, self._login_delayed = self._login_delayed, None
        if delayed is not None and not delayed.cancelled:
            delayed.cancel()
        if self._login_deadline is not None and not self._login_deadline.cancelled:
            self._login_deadline.cancel()
        self._release_login_slot()

    def _release_address_slot(self):
        key, self._address_slot = self._address_slot, None
        if key is not None:
            counts = self.server.sessions_per_address
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

    def _release_login_slot(self):
        key, self._login_slot = self._login_slot, None
        if key is not None:
            counts = self.server.logins_in_flight
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

    def close(self):
        if not self._closed:
            self._end_pending()
        super().close()

    def _end_pending(self):
        """Drop what waits for this session (login, timers, its slots).

        From close(), and again from on_disconnect(): pyftpdlib's TLS error
        path closes through FTPHandler.close(), past this class's close(),
        and a login slot left counted would lock the address out for good.
        """
        self._abandon_login()
        self._release_address_slot()
        if self._grace is not None and not self._grace.cancelled:
            self._grace.cancel()
        task, self._hash_task = self._hash_task, None
        if task is not None:
            task.cancel()
        failed, self._auth_failed_call = self._auth_failed_call, None
        if failed is not None:
            # Closed in the failed-login delay: the attempt is still
            # recorded, before the disconnect.
            failed.cancel()
            self._held_input = b""
            self.on_login_failed(self._auth_failed_user, "")

    def send_signal(self, signal, **kwargs):
        """Send ``signal`` for this session; a failing receiver only logs."""
        kwargs.setdefault("remote_ip", self.remote_ip)
        kwargs.update(
            session_id=self.session_id, remote_port=self.remote_port, tls=self.tls
        )
        signals.dispatch(
            signal, self.signal_sender or type(self), handler=self, **kwargs
        )

    # --- replies wait for the journal

    def reply_batch(self):
        """Hold the replies of a ``with`` block until its audit records are journaled.

        An acknowledged event (226, 250...) is then on disk before the client
        can see the acknowledgement, and a command's records cost one write.
        """
        return _ReplyBatch(self)

    def respond(self, resp, logfun=logger.debug):
        held = self._held_replies
        if held is not None:
            self._last_response = resp
            held.append((resp, logfun))
            return
        super().respond(resp, logfun)

    # Every reply line goes out through push(). A CR, LF or NUL of the
    # client's (an unknown command echoed in its 500, a path) would cut the
    # line: a client splitting at LF reads the rest as a reply the server
    # never sent, and every later reply is off by one. Escaped as repr()
    # does; the CRLF that ends each line stays.
    _UNSAFE_IN_REPLY = re.compile(r"\r(?!\n)|(?<!\r)\n|\x00")
    _ESCAPES = {"\r": "\\r", "\n": "\\n", "\x00": "\\x00"}

    def push(self, data):
        if isinstance(data, str) and ("\n" in data or "\r" in data or "\x00" in data):
            data = self._UNSAFE_IN_REPLY.sub(lambda m: self._ESCAPES[m[0]], data)
        super().push(data)

    def push_with_producer(self, producer):
        # STAT's listing: one line per file, whose name (from the disk, or
        # made by a client with a LF in STOR's argument) may hold a line
        # break that would end the 213 reply early.
        lines = getattr(producer, "iterator", None)
        if lines is not None:
            producer.iterator = _reply_lines(lines)
        super().push_with_producer(producer)

    def _shutdown_connecting_dtp(self):
        # PORT and EPRT are answered once their connection is made or
        # fails. A PASV, PORT, ABOR, REIN or USER read before that (a
        # pipelining client) closed the connection attempt and PORT was
        # never answered: the client waited forever, or took the next
        # reply for it.
        connector = self._dtp_connector
        pending = (
            connector is not None
            and not connector._closed
            and self.ioloop.socket_map.get(connector._fileno) is connector
        )
        super()._shutdown_connecting_dtp()
        if pending and not self._closed:
            self.respond(
                "425 Can't open data connection: cancelled by a later command."
            )

    def ftp_QUIT(self, line):
        # A PORT still connecting gets its 425 before the goodbye (pyftpdlib
        # closes the attempt after sending 221).
        self._shutdown_connecting_dtp()
        channel = self.data_channel
        if channel is not None and not channel._initialized:
            # A data connection no transfer uses is no transfer in progress:
            # pyftpdlib kept such a session open after its 221, no longer
            # reading, until the data timeout (a CLOSE_WAIT socket counted
            # against the address's connection limit).
            channel.close()
        return super().ftp_QUIT(line)

    # --- commands

    # pyftpdlib answers "500 Command too long." each time 2048 more bytes of
    # one line arrive, then runs the line's tail as a command: two or more
    # replies for one line, and the client's replies are off by one from
    # then on. Here an over-long line is dropped as it comes and answered
    # once, at its end.
    MAX_LINE = 2048
    _line_too_long = False

    def _collect(self, data):
        if self._line_too_long:
            return
        self._in_buffer.append(data)
        self._in_buffer_len += len(data)
        if self._in_buffer_len > self.MAX_LINE:
            self._in_buffer = []
            self._in_buffer_len = 0
            self._line_too_long = True

    # While a login is checked, the session keeps reading, so a client that
    # leaves is noticed and its login dropped before any hashing; the lines
    # it sends meanwhile wait in _held_input and run, in order, after the
    # verdict. Past HELD_INPUT bytes the session is closed (not paused: the
    # poll is level-triggered, a paused reader would spin the loop).
    _awaiting_verdict = False
    HELD_INPUT = 16384

    def collect_incoming_data(self, data):
        if self._awaiting_verdict and len(self._held_input) > self.HELD_INPUT:
            self.refuse_input()
            return
        self._collect(data)

    def refuse_input(self):
        self._held_input = b""
        self._abandon_login()
        self.respond("421 Too many commands sent before the login's answer.")
        self.close_when_done()

    def found_terminator(self):
        if self._awaiting_verdict:
            if self._line_too_long:
                # Replayed after the verdict, it gets its 500 in order.
                self._line_too_long = False
                line = b"X" * (self.MAX_LINE + 1)
            else:
                line = b"".join(self._in_buffer)
            self._in_buffer = []
            self._in_buffer_len = 0
            self._held_input += line + b"\r\n"
            return
        if not self._line_too_long:
            super().found_terminator()
            return
        self._line_too_long = False
        if self._idler is not None and not self._idler.cancelled:
            self._idler.reset()
        self.respond_w_warning("500 Command too long.")
        if self.defender is not None:
            self.defender.offend(self.remote_ip, "abuse")

    def ftp_USER(self, line):
        # A NUL or control character is no user name: refused before any
        # query (PostgreSQL rejects NUL with a DataError, a traceback per try).
        if any(ord(c) < 32 or ord(c) == 127 for c in line):
            if self.defender is not None:
                self.defender.offend(self.remote_ip, "abuse")
            self.respond("501 User name contains control characters.")
            return
        super().ftp_USER(line)

    def pre_process_command(self, line, cmd, arg):
        # asynchat hands over every line of a read, also those after a QUIT
        # (or a refusal) that ended the session: they ran on a closed
        # session (a traceback: its fs is gone) or, with the goodbye still
        # being sent, for real (a DELE after QUIT). Nothing runs after it.
        if self._closed or self._closing or self._quit_pending:
            return
        try:
            super().pre_process_command(line, cmd, arg)
        except OutsideHome as exc:
            self.respond(f"550 {exc}.")
        except FilesystemError as exc:
            self.respond(f"501 {exc}.")

    def ftp_PASS(self, line):
        """Check the password in a worker thread; answer when it is done."""
        if self.authenticated:
            self.respond("503 User already authenticated.")
            return
        if not self.username:
            self.respond("503 Login with USER first.")
            return
        args = (self.username, line, self.remote_ip, self.tls)
        # Commands the client pipelined after PASS wait for its verdict, in
        # order (_resume_input runs them).
        self._held_input, self.ac_in_buffer = self.ac_in_buffer, b""
        if self.worker_pool is None:
            # Used outside servers.build_server(): no pool, log in inline.
            self._login_done(self.authorizer.login(*args))
            return
        key = address_key(self.remote_ip)
        in_flight = self.server.logins_in_flight
        cap = self.logins_per_address
        if cap is not None and in_flight[key] >= cap:
            # One address gets a few logins in progress at a time: a flood
            # of them from it is refused here, before any hashing.
            self._login_refused_busy(
                "too_many_logins",
                "421 Too many logins in progress from your address; try again later.",
            )
            self.defender.offend(self.remote_ip, "limit_exceeded")
            return
        in_flight[key] += 1
        self._login_slot = key
        # Run no further commands until the verdict; the loop serves others.
        self._awaiting_verdict = True
        attempt = object()
        self._login_attempt = attempt
        delay = self.defender.login_delay(self.username)
        if delay:
            # This user name is being sprayed from many addresses: its
            # logins slow down (never a lock: that would lock the user out).
            self._login_delayed = self.ioloop.call_later(
                delay, self._submit_login, attempt, args, _errback=self.handle_error
            )
        else:
            self._submit_login(attempt, args)

    def _submit_login(self, attempt, args):
        self._login_delayed = None
        if self._closed or self._login_attempt is not attempt:
            return
        self._login_task = self.worker_pool.submit(
            self.authorizer.login,
            lambda outcome: self._login_done(outcome, attempt),
            *args,
            key=self._login_slot,
            on_start=lambda: self._start_login_deadline(attempt),
        )
        if self._login_task is None:
            self._abandon_login()
            self._login_refused_busy(
                "login_queue_full", "421 The server is busy; try again later."
            )

    def _login_refused_busy(self, reason, message):
        """Answer a login the server will not check now: 421, and the session ends."""
        # The server's own limit: the client is scored (or not) by the caller.
        self._defender_told = True
        self._login_failure = reason
        self._held_input = b""
        with self.reply_batch():
            self.respond(message, logfun=logger.info)
            self.on_login_failed(self.username, "")
        self.username = ""
        self.close_when_done()

    def _start_login_deadline(self, attempt):
        # From when a thread takes the login, not from the queue: a busy
        # queue is not an unavailable database (the queue is bounded).
        if self._closed or self._login_attempt is not attempt:
            return
        self._login_deadline = self.ioloop.call_later(
            self.login_timeout,
            self._login_timed_out,
            attempt,
            _errback=self.handle_error,
        )

    def _login_timed_out(self, attempt):
        # The database (or a backend) did not answer in time: answer anyway.
        if self._closed or self._login_attempt is not attempt:
            return
        self._login_attempt = None
        logger.warning(
            "FTP login of %r from %s not answered within %g s: the database "
            "is unavailable.",
            self.username,
            self.remote_ip,
            self.login_timeout,
        )
        self._login_unavailable()

    def _login_unavailable(self):
        """Answer 421 (retry later): not a failed attempt, and no delay."""
        self._awaiting_verdict = False
        self._defender_told = True  # the server's trouble, not the client's
        self._login_failure = "database_unavailable"
        self._held_input = b""  # the session ends: nothing more is run
        with self.reply_batch():
            self.respond(UNAVAILABLE)
            self.on_login_failed(self.username, "")
        self.username = ""
        self.close_when_done()

    def _login_done(self, outcome, attempt=None):
        policy, reason = outcome
        stale = attempt is not None and self._login_attempt is not attempt
        if self._closed or stale:
            if policy is not None:
                self.authorizer.close_session(policy)
            return
        self._login_attempt = None
        self._login_task = None
        self._release_login_slot()
        if self._login_deadline is not None and not self._login_deadline.cancelled:
            self._login_deadline.cancel()
        if reason == "database_unavailable":
            self._login_unavailable()
            return
        self._awaiting_verdict = False
        if policy is not None:
            self.policy = policy
            self._ever_logged_in = True
            if self._grace is not None and not self._grace.cancelled:
                self._grace.cancel()
            # The policy answers this session's permission questions.
            self.authorizer = policy
            self.username = policy.username
            with self.reply_batch():
                self.handle_auth_success(policy.home, "", policy.msg_login)
            self._resume_input()
        else:
            self._login_failure = reason
            username = self.username
            # The same reply for every refusal: "this account requires TLS"
            # for the right password only would confirm a password that
            # crossed in clear (the audit has the reason). The password
            # never reaches a signal or a log.
            self.handle_auth_failed("", "")
            if reason in SCORED_LOGIN_FAILURES and self.defender is not None:
                # After the failure is pending: a ban it causes answers this
                # very session 421 (and records its failed login).
                self._defender_told = True
                self.defender.login_failed(
                    self.remote_ip, username, getattr(outcome, "unknown_user", False)
                )

    def _resume_input(self):
        """Run the commands pipelined after PASS, now that it is answered."""
        held, self._held_input = self._held_input, b""
        # A line in progress (its start read during the wait) comes after
        # the held ones: set it aside while they run, then go on with it.
        partial, self._in_buffer, self._in_buffer_len = self._in_buffer, [], 0
        too_long, self._line_too_long = self._line_too_long, False
        unsplit, self.ac_in_buffer = self.ac_in_buffer, held
        terminator = self.get_terminator()
        while self.ac_in_buffer and not (self._closed or self._closing):
            line, sep, rest = self.ac_in_buffer.partition(terminator)
            if not sep:
                break  # cannot happen: only whole lines are held
            self.ac_in_buffer = rest
            if line:
                self.collect_incoming_data(line)
            self.found_terminator()
        if self._awaiting_verdict:
            # A held PASS started another wait and took the remaining lines.
            self._held_input += self.ac_in_buffer
        elif self.ac_in_buffer:
            # The held bytes ended within a line: its start.
            partial = [self.ac_in_buffer, *partial]
        self.ac_in_buffer = b""
        self._in_buffer, self._line_too_long = partial, too_long
        self._in_buffer_len = sum(len(chunk) for chunk in partial)
        self.ac_in_buffer += unsplit

    def flush_account(self):
        # pyftpdlib sends on_logout from here: its receivers still see the
        # session's policy (account, group), as at QUIT.
        super().flush_account()
        self._end_session()

    def _end_session(self):
        if self.policy is not None:
            type(self).authorizer.close_session(self.policy)
            self.policy = None
            self.__dict__.pop("authorizer", None)

    def ftp_STOU(self, line):
        # pyftpdlib leaves STOU out of its path checks and answers a refused
        # mkstemp() with 450 (transient): refuse here like every other command.
        try:
            path = self.fs.ftp2fs(line or self.fs.cwd)
        except FilesystemError as exc:
            self.respond(f"501 {exc}.")
            return
        if not self.fs.validpath(os.path.dirname(path) if line else path):
            self.respond("550 Directory is outside the home directory.")
            return
        try:
            return super().ftp_STOU(line)
        except FilesystemError as exc:
            self.respond(f"550 {exc}.")

    def ftp_SITE_CHMOD(self, path, mode):
        # The home is the server's to set up: 777 on it would open it to every
        # local user, 000 would lock the server itself out of it.
        if os.path.realpath(path) == os.path.realpath(self.fs.root):
            self.respond(
                f"550 {quoted(self.fs.sent_path(path))} is the home directory, "
                "whose mode cannot be changed."
            )
            return
        return super().ftp_SITE_CHMOD(path, mode)

    def ftp_DELE(self, path):
        with self.reply_batch():
            result = super().ftp_DELE(path)
            if not self._succeeded():
                return result
            self.send_signal(
                signals.ftp_file_deleted,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def ftp_MKD(self, path):
        with self.reply_batch():
            result = super().ftp_MKD(path)
            if not self._succeeded():
                return result
            self.send_signal(
                signals.ftp_directory_created,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def ftp_RMD(self, path):
        with self.reply_batch():
            result = super().ftp_RMD(path)
            if not self._succeeded():
                return result
            self.send_signal(
                signals.ftp_directory_deleted,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def ftp_RNTO(self, path):
        src = self._rnfr
        with self.reply_batch():
            result = super().ftp_RNTO(path)
            if not (src and self._succeeded()):
                return result
            self.send_signal(
                signals.ftp_file_renamed,
                username=self.username,
                path_from=src,
                path_to=path,
                ftp_path_from=self.fs.client_path(src),
                ftp_path_to=self.fs.client_path(path),
            )
        return result

    def _succeeded(self):
        return self._last_response[:1] == "2"

    # --- pyftpdlib callbacks

    def on_connect(self):
        self.send_signal(signals.ftp_client_connected, remote_port=self.remote_port)

    def on_disconnect(self):
        if self._disconnect_sent:
            return
        self._end_pending()
        self._disconnect_sent = True
        username = self.username if self.authenticated else None
        if not (self._ever_logged_in or self._defender_told) and self.defender:
            # Connected and left without a login (scanners, probes).
            self._defender_told = True
            self.defender.offend(self.remote_ip, "no_login")
        # Receivers still see the session's policy (account, group).
        self.send_signal(signals.ftp_client_disconnected, username=username)
        self._end_session()

    def on_login(self, username):
        self.send_signal(signals.ftp_login, username=username)

    def on_login_failed(self, username, password):
        self.send_signal(
            signals.ftp_login_failed,
            username=username,
            reason=self._login_failure or "bad_credentials",
        )
        self._resume_input()

    def on_logout(self, username):
        self.send_signal(signals.ftp_logout, username=username)

    def _make_epasv(self, extmode=False):
        try:
            super()._make_epasv(extmode)
        except PassivePortsExhausted:
            self._dtp_acceptor = None
            self.respond_w_warning(
                "425 No free passive port in the configured range; try again later."
            )

    # --- transfers

    def ftp_STOR(self, file, mode="w"):
        """Receive a file into an :class:`~ftpserver_core.uploads.Upload`.

        pyftpdlib's own STOR opens the file in place; this one journals the
        upload first, then writes it atomically (FTPSERVER_UPLOAD_MODE).
        """
        cmd = "APPE" if "a" in mode else "STOR"
        offset, self._restart_position = self._restart_position, 0
        upload = Upload(
            file,
            offset=offset,
            append=cmd == "APPE",
            atomic=self.upload_mode == "atomic",
            digest=self.digests,
        )
        try:
            upload.prepare()
        except RestartError as exc:
            self.respond(f"554 {exc}.")
            return
        except (OSError, FilesystemError) as exc:
            self.respond(f"550 {strerror(exc)}.")
            return
        # On disk before the file is created: a crash leaves nothing unknown.
        upload.journal_uid = audit.begin_upload(
            self._transfer_fields(
                "upload_incomplete",
                file,
                # Recorded after a crash only if such uploads are audited.
                _record=audit.enabled("upload_incomplete"),
                **upload.journal_fields(),
            )
        )
        try:
            upload.open()
        except (OSError, FilesystemError) as exc:
            audit.end_upload(upload.journal_uid)
            self.respond(f"550 {strerror(exc)}.")
            return
        if self.data_channel is not None:
            self.respond("125 Data connection already open. Transfer starting.")
            self.data_channel.file_obj = upload
            self.data_channel.enable_receiving(self._current_type, cmd)
        else:
            self.respond("150 File status okay. About to open data connection.")
            self._in_dtp_queue = (upload, cmd)
        return file

    def _transfer_fields(self, event, path, **extra):
        """The audit record an upload gets if the process dies during it."""
        from .receivers import session_fields

        return {
            "time": audit.now(),
            "event": event,
            "username": self.username or "",
            "ftp_path": self.fs.client_path(path) if self.fs else "",
            "path": path,
            "node": audit.node_name(),
            **session_fields(self),
            **extra,
        }

    def transfer_ended(
        self, file, *, receive, cmd, completed, size, duration, reason, sha256
    ):
        """Called by the data channel once a transfer is settled: log, signal."""
        name = file.name
        if completed and not receive and not sha256 and self.digests:
            # Sent by sendfile(): the digest is known if the server saw the
            # file arrive (or hashed it) as it is now.
            known = digests.known(name, digests.DEFAULT)
            sha256 = known[1] if known else ""
        self._transfer = {"size": size, "duration": duration}
        if completed:
            self._transfer["sha256"] = sha256
            content = getattr(file, "identity", None)
            if sha256 and content is not None:
                digests.remember(content, sha256)
        else:
            self._transfer["reason"] = reason
        self.log_transfer(cmd, name, receive, completed, duration, size)
        if receive:
            if completed:
                self.on_file_received(name)
            else:
                self.on_incomplete_file_received(name)
            uid = getattr(file, "journal_uid", None)
            if uid is not None:
                audit.end_upload(uid)
        elif completed:
            self.on_file_sent(name)
        else:
            self.on_incomplete_file_sent(name)

    def _send_transfer(self, signal, path):
        self.send_signal(
            signal,
            username=self.username,
            path=path,
            ftp_path=self.fs.client_path(path) if self.fs else None,
            **self._transfer,
        )

    def on_file_sent(self, file):
        self._send_transfer(signals.ftp_file_sent, file)

    def on_file_received(self, file):
        self._send_transfer(signals.ftp_file_received, file)

    def on_incomplete_file_sent(self, file):
        self._send_transfer(signals.ftp_file_sent_incomplete, file)

    def on_incomplete_file_received(self, file):
        self._send_transfer(signals.ftp_file_received_incomplete, file)

    # --- HASH (draft-bryan-ftpext-hash)

    def ftp_HASH(self, path):
        """Answer the digest of a file: known from its transfer, or computed
        off the IO loop."""
        algorithm = self._hash_algorithm
        try:
            if not self.fs.isfile(path):
                self.respond("550 Not a file.")
                return
        except (OSError, FilesystemError) as exc:
            self.respond(f"550 {strerror(exc)}.")
            return
        client_path = self.fs.client_path(path)
        known = digests.known(path, algorithm)
        if known is not None:
            self._hash_reply(algorithm, client_path, known)
            return
        if self.worker_pool is None:
            self._hash_reply(algorithm, client_path, digests.compute(path, algorithm))
            return
        # Reading a large file takes a while: other clients go on meanwhile,
        # and this session's next commands wait for the 213, in order (held
        # as during a login; a client that leaves drops its HASH).
        self._held_input, self.ac_in_buffer = self.ac_in_buffer, b""
        self._awaiting_verdict = True
        self._hash_task = self.digest_pool.submit(
            digests.compute,
            lambda result: self._hash_done(algorithm, client_path, result),
            path,
            algorithm,
            key=address_key(self.remote_ip),
        )

    def _hash_done(self, algorithm, client_path, result):
        self._hash_task = None
        if self._closed:
            return
        self._awaiting_verdict = False
        self._hash_reply(algorithm, client_path, result)
        self._resume_input()

    def _hash_reply(self, algorithm, client_path, result):
        if isinstance(result, OSError):
            self.respond(f"550 {strerror(result)}.")
            return
        size, digest = result
        self.respond(f"213 {algorithm} 0-{size} {digest} {client_path}")

    def ftp_OPTS(self, line):
        command, _, arg = line.partition(" ")
        if command.upper() != "HASH":
            return super().ftp_OPTS(line)
        if not arg:
            self.respond(f"200 {self._hash_algorithm}")
            return
        algorithm = digests.normalize(arg)
        if algorithm is None:
            self.respond(
                f"504 Unknown algorithm {arg.strip()!r}; "
                f"expected one of {', '.join(digests.ALGORITHMS)}."
            )
            return
        self._hash_algorithm = algorithm
        self.respond(f"200 {algorithm}")


def _reply_lines(lines):
    """Yield listing lines (bytes, each ending with CRLF) with no other line break."""
    for line in lines:
        body = line[:-2] if line.endswith(b"\r\n") else line
        if b"\r" in body or b"\n" in body or b"\x00" in body:
            body = (
                body.replace(b"\r", b"\\r")
                .replace(b"\n", b"\\n")
                .replace(b"\x00", b"\\x00")
            )
        yield body + b"\r\n"


class DjangoFTPHandler(DjangoHandlerMixin, FTPHandler):
    """Plain FTP handler with Django login and signals."""

    proto_cmds = {**FTPHandler.proto_cmds, **EXTRA_COMMANDS}


if tls.available:
    from pyftpdlib.handlers.ftps.control import TLS_FTPHandler

    from .dtp import TLSDataChannel

    class DjangoTLS_FTPHandler(DjangoHandlerMixin, TLS_FTPHandler):  # noqa: N801
        """FTPS handler (explicit TLS, RFC 4217) with Django login and signals."""

        dtp_handler = TLSDataChannel
        proto_cmds = {**TLS_FTPHandler.proto_cmds, **EXTRA_COMMANDS}

        def ftp_AUTH(self, line):
            # Plain text sent behind AUTH TLS in the same packet would be run
            # as if it came through TLS (the STARTTLS injection of
            # CVE-2011-0411): whatever was read with AUTH is dropped.
            self.ac_in_buffer = b""
            self._in_buffer, self._in_buffer_len = [], 0
            super().ftp_AUTH(line)

        # The reply of a PROT P data connection the data channel refused
        # before any transfer command came (TLSDataChannel.refuse): the
        # session's next transfer gets it at once, instead of a 150 and a
        # wait for a connection that cannot come (the listener has closed).
        _refused_transfer = None

        def refuse_next_transfer(self, reply):
            self._refused_transfer = reply

        def process_command(self, cmd, *args, **kwargs):
            if cmd in ("PASV", "EPSV", "PORT", "EPRT"):
                self._refused_transfer = None  # a new data connection
            elif self._refused_transfer and cmd in TRANSFER_COMMANDS:
                reply, self._refused_transfer = self._refused_transfer, None
                self.respond(reply, logfun=logger.warning)
                self.log_cmd(cmd, args[0] if args else "", int(reply[:3]), reply[4:])
                return
            super().process_command(cmd, *args, **kwargs)

else:

    def __getattr__(name):
        if name == "DjangoTLS_FTPHandler":
            raise ImproperlyConfigured(tls.MISSING)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
