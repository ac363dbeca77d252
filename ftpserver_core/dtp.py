"""Data channels that store every byte the client sent, or say why not.

pyftpdlib 2.2's ``DTPHandler`` answers ``226`` to an upload that ended with a
connection reset, loses the reply order when a write fails (``426 None``,
then a late reply), lets a stalled transfer hold its connection for 300 s or
more, and checks nothing about the file's final close. These classes replace
its read path and its ``close()``; they lean on its private state
(``_resp``, ``_idler``, ``_initialized``, ``cmd_channel._on_dtp_close``,
the SSL mixin's ``_ssl_*`` flags), which is why pyftpdlib is pinned below 2.3.

An upload counts as complete only when the data connection ended cleanly (a
TCP FIN or a TLS close_notify) and every byte received was written and the
file put in place; anything else is recorded incomplete with a reason from
``signals.TRANSFER_FAILURE_REASONS``.
"""

import errno
import hashlib
import logging
import socket

from pyftpdlib.exceptions import _RetryError
from pyftpdlib.handlers.ftp.data import DTPHandler
from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
from pyftpdlib.ioloop import _ERRNOS_DISCONNECTED, _ERRNOS_RETRY, AsyncChat, timer

from . import digests, proxyprotocol, tls

logger = logging.getLogger("pyftpdlib")

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}

# How many extra reads one read event may do to empty what OpenSSL holds.
_TLS_DRAIN_READS = 64
# Linux only: an immediate ACK (see TLSDataChannel.recv).
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

# The reply to a transfer whose PROT P data connection did not resume the
# control connection's TLS session (FTPSERVER_TLS_REQUIRE_SESSION_REUSE).
REUSE_REQUIRED = "522 Data connection must reuse the control connection's TLS session."


def write_failure(exc):
    """Return (reason, reply) for an error writing an upload."""
    why = exc.strerror or str(exc)
    if exc.errno == errno.EDQUOT:
        return "disk_full", f"552 Disk quota exceeded ({why}); transfer aborted."
    if exc.errno == errno.ENOSPC:
        return (
            "disk_full",
            f"452 Insufficient storage space: {why}; transfer aborted.",
        )
    return "write_error", f"451 Error writing the file: {why}; transfer aborted."


