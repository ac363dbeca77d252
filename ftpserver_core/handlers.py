"""FTP handlers that log in through Django and send a signal for every event.

``DjangoFTPHandler`` and ``DjangoTLS_FTPHandler`` are the classes named by
``FTPSERVER_HANDLER`` and ``FTPSERVER_TLSHANDLER``. ``servers.build_server``
subclasses the selected one per server, carrying that server's options, its
authorizer and its worker pool; pyftpdlib's own classes are never modified.
"""

import logging
import os
import secrets

from django.core.exceptions import ImproperlyConfigured
from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import FTPHandler

from . import signals, tls
from .authorizers import DjangoAuthorizer
from .filesystems import DjangoFilesystem

logger = logging.getLogger(__name__)

_SIGNAL_NAMES = {id(signal): name for name, signal in signals.ALL_SIGNALS.items()}


class _AsIs(str):
    """A reply text that handle_auth_failed() must not re-case."""

    def capitalize(self):
        return str(self)


class DjangoHandlerMixin:
    """Django login off the IO loop, per-session policy, and the signals."""

    authorizer = DjangoAuthorizer()
    abstracted_fs = DjangoFilesystem
    # Set per server by servers.build_server().
    worker_pool = None
    # The class receivers connect to: the configured handler, not the
    # per-server subclass (so ``sender=DjangoFTPHandler`` matches).
    signal_sender = None

    def __init__(self, conn, server, ioloop=None):
        self.session_id = secrets.token_hex(8)
        self.policy = None
        self._login_failure = None
        self._transfer = (0, 0.0)
        self._disconnect_sent = False
        self._held_input = b""
        super().__init__(conn, server, ioloop=ioloop)

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

    def send_signal(self, signal, **kwargs):
        """Send ``signal`` for this session; a failing receiver only logs."""
        kwargs.setdefault("remote_ip", self.remote_ip)
        kwargs.update(
            session_id=self.session_id, remote_port=self.remote_port, tls=self.tls
        )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", _SIGNAL_NAMES.get(id(signal), signal), kwargs)
        sender = self.signal_sender or type(self)
        for receiver, result in signal.send_robust(
            sender=sender, handler=self, **kwargs
        ):
            if isinstance(result, Exception):
                logger.error(
                    "Receiver %r of %s failed.",
                    receiver,
                    _SIGNAL_NAMES.get(id(signal)),
                    exc_info=result,
                )

    # --- commands

    def pre_process_command(self, line, cmd, arg):
        try:
            super().pre_process_command(line, cmd, arg)
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
        # Read no further commands until the verdict; the loop serves others.
        self.del_channel()
        self.worker_pool.submit(self.authorizer.login, self._login_done, *args)

    def _login_done(self, outcome):
        policy, reason = outcome
        if self._closed:
            if policy is not None:
                self.authorizer.close_session(policy)
            return
        self.add_channel()
        if policy is not None:
            self.policy = policy
            # The policy answers this session's permission questions.
            self.authorizer = policy
            self.username = policy.username
            self.handle_auth_success(policy.home, "", policy.msg_login)
            self._resume_input()
        else:
            self._login_failure = reason
            message = ""
            if reason == "tls_required":
                # _AsIs: pyftpdlib would .capitalize() it to "requires tls".
                message = _AsIs("This account requires TLS: use AUTH TLS first.")
            # The password never reaches a signal or a log.
            self.handle_auth_failed(message, "")

    def _resume_input(self):
        """Run the commands pipelined after PASS, now that it is answered."""
        held, self._held_input = self._held_input, b""
        self.ac_in_buffer = held + self.ac_in_buffer
        terminator = self.get_terminator()
        while self.ac_in_buffer and not (self._closed or self._closing):
            line, sep, rest = self.ac_in_buffer.partition(terminator)
            if not sep:
                break  # an incomplete line: the next read completes it
            self.ac_in_buffer = rest
            if line:
                self.collect_incoming_data(line)
            self.found_terminator()

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

    def ftp_DELE(self, path):
        result = super().ftp_DELE(path)
        if self._succeeded():
            self.send_signal(
                signals.ftp_file_deleted,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def ftp_MKD(self, path):
        result = super().ftp_MKD(path)
        if self._succeeded():
            self.send_signal(
                signals.ftp_directory_created,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def ftp_RMD(self, path):
        result = super().ftp_RMD(path)
        if self._succeeded():
            self.send_signal(
                signals.ftp_directory_deleted,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def ftp_RNTO(self, path):
        src = self._rnfr
        result = super().ftp_RNTO(path)
        if src and self._succeeded():
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
        self._disconnect_sent = True
        username = self.username if self.authenticated else None
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

    def log_transfer(self, cmd, filename, receive, completed, elapsed, bytes):
        # Called just before on_file_*: keep the figures for their signals.
        self._transfer = (bytes, elapsed)
        super().log_transfer(cmd, filename, receive, completed, elapsed, bytes)

    def _send_transfer(self, signal, path):
        size, duration = self._transfer
        self.send_signal(
            signal,
            username=self.username,
            path=path,
            ftp_path=self.fs.client_path(path) if self.fs else None,
            size=size,
            duration=duration,
        )

    def on_file_sent(self, file):
        self._send_transfer(signals.ftp_file_sent, file)

    def on_file_received(self, file):
        self._send_transfer(signals.ftp_file_received, file)

    def on_incomplete_file_sent(self, file):
        self._send_transfer(signals.ftp_file_sent_incomplete, file)

    def on_incomplete_file_received(self, file):
        self._send_transfer(signals.ftp_file_received_incomplete, file)


class DjangoFTPHandler(DjangoHandlerMixin, FTPHandler):
    """Plain FTP handler with Django login and signals."""


if tls.available:
    from pyftpdlib.handlers.ftps.control import TLS_FTPHandler

    class DjangoTLS_FTPHandler(DjangoHandlerMixin, TLS_FTPHandler):  # noqa: N801
        """FTPS handler (explicit TLS, RFC 4217) with Django login and signals."""

else:

    def __getattr__(name):
        if name == "DjangoTLS_FTPHandler":
            raise ImproperlyConfigured(tls.MISSING)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
