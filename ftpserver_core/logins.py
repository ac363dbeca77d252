"""Admission and login of a session: who gets in, and how a login is checked.

A session is admitted at accept time (the defender's bans and lists, the
per-address connection limit), and its ``PASS`` is admitted (the logins in
progress per address, the queue's bound) before a worker thread checks it.
While the check runs, the session keeps reading: a client that leaves is
noticed and its login dropped unhashed; the commands it pipelines wait, in
order, for the verdict. ``LoginMixin`` is part of
:class:`~ftpserver_core.handlers.DjangoHandlerMixin`.
"""

import logging

from . import signals
from .authorizers import LoginOutcome
from .defender import REFUSAL_MESSAGES, address_key
from .policy import LoginRefused

logger = logging.getLogger("ftpserver_core.handlers")

UNAVAILABLE = "421 Service not available, try again later."

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
        # (A session limit is not scored: its reply says so, and a script
        # that retries while its other sessions run must not be banned.)
        "home_unavailable",
    }
)


# The reply to a login refused by a session limit (a 530, as ProFTPD's
# MaxClientsPerUser answers).
LIMIT_MESSAGES = {
    "too_many_sessions": "Too many sessions of this account are open; "
    "close one or try again later.",
    "too_many_sessions_per_address": "Too many sessions from your address are "
    "open; close one or try again later.",
}


class LoginMixin:
    """Admission at accept and at PASS, the login in a worker, its verdict."""

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
    _address_slot = None

    @property
    def defender(self):
        """The server's defender (None outside servers.build_server())."""
        return getattr(self.server, "defender", None)

    def handle(self):
        if self._admit():
            self._greet()

    def _admit(self):
        """Refuse a banned address or one at its limit; else take its slot."""
        defender = self.defender
        if defender is not None:
            reason = defender.refusal(self.remote_ip)
            if reason is not None:
                self.refuse(reason, REFUSAL_MESSAGES[reason])
                return False
        counts = getattr(self.server, "sessions_per_address", None)
        if counts is not None:
            # pyftpdlib's per-IP limit counts exact addresses; an IPv6
            # client has its whole /64 (the defender's key) to spread over.
            key = address_key(self.remote_ip)
            limit = self.server.max_sessions_per_address
            if limit and counts[key] >= limit:
                self.handle_max_cons_per_ip()
                return False
            counts[key] += 1
            self._address_slot = key
        return True

    def _greet(self):
        """Start the login grace and send the 220."""
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
            # In the failed-login delay, the one time a session is off the
            # loop (a pending login or HASH keeps reading): the 421 replaces
            # the 530.
            self._auth_failed_call = None
            failed.cancel()
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
        self.respond("421 Too many commands sent before the server's answer.")
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

    def ftp_PASS(self, line):
        """Check the password in a worker thread; answer when it is done."""
        if self.authenticated:
            self.respond("503 User already authenticated.")
            return
        if not self.username:
            self.respond("503 Login with USER first.")
            return
        args = (
            self.username,
            line,
            self.remote_ip,
            self.tls,
            {"session_id": self.session_id, "connected_at": self.connected_at},
        )
        # Commands the client pipelined after PASS wait for its verdict, in
        # order (_resume_input runs them).
        self._held_input, self.ac_in_buffer = self.ac_in_buffer, b""
        if self.worker_pool is None:
            # Used outside servers.build_server(): no pool, log in inline.
            self._login_done(self.authorizer.login(*args))
            return
        if self._quick_login(args):
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

    def _quick_login(self, args):
        """Answer a repeat login from memory (logincache.py); False: not here."""
        if self.defender.login_delay(self.username):
            return False
        try:
            policy = self.authorizer.quick_login(*args)
        except LoginRefused as refused:
            self._login_done(LoginOutcome.refused(refused.reason))
            return True
        if policy is None:
            return False
        self._login_done(LoginOutcome((policy, None)))
        return True

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
            # The same reply for every refusal but a session limit: "this
            # account requires TLS" for the right password only would
            # confirm a password that crossed in clear (the audit has the
            # reason). A client at its limit must be told to wait, not to
            # fix its password. The password never reaches a signal or a log.
            self.handle_auth_failed(LIMIT_MESSAGES.get(reason, ""), "")
            # Scored now or never: a session refused for a limit that then
            # quits is no scanner (no "no_login" points at its end).
            self._defender_told = True
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