class DataChannelMixin:
    """The read path, stall timeout and close of a data channel."""

    # Seconds without progress before the transfer is aborted (0: never).
    # pyftpdlib's ``timeout`` is how often that is checked.
    stall_timeout = 120.0

    def __init__(self, sock, cmd_channel):
        self.failure = None
        self._progress = (0, timer())
        self._digest = None
        self._content = None
        super().__init__(sock, cmd_channel)

    # --- reading

    def recv(self, buffer_size):
        try:
            data = self.socket.recv(buffer_size)
        except OSError as err:
            if err.errno in _ERRNOS_RETRY:
                raise _RetryError from err
            if err.errno in _ERRNOS_DISCONNECTED:
                self.connection_lost()
                return b""
            raise
        if not data:
            self.end_of_data()
        return data

    def handle_read(self):
        try:
            chunk = self.recv(self.ac_in_buffer_size)
        except _RetryError:
            return
        except OSError:
            self.connection_lost()
            return
        if chunk and not self._closed:
            self.store(chunk)
            if self._throttle is not None and not self._closed:
                self._throttled(len(chunk))

    def handle_read_event(self):
        # Through the attribute: the TLS channel's handle_read drains OpenSSL.
        self.handle_read()

    def store(self, chunk):
        """Write a received chunk; abort the transfer if the write fails."""
        self.tot_bytes_received += len(chunk)
        if self._data_wrapper is not None:
            chunk = self._data_wrapper(chunk)
        quota = getattr(self.file_obj, "quota", None)
        if quota is not None and not quota.admit(self, chunk):
            return  # held until room is granted (reading paused), or refused
        self.write_chunk(chunk)

    def write_chunk(self, chunk):
        """Write ``chunk`` to the upload; abort the transfer if that fails."""
        try:
            self.file_obj.write(chunk)
        except OSError as exc:
            self.abort(*write_failure(exc))

    def end_of_data(self):
        """The client closed the connection cleanly."""
        if self.receive:
            self.transfer_finished = True
        self.handle_close()

    def connection_lost(self):
        """The connection was reset or broke: the transfer is incomplete."""
        if self._closed:
            return
        if not self._initialized:
            self.close()
            return
        self.abort(
            "connection_lost",
            f"426 Data connection lost after {self.get_transmitted_bytes()} bytes; "
            "transfer aborted.",
        )

    # --- sending: hash what passes through

    def push_with_producer(self, producer):
        if (
            self.cmd_channel.digests
            and self.file_obj is not None
            and getattr(producer, "file", None) is not None
            and producer.type == "i"
            and producer.file.tell() == 0
        ):
            digest = self._digest = hashlib.sha256()
            # What is hashed is the content as it was opened.
            self._content = digests.of_file(producer.file)
            more = producer.more

            def hashed_more():
                data = more()
                digest.update(data)
                return data

            producer.more = hashed_more
        if self.file_obj is not None:
            self._start_throttle()  # before sendfile's first call below
        super().push_with_producer(producer)

    def initiate_sendfile(self):
        # The kernel sends the file: no digest from this transfer.
        self._digest = None
        if self._throttle is None:
            super().initiate_sendfile()
            return
        # Throttled like send(): each call sends at most ac_out_buffer_size
        # (the bucket's chunk), then the channel pays for what left.
        before = self.tot_bytes_sent
        super().initiate_sendfile()
        if self.tot_bytes_sent > before and not self._closed:
            self._throttled(self.tot_bytes_sent - before)

    def send(self, data):
        sent = super().send(data)
        if self._throttle is not None and sent and not self._closed:
            self._throttled(sent)
        return sent

    # --- bandwidth limits (ftpserver_core.bandwidth)

    # The bucket a limited transfer draws from (None: unlimited, the hot
    # path's only cost), and the timer that resumes a held channel.
    _throttle = None
    _throttle_timer = None

    def enable_receiving(self, type, cmd):
        super().enable_receiving(type, cmd)
        self._start_throttle()

    def _start_throttle(self):
        """Draw from the account's bucket if its transfers in this direction are limited."""
        if self._throttle is not None:
            return
        bandwidth = getattr(self.cmd_channel.server, "bandwidth", None)
        if bandwidth is None:
            return
        bucket = bandwidth.limit_for(self.cmd_channel, self.receive)
        if bucket is None:
            return
        self._throttle = bucket
        # Instance attributes: reads, sends and sendfile() move one chunk.
        self.ac_in_buffer_size = self.ac_out_buffer_size = bucket.chunk_size()

    def _throttled(self, nbytes):
        """Pay for ``nbytes`` moved; hold the channel while the bucket is in debt."""
        delay = self._throttle.spend(nbytes)
        if delay <= 0:
            return
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
        else:
            # As pyftpdlib's ThrottledDTPHandler: off the loop, no events.
            self.del_channel()
        self._throttle_timer = self.ioloop.call_later(
            delay, self._resume, _errback=self.handle_error
        )
        # A held transfer is not stalled: the stall clock starts again when
        # it resumes (see handle_timeout).
        self._progress = (self.get_transmitted_bytes(), timer() + delay)

    def _resume(self):
        self._throttle_timer = None
        if self._closed:
            return
        quota = getattr(self.file_obj, "quota", None)
        if quota is not None and quota.held:
            return  # waiting for quota room too: the quota's resume() goes on
        self.add_channel(events=self.ioloop.READ if self.receive else self.ioloop.WRITE)
        pending = getattr(self.socket, "pending", None)
        if self.receive and pending is not None and pending():
            # TLS: OpenSSL holds decrypted bytes, which raise no read event.
            self.handle_read_event()

    def _end_throttle(self):
        """Give back the transfer's share; put a held channel back on the loop."""
        held, self._throttle_timer = self._throttle_timer, None
        if held is not None:
            held.cancel()
            if not self._closed:
                # Its close may need events (a TLS shutdown waits for them).
                self.add_channel(
                    events=self.ioloop.READ if self.receive else self.ioloop.WRITE
                )
        bucket, self._throttle = self._throttle, None
        if bucket is not None:
            bucket.owner.release(bucket)

    def modify_ioloop_events(self, events, logdebug=False):
        if self._throttle_timer is not None:
            # Held: pyftpdlib (the SSL mixin after a read or send) would put
            # the channel back on the loop; _resume() does, in time.
            return
        super().modify_ioloop_events(events, logdebug)

    # --- ending

    def handle_timeout(self):
        transmitted = self.get_transmitted_bytes()
        now = timer()
        if transmitted != self._progress[0]:
            self._progress = (transmitted, now)
            return
        if not self.stall_timeout or now - self._progress[1] < self.stall_timeout:
            return
        if not self._initialized:
            # A connection no command uses yet: no reply is due.
            self.close()
            return
        self.abort(
            "data_timeout",
            f"426 Data connection timed out: no data for {self.stall_timeout:g} "
            "seconds; transfer aborted.",
        )

    def handle_error(self):
        # A programming error or an unexpected socket error: log it, and end
        # the transfer as incomplete with an answer in order.
        self.log_exception(self)
        self.abort("connection_lost", "426 Internal error; transfer aborted.")

    def handle_close(self):
        if self._closed:
            return
        if not self.receive:
            self.transfer_finished = not self.producer_fifo
        if self.transfer_finished:
            self._resp = ("226 Transfer complete.", logger.debug)
        else:
            if self.failure is None:
                self.failure = "connection_lost" if self._initialized else None
            self._resp = (
                f"426 Transfer aborted; {self.get_transmitted_bytes()} bytes "
                "transmitted.",
                logger.debug,
            )
        self.close()

    def abort(self, reason, reply):
        """End the transfer as incomplete: ``reply`` is sent, ``reason`` recorded."""
        if self._closed:
            return
        self.failure = reason
        self.transfer_finished = False
        self._resp = (reply, logger.info)
        self.close()

    def close(self):
        """Close the connection, settle the file, then reply and record (in order)."""
        if self._closed:
            return
        AsyncChat.close(self)
        cmd = self.cmd_channel
        with cmd.reply_batch():
            file = self.file_obj
            if file is not None:
                self._settle(file)
            if self._resp:
                cmd.respond(self._resp[0], logfun=self._resp[1])
            if self._idler is not None and not self._idler.cancelled:
                self._idler.cancel()
            if file is not None:
                self._record(cmd, file)
            cmd._on_dtp_close()

    def _settle(self, file):
        """Put a complete upload in place, or discard it; close the file."""
        if not self.receive:
            if self._digest is not None and (
                self._content is None or digests.of_file(file) != self._content
            ):
                self._digest = None  # the file changed while it was sent
            if not file.closed:
                file.close()
            if self._digest is not None and self.transfer_finished:
                digests.remember(self._content, self._digest.hexdigest())
            return
        complete = self.transfer_finished and self.failure is None
        try:
            if not complete:
                if self.failure is None:
                    self.failure = "aborted"
                getattr(file, "abort", file.close)()
            else:
                getattr(file, "commit", file.close)()
        except OSError as exc:
            if complete:
                self.failure, reply = write_failure(exc)
                self.transfer_finished = False
                self._resp = (reply, logger.info)
            else:
                logger.warning("Could not discard the upload %s: %s", file.name, exc)

    def _record(self, cmd, file):
        if self.receive:
            size = getattr(file, "bytes_written", self.tot_bytes_received)
            digest = getattr(file, "sha256", "") if self.transfer_finished else ""
        else:
            size = self.tot_bytes_sent
            digest = self._digest.hexdigest() if self._digest is not None else ""
            if not self.transfer_finished and self.failure is None:
                self.failure = "aborted"
        elapsed = round(self.get_elapsed_time(), 3)
        cmd.transfer_ended(
            file,
            receive=self.receive,
            cmd=self.cmd,
            completed=self.transfer_finished,
            size=size,
            duration=elapsed,
            reason=None if self.transfer_finished else self.failure,
            sha256=digest,
        )


