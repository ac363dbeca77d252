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
import stat
import time
from datetime import UTC, datetime

from django.core.exceptions import ImproperlyConfigured
from pyftpdlib.filesystems import FilesystemError
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.utils import strerror

from . import audit, digests, signals, tls
from .authorizers import DjangoAuthorizer
from .defender import address_key
from .dtp import DataChannel, PassiveListener, PassivePortsExhausted
from .filesystems import DjangoFilesystem, OutsideHome, quoted
from .logins import LoginMixin
from .quotas import busy_reply
from .uploads import (
    AGAIN,
    TEMP_PREFIX,
    FileBusy,
    RestartError,
    Upload,
    guard,
    hold,
    is_regular,
    is_temporary,
    rename_new,
)

logger = logging.getLogger(__name__)


def _appeared(path, src):
    """True when a regular file other than ``src`` is at ``path`` now."""
    if not is_regular(path):
        return False
    try:
        return not os.path.samefile(path, src)
    except OSError:
        return True


# Commands this server adds to pyftpdlib's (draft-bryan-ftpext-hash).
EXTRA_COMMANDS = {
    "HASH": dict(
        perm="r",
        auth=True,
        arg=True,
        help="Syntax: HASH <SP> file-name (get the file's digest).",
    ),
}


# Commands that transfer over the data connection.
TRANSFER_COMMANDS = frozenset(("RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"))


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