class DataChannel(DataChannelMixin, DTPHandler):
    """Plain-FTP data channel."""

    def close(self):
        # The transfer's bandwidth share is given back, a held channel
        # released, before the close settles and replies.
        self._end_throttle()
        super().close()


class PassivePortsExhausted(Exception):
    """Every port of the configured passive range is in use."""


class PassiveListener(PassiveDTP):
    """A passive data listener that stays in the configured port range.

    pyftpdlib falls back to a port the kernel picks when the range is full:
    outside the range a firewall opens, so the client hangs instead of being
    told. ``passive_fallback`` on the handler keeps that behaviour.
    """

    def bind(self, addr):
        # pyftpdlib binds port 0 in the range's case only when every port of
        # it was refused (it binds 0 as well when no range is configured).
        handler = self.cmd_channel
        if (
            addr[1] == 0
            and handler.passive_ports is not None
            and not getattr(handler, "passive_fallback", False)
        ):
            self.close()
            raise PassivePortsExhausted
        super().bind(addr)

    def handle_accepted(self, sock, addr):
        """Take the first connection from the session's address, then close.

        pyftpdlib closes the listener at the first connection it keeps
        (whoever connects first from the session's address gets the transfer:
        plain FTP cannot tell two clients behind one address apart, see
        FTPSERVER_TLS_REQUIRE_SESSION_REUSE for FTPS). A connection from
        another address it answers with an unsolicited "425 Rejected data
        connection" on the control channel, which the client then reads as
        the reply to its next command (and every reply after it is off by
        one): anyone able to reach the passive ports could break any
        session. Here that connection is closed and logged, no reply, and the
        listener goes on waiting for the session's own.
        """
        cmd = self.cmd_channel
        listener = getattr(cmd, "listener", None)  # None: a pyftpdlib handler
        mode = listener.proxy if listener is not None else "off"
        if mode != "off":
            # Behind the load balancer the data connection comes from it
            # too, with the client's address in its PROXY header: the
            # address check below needs the client's.
            if proxyprotocol.trusted(addr[0], listener.trusted):
                proxyprotocol.HeaderReader(
                    sock,
                    self.ioloop,
                    cmd.proxy_timeout,
                    lambda s, source: self._accept_proxied(s, source or addr),
                    lambda s, why: self._refuse_proxied(s, addr, why),
                )
                return
            if mode == "required":
                self._refuse_proxied(
                    sock, addr, "not a trusted proxy of the session's listener"
                )
                return
        self._accept_data(sock, addr)

    def _accept_proxied(self, sock, addr):
        if self._closed:  # taken by another connection, or timed out
            sock.close()
            return
        self._accept_data(sock, addr)

    def _refuse_proxied(self, sock, addr, why):
        sock.close()
        self.cmd_channel.log(
            f"Refused data connection from {addr[0]}:{addr[1]}: {why}.",
            logfun=logger.warning,
        )

    def _accept_data(self, sock, addr):
        cmd = self.cmd_channel
        if (
            cmd.connected
            and addr[0] != cmd.remote_ip
            and not cmd.permit_foreign_addresses
        ):
            try:
                sock.close()
            except OSError:
                pass
            cmd.log(
                f"Refused data connection from foreign address {addr[0]}:{addr[1]} "
                f"(the session's address is {cmd.remote_ip}).",
                logfun=logger.warning,
            )
            return
        super().handle_accepted(sock, addr)