class DjangoHandlerMixin(LoginMixin):
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

    def __init__(self, conn, server, ioloop=None):
        self.session_id = secrets.token_hex(8)
        self.connected_at = datetime.now(UTC)
        self.last_command = ""
        self.last_command_at = None
        self._live_sent = None
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
        # Every reply ends with CRLF, so a test for "\n" alone ran the regex
        # for every reply; with no NUL and every CR and LF paired as CRLF
        # (string counts, in C) there is nothing it would replace.
        if isinstance(data, str) and (
            "\x00" in data
            or not data.count("\r") == data.count("\n") == data.count("\r\n")
        ):
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
        # For the live sessions: a password never (PASS's argument).
        self.last_command = "PASS ****" if cmd == "PASS" else line[:200]
        self.last_command_at = time.time()
        try:
            super().pre_process_command(line, cmd, arg)
        except OutsideHome as exc:
            self.respond(f"550 {exc}.")
        except FilesystemError as exc:
            self.respond(f"501 {exc}.")

    def flush_account(self):
        # pyftpdlib forgets an upload still waiting for its data connection
        # (REIN, USER): it is discarded (its temporary file, its quota).
        self._drop_queued_upload()
        # pyftpdlib sends on_logout from here: its receivers still see the
        # session's policy (account, group), as at QUIT.
        super().flush_account()
        self._end_session()

    # --- live sessions (ftpserver_core.state)

    def live_details(self):
        """Return this session's live fields that changed since last asked, or None."""
        if self.policy is None:
            return None
        channel = self.data_channel
        transfer, transferred = "", 0
        if channel is not None and channel.file_obj is not None:
            verb = "upload" if channel.receive else "download"
            name = getattr(channel.file_obj, "name", "")
            path = self.fs.client_path(name) if self.fs and name else ""
            transfer = f"{verb} {path}"[:500]
            transferred = channel.get_transmitted_bytes()
        at = self.last_command_at
        current = (self.last_command, at, transfer, transferred)
        if current == self._live_sent:
            return None
        self._live_sent = current
        return {
            "last_command": self.last_command,
            "last_command_at": (
                datetime.fromtimestamp(at, UTC) if at is not None else None
            ),
            "transfer": transfer,
            "transfer_bytes": transferred,
        }

    TERMINATION_MESSAGES = {
        "admin": "421 Disconnected by an administrator.",
        "banned": "421 Disconnected by an administrator; your address is banned.",
        "account_disabled": "421 Your account has been disabled.",
        "account_expired": "421 Your account has expired.",
        "password_changed": "421 Your password has changed; log in again.",
        "account_deleted": "421 Your account has been removed.",
    }

    def terminate(self, reason, by=""):
        """End this session for ``reason`` (signals.TERMINATION_REASONS)."""
        if self._closed or self._refused:
            return
        self._refused = True
        self._defender_told = True
        self.send_signal(
            signals.ftp_session_terminated,
            username=self.username or None,
            reason=reason,
            by=by,
        )
        channel = self.data_channel
        if channel is not None and hasattr(channel, "abort"):
            # Its 426 and its incomplete record first, then the 421.
            channel.abort("aborted", "426 Transfer aborted: the session was ended.")
        self._held_input = b""
        message = self.TERMINATION_MESSAGES.get(reason, "421 Session terminated.")
        self.respond(message, logfun=logger.info)
        self.close_when_done()

    def _end_session(self):
        if self.quota is not None:
            self.quota.ended()
            self.quota = None
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
        # Its name starts with the argument: ".ftpupload-x" would make a file
        # hidden from listings and from ftpquotascan.
        if line and self._reserved_name(path):
            return
        # pyftpdlib creates the file (mkstemp) before it asks whether the
        # session may write it, and removes it then: a read-only session
        # (anonymous FTP) must not create a file even for a moment. Asked of
        # a name like the one mkstemp makes (the same rules cover it).
        probe = f"{path}.stou" if line else os.path.join(path, "ftpd.stou")
        if not self.authorizer.has_perm(self.username, "w", probe):
            self.respond("550 Not enough privileges.")
            return
        quota = self.quota
        if quota is not None and not quota.need_file(self, "STOU", line, probe):
            return  # refused, or run again once the quota has room
        try:
            name = super().ftp_STOU(line)
        except FilesystemError as exc:
            self.respond(f"550 {exc}.")
            return
        if quota is not None and name is not None:
            self._limit_stou()
        return name

    def _limit_stou(self):
        """Put STOU's new file under the session's quota and size limit."""
        channel = self.data_channel
        if channel is not None and channel.file_obj is not None:
            channel.file_obj = upload = Upload.adopt(
                channel.file_obj.file,
                channel.file_obj.name,
                digest=self.digests,
                lock=True,
            )
        else:
            file, cmd = self._in_dtp_queue
            upload = Upload.adopt(file.file, file.name, digest=self.digests, lock=True)
            self._in_dtp_queue = (upload, cmd)
        self.quota.start(self, upload)

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
        quota = self.quota
        if quota is None:
            return self._dele(path, None)
        # Not a file an upload writes in place; held while measured and removed.
        try:
            return hold(path, lambda seen: self._dele(path, quota, seen))
        except FileBusy:
            self.respond(busy_reply(self.fs.sent_path(path)))
            return None

    def _dele(self, path, quota, seen=False):
        freed = quota.measure(path, seen=seen) if quota is not None else None
        if freed is AGAIN:
            return AGAIN
        if freed is None and quota is not None and quota.account is not None:
            # Nothing measured: nothing removed either. A file created there
            # meanwhile (not yet counted) is measured and held first.
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                self.respond("550 No such file or directory.")
                return None
            if stat.S_ISREG(st.st_mode):
                return AGAIN
        with self.reply_batch():
            result = super().ftp_DELE(path)
            if not self._succeeded():
                return result
            if freed is not None:
                quota.freed(freed)
            self.send_signal(
                signals.ftp_file_deleted,
                username=self.username,
                path=path,
                ftp_path=self.fs.client_path(path),
            )
        return result

    def _reserved_name(self, path):
        """Refuse (553) a name of the server's own temporary files; True if refused.

        Such a file is hidden from listings and from ``ftpquotascan``, and an
        atomic upload's recovery would take it for its own leftover.
        """
        if not is_temporary(os.path.basename(path)):
            return False
        self.respond(
            f"553 {quoted(self.fs.sent_path(path))}: names starting with "
            f"{TEMP_PREFIX!r} are reserved for the server's uploads."
        )
        return True

    def ftp_MKD(self, path):
        if self._reserved_name(path):
            return None
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

    def ftp_RNFR(self, path):
        if self.quota is not None:
            try:
                with guard(path):
                    pass
            except FileBusy:
                self.respond(busy_reply(self.fs.sent_path(path)))
                return None
        return super().ftp_RNFR(path)

    def ftp_RNTO(self, path):
        if self._reserved_name(path):
            self._rnfr = None
            return None
        src = self._rnfr
        if self.quota is None or not src:
            return self._rnto(path, src, None)
        # Neither file written in place by an upload; both held meanwhile.
        busy = src
        try:
            with guard(src):
                busy = path
                if path == src:
                    # Held already (a second hold would be refused); onto
                    # itself a rename changes no usage. Measured, a file
                    # that came and went meanwhile could be counted as
                    # freed, or leave the command unanswered (AGAIN).
                    return self._rnto(path, src, None)
                return hold(path, lambda seen: self._rnto(path, src, self.quota, seen))
        except FileBusy:
            self._rnfr = None
            self.respond(busy_reply(self.fs.sent_path(busy)))
            return None

    def _rnto(self, path, src, quota, seen=False):
        # A file renamed over another frees the other's room; within one
        # home a rename changes nothing else (each account has its own).
        measured = quota and src
        freed = quota.measure(path, unless_same=src, seen=seen) if measured else None
        if freed is AGAIN:
            return AGAIN
        with self.reply_batch():
            if measured and freed is None and not os.path.lexists(path):
                result = self._rename_new(src, path)
                if result is AGAIN:
                    return result
            elif measured and freed is None and _appeared(path, src):
                return AGAIN  # not measured: measured and held first
            else:
                result = super().ftp_RNTO(path)
            if not (src and self._succeeded()):
                return result
            if freed is not None:
                quota.freed(freed)
            self.send_signal(
                signals.ftp_file_renamed,
                username=self.username,
                path_from=src,
                path_to=path,
                ftp_path_from=self.fs.client_path(src),
                ftp_path_to=self.fs.client_path(path),
            )
        return result

    def _rename_new(self, src, path):
        """pyftpdlib's RNTO onto a name where nothing is (under a quota).

        Renamed only if nothing is there still (uploads.rename_new): a file
        created meanwhile is measured and held first (AGAIN).
        """
        try:
            renamed = rename_new(src, path)
        except FileExistsError:
            return AGAIN
        except OSError as err:
            self._rnfr = None
            self.respond(f"550 {strerror(err)}.")
            return None
        if not renamed:
            return super().ftp_RNTO(path)
        self._rnfr = None
        self.respond("250 Renaming ok.")
        return (src, path)

    def ftp_MLSD(self, path):
        # pyftpdlib answers 501 for any path that is not a directory. RFC 3659
        # means a file by it; a path that is not there is a 550, as for LIST,
        # and clients (rclone) take a 501 for a fatal error where 550 means
        # "create it first". stat follows links: a dangling one is missing too.
        try:
            self.fs.stat(path)
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {quoted(self.fs.sent_path(path))}: {strerror(err)}.")
            return None
        return super().ftp_MLSD(path)

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
        email = getattr(self.policy, "anonymous_email", None)
        if email is None:
            self.send_signal(signals.ftp_login, username=username)
        else:
            # Anonymous FTP's "password" is the client's e-mail address by
            # convention, and no secret: it is recorded.
            self.send_signal(
                signals.ftp_login, username=username, anonymous_email=email
            )

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
        if self._reserved_name(file):
            self._restart_position = 0
            return None
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
        quota = self.quota
        if (
            quota is not None
            and not upload.existed
            and not quota.need_file(self, cmd, file, file, restart=offset)
        ):
            return  # refused, or run again once the quota has room
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
        # Under a quota, a file written in place is locked (uploads.py).
        upload.lock = quota is not None
        try:
            upload.open()
        except FileBusy:
            audit.end_upload(upload.journal_uid)
            quota.lost(upload)
            self.respond(busy_reply(self.fs.sent_path(file)))
            return
        except (OSError, FilesystemError) as exc:
            audit.end_upload(upload.journal_uid)
            self.respond(f"550 {strerror(exc)}.")
            return
        if quota is not None:
            quota.start(self, upload)
        if self.data_channel is not None:
            self.respond("125 Data connection already open. Transfer starting.")
            self.data_channel.file_obj = upload
            self.data_channel.enable_receiving(self._current_type, cmd)
        else:
            self.respond("150 File status okay. About to open data connection.")
            self._drop_queued_upload()
            self._in_dtp_queue = (upload, cmd)
        return file

    # --- quotas and the maximum upload size (ftpserver_core.quotas)

    # The session's quotas.SessionQuota (None: no quota and no size limit,
    # the only cost the hot path pays for them).
    quota = None

    def handle_auth_success(self, home, password, msg_login):
        tracker = getattr(self.server, "quotas", None)
        if tracker is not None and self.policy is not None:
            if self.quota is not None:
                self.quota.ended()
            self.quota = tracker.session(self.policy)
        super().handle_auth_success(home, password, msg_login)

    def _drop_queued_upload(self):
        """Discard an upload whose data connection never came."""
        queued = self._in_dtp_queue
        if queued is not None and isinstance(queued[0], Upload):
            self._in_dtp_queue = None
            queued[0].close()

    def hold_input(self):
        """Hold the commands that follow until resume_held_input() (as a login does)."""
        self._held_input, self.ac_in_buffer = self.ac_in_buffer, b""
        self._awaiting_verdict = True

    def resume_held_input(self):
        """Run the commands held meanwhile."""
        self._awaiting_verdict = False
        self._resume_input()

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

        # Implicit FTPS (a listener with tls=implicit, "port 990"): TLS
        # from the first byte, the 220 inside it. pyftpdlib has only the
        # explicit kind (AUTH TLS; its issue #160).
        implicit_tls = False

        def handle(self):
            if not self.implicit_tls:
                super().handle()
            elif self._ssl_established:
                self._greet()  # admitted at accept
            else:
                self._start_implicit_tls()

        def _start_implicit_tls(self):
            # Bans and the per-address limit before the handshake: a banned
            # address costs no private-key operation, and connections that
            # never finish it count against their address. Nothing can be
            # said in plain text: a refusal closes without a reply.
            self._silent = True
            try:
                admitted = self._admit()
            finally:
                self._silent = False
            if not admitted:
                self.close()
                return
            self.secure_connection(self.ssl_context)
            if self._ssl_accepting and self.login_grace:
                # A client that never ends its handshake holds a
                # connection slot: as long as one that never logs in.
                self._grace = self.ioloop.call_later(
                    self.login_grace,
                    self._handshake_expired,
                    _errback=self.handle_error,
                )

        _silent = False

        def push(self, data):
            if self._silent:
                return  # before the implicit TLS handshake: not a byte
            super().push(data)

        def _handshake_expired(self):
            # No reply: nothing can be said to a client mid-handshake.
            self._grace = None
            if self._closed or self._ssl_established:
                return
            self._refused = self._defender_told = True
            if self.defender is not None:
                self.defender.offend(self.remote_ip, "no_login")
            self.send_signal(signals.ftp_connection_refused, reason="login_timeout")
            self.close()

        def handle_ssl_established(self):
            super().handle_ssl_established()
            if self.implicit_tls and not self._greeted:
                self._greeted = True
                self._grace_cancel()
                self.handle()

        _greeted = False

        def _grace_cancel(self):
            grace, self._grace = self._grace, None
            if grace is not None and not grace.cancelled:
                grace.cancel()

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

    class DjangoTLS_FTPHandler(DjangoFTPHandler):  # noqa: N801
        """Stands in for the FTPS handler without pyOpenSSL.

        A project may subclass it whether TLS is on or not; only serving with
        it fails (the checks refuse it as a handler, E006, and a certificate,
        E004), with the sentence that says what to install.
        """

        missing_extra = tls.MISSING
        implicit_tls = False

        def __init__(self, *args, **kwargs):
            raise ImproperlyConfigured(tls.MISSING)