if tls.available:
    from OpenSSL import SSL
    from pyftpdlib.handlers.ftps.data import TLS_DTPHandler

    def _unexpected_eof(exc):
        return "unexpected eof" in str(exc).lower()

    class TLSDataChannel(TLS_DTPHandler, DataChannel):
        """FTPS data channel: TLS ends like TCP, and nothing OpenSSL holds is lost.

        The MRO puts pyftpdlib's SSL mixin before :class:`DataChannel`, so its
        handshake and shutdown run and then hand over to our read and close.
        """

        # Set per server (tls.make_data_context): no session tickets; with
        # require_session_reuse, the control connection's context.
        data_ssl_context = None
        # Set per server (FTPSERVER_TLS_REQUIRE_SESSION_REUSE).
        require_session_reuse = False

        def secure_connection(self, ssl_context):
            super().secure_connection(self.data_ssl_context or ssl_context)

        def _handshake_pending(self):
            return self._ssl_requested and not self._ssl_established

        def send(self, data):
            # pyftpdlib pushes a waiting download (or a listing) as soon as
            # the connection is accepted, and OpenSSL's SSL_write() finishes
            # a handshake in progress by itself and sends: 16 KiB went out
            # before handle_ssl_established() could refuse the connection.
            # Nothing is sent before the handshake is done and checked; the
            # write events that follow run it (SSL mixin), then send.
            if self._handshake_pending():
                return 0
            return super().send(data)

        def handle_ssl_established(self):
            # Called by pyftpdlib's SSL mixin once the handshake is done,
            # before a byte of the transfer is sent or stored (see send()).
            if self.require_session_reuse and not tls.resumes_session(
                self.socket, self.cmd_channel.socket
            ):
                if tls.session_reused(self.socket):
                    why = "it resumed another TLS session than the control connection's"
                else:
                    why = (
                        "it did not resume the control connection's TLS session "
                        "(a client that does not reuse sessions, or another client)"
                    )
                self.refuse(REUSE_REQUIRED, why)
                return
            super().handle_ssl_established()

        def handle_failed_ssl_handshake(self):
            # pyftpdlib answers "522 SSL handshake failed." at once, even when
            # no transfer command waits for a reply (anyone who reaches the
            # passive port first could put that in a session's replies).
            self.refuse("522 SSL handshake failed.", "its TLS handshake failed")

        def refuse(self, reply, why):
            """Close this data connection; its transfer is answered ``reply``.

            With a transfer command waiting, that command's final reply; else
            the session's next transfer command gets it (see
            ``refuse_next_transfer`` of the control handler) instead of
            waiting for a data connection that cannot come: the passive
            listener closed at this connection.
            """
            cmd = self.cmd_channel
            peer = getattr(self, "addr", None)
            where = f" from {peer[0]}:{peer[1]}" if peer else ""
            cmd.log(
                f"Refused TLS data connection{where}: {why}.", logfun=logger.warning
            )
            if self._initialized:
                self.abort("aborted", reply)
                return
            refuse_next = getattr(cmd, "refuse_next_transfer", None)
            if refuse_next is not None:
                refuse_next(reply)
            else:
                cmd.respond(reply)  # a handler of pyftpdlib's: as it does
            self.close()

        def recv(self, buffer_size):
            if self._handshake_pending():
                # As send(): SSL_read() would finish the handshake itself,
                # and store what arrives before handle_ssl_established().
                raise _RetryError
            try:
                data = self.socket.recv(buffer_size)
            except SSL.WantReadError as err:
                self._ssl_want_read = True
                raise _RetryError from err
            except SSL.WantWriteError as err:
                self._ssl_want_write = True
                raise _RetryError from err
            except SSL.ZeroReturnError:
                self.end_of_data()  # close_notify
                return b""
            except SSL.SysCallError as err:
                errnum, errstr = err.args
                if errnum in _ERRNOS_DISCONNECTED:
                    self.connection_lost()
                elif errnum == -1 or errstr == "Unexpected EOF":
                    # A TCP FIN without close_notify: how most FTPS clients end
                    # an upload, as in plain FTP.
                    self.end_of_data()
                else:
                    raise
                return b""
            except SSL.Error as err:
                if not _unexpected_eof(err):
                    raise
                self.end_of_data()
                return b""
            if not data:
                self.end_of_data()
            elif _QUICKACK is not None:
                # Acknowledge at once: a client ends an upload with a TLS
                # close_notify that its Nagle algorithm holds until this
                # record is acknowledged, and the kernel delays that ACK
                # 40 ms when the server has nothing to send (a TLS 1.2 data
                # connection; TLS 1.3's session tickets hid it). Every
                # small FTPS upload took 41 ms longer: 0.04x bare pyftpdlib.
                try:
                    self.socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                except OSError:
                    pass
            return data

        def handle_read(self):
            super().handle_read()
            # OpenSSL may hold decrypted bytes past the record it returned
            # (pending()); they raise no socket event, so read them now
            # rather than wait for the next one. (The truncated FTPS uploads
            # came from TLS 1.3 tickets: see tls.make_data_context.)
            if not self._ssl_established:
                return  # PROT C: a plain socket
            for _ in range(_TLS_DRAIN_READS):
                if (
                    self._closed
                    or not self.receive
                    or self._throttle_timer is not None  # held: _resume() reads on
                    or not self.socket.pending()
                ):
                    return
                super().handle_read()
            if (
                not self._closed
                and self._throttle_timer is None
                and self.socket.pending()
            ):
                self.ioloop.call_later(0, self.handle_read_event)

        def close(self):
            # Before the SSL mixin's shutdown, which needs the channel on the
            # loop (a held one is off it).
            self._end_throttle()
            super().close()

        def handle_error(self):
            # Not pyftpdlib's SSL handle_error: it closes without a reply.
            self._error = True  # no TLS shutdown on a broken connection
            DataChannel.handle_error(self)

        def handle_close(self):
            # pyftpdlib's SSL mixin routes hang-ups here too: read what is left.
            if (
                not self._closed
                and self.receive
                and not self.transfer_finished
                and self.failure is None
                and self._ssl_established
            ):
                try:
                    self.handle_read()
                except Exception:  # noqa: S110  (the close below says what happened)
                    pass
                if self._closed:
                    return
            super().handle_close()
