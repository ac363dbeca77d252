"""Build a configured FTP server: its own IO loop, handler class and workers."""

import collections
import socket
import sys
import threading
import time
import weakref

from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer as BaseFTPServer

from . import audit, database, tls
from .authorizers import DjangoAuthorizer
from .bandwidth import Bandwidth
from .defender import Defender
from .dtp import DataChannelMixin
from .quotas import QuotaTracker
from .state import SharedState
from .workers import WorkerPool

# Seconds a thread may hold the GIL while another waits for it (see serve()).
SWITCH_INTERVAL = 0.0005


def build_data_channel_class(base, options, ssl_context=None):
    """Return a subclass of the handler's data channel with this server's options.

    ``ssl_context``: the control connection's, when data connections must
    resume its sessions (FTPSERVER_TLS_REQUIRE_SESSION_REUSE).
    """
    stall = options.data_timeout
    attrs = {
        "__module__": base.__module__,
        "stall_timeout": stall,
        # How often progress is checked: a stall is seen within 1.25x.
        "timeout": max(0.5, stall / 4) if stall else 0,
    }
    if options.tls:
        attrs["data_ssl_context"] = ssl_context or tls.make_data_context(
            options.certfile, options.keyfile, options.tls_min_version
        )
        attrs["require_session_reuse"] = options.tls_require_session_reuse
    return type(base.__name__, (base,), attrs)


def build_handler_class(options, worker_pool, digest_pool=None, state=None):
    """Return a fresh subclass of the configured handler carrying ``options``."""
    base = options.handler
    attrs = {
        "__module__": base.__module__,
        "authorizer": DjangoAuthorizer(
            state=state, max_per_address=options.max_sessions_per_address
        ),
        "worker_pool": worker_pool,
        "digest_pool": digest_pool or worker_pool,
        "signal_sender": base,
        "timeout": options.timeout,
        "banner": options.banner,
        "passive_ports": options.passive_ports,
        "passive_fallback": options.passive_ports_fallback,
        "masquerade_address": options.masquerade_address,
        "auth_failed_timeout": options.auth_failed_delay,
        "max_login_attempts": options.max_login_attempts,
        "use_sendfile": options.use_sendfile and not options.tls,
        "permit_foreign_addresses": options.permit_foreign_addresses,
        "upload_mode": options.upload_mode,
        "digests": options.digests,
        "login_timeout": options.login_timeout,
        "login_grace": options.login_grace,
        "logins_per_address": options.logins_per_address,
    }
    shared_context = None
    if options.tls and options.tls_require_session_reuse:
        # One context, so one session cache, for both channels.
        shared_context = tls.make_session_reuse_context(
            options.certfile, options.keyfile
        )
    if hasattr(base.dtp_handler, "stall_timeout"):
        attrs["dtp_handler"] = build_data_channel_class(
            base.dtp_handler, options, shared_context
        )
    if options.tls:
        attrs.update(
            certfile=options.certfile,
            keyfile=options.keyfile,
            ssl_context=shared_context
            or tls.make_context(
                options.certfile, options.keyfile, options.tls_min_version
            ),
            tls_control_required=options.tls_required,
            tls_data_required=options.tls_required,
        )
    return type(base.__name__, (base,), attrs)


class FTPServer(BaseFTPServer):
    """A pyftpdlib server that stops cleanly from any thread."""

    def __init__(self, options, sock=None, backlog=100):
        """Listen on ``options.host:port``, or on ``sock`` (prefork workers)."""
        self.options = options
        self._stop_requested = None
        database.apply_timeouts(options.database_timeout)
        ioloop = IOLoop.factory()
        self.worker_pool = WorkerPool(
            ioloop, options.auth_workers, max_pending=options.login_queue
        )
        # HASH reads whole files: its own thread, so that no number of HASH
        # commands can hold the login threads or fill the login queue.
        self.digest_pool = WorkerPool(ioloop, 1, name="hash")
        self.stopped = threading.Event()
        self.state = SharedState(self)
        # Quota leases and usage changes, written in the state thread.
        self.quotas = QuotaTracker(self)
        self.state.add_participant(self.quotas)
        # Per-account rate limits, split between processes through the state.
        self.bandwidth = Bandwidth(self)
        self.state.add_participant(self.bandwidth)
        handler = build_handler_class(
            options, self.worker_pool, self.digest_pool, self.state
        )
        self.signal_sender = handler.signal_sender
        # Repeat logins answered from memory, kept valid by the state thread.
        self.state.add_participant(handler.authorizer.logins)
        # Logins in progress per address key (ftp_PASS admits, the verdict
        # or the session's end releases).
        self.logins_in_flight = collections.Counter()
        self.defender = Defender(self)
        try:
            super().__init__(
                sock or (options.host, options.port),
                handler,
                ioloop=ioloop,
                backlog=backlog,
            )
        except BaseException:
            self.worker_pool.shutdown()
            self.digest_pool.shutdown()
            ioloop.close()
            raise
        self._bound = self.socket.getsockname()[:2]
        self.sessions = weakref.WeakSet()
        # Instance attributes: pyftpdlib's class defaults stay untouched.
        self.max_cons = options.max_connections or 0
        # The per-address limit is the handler's (an IPv6 client counts by
        # its /64); pyftpdlib's own, by exact address, stays off.
        self.max_cons_per_ip = 0
        self.max_sessions_per_address = options.max_connections_per_ip or 0
        self.sessions_per_address = collections.Counter()

    @property
    def host(self):
        """The address the server listens on (kept after it stops)."""
        return self._bound[0]

    @property
    def port(self):
        """The port the server listens on (the real one when 0 was asked)."""
        return self._bound[1]

    def call_on_loop(self, callback, *args):
        """Run ``callback(*args)`` on the IO loop (callable from any thread)."""
        self.worker_pool.call_soon(callback, *args)

    def _map_len(self):
        # pyftpdlib compares the sockets of the loop with max_cons, which
        # leaves out every session waiting for a login verdict or sitting in
        # the failed-login delay (off the loop meanwhile): 300 clients with
        # wrong passwords all got in past a limit of 50. ip_map holds every
        # session from accept to close.
        return len(self.ip_map)

    def serve(self):
        """Run the IO loop until stop() is called; then close every session."""
        # Recovers the audit journal a previous process left, even before
        # (or without) any recorded event.
        audit.writer.start()
        self.defender.start()
        self.state.start()
        # The loop gives up the GIL at every poll and then waits for it while
        # the audit writer or a login worker runs Python: by default up to
        # 5 ms, several times per FTP command. A shorter switch interval
        # gives it back sooner (small-file STOR: 0.86x -> 0.90x bare).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        try:
            self.ioloop.loop(timeout=None, blocking=True)
        finally:
            self._shutdown()

    def stop(self):
        """Ask the loop to stop (safe from any thread and from signal handlers).

        The stop, flush of the audit records included, takes at most
        ``options.shutdown_timeout`` seconds from here.
        """
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
        self.worker_pool.call_soon(self._close_sessions)

    def shutdown_time_left(self):
        """Seconds left of the shutdown timeout since stop() (all of it before)."""
        timeout = self.options.shutdown_timeout
        if self._stop_requested is None:
            return timeout
        return max(0.0, timeout - (time.monotonic() - self._stop_requested))

    def _close_sessions(self):
        # Disconnect every client so pyftpdlib sends its incomplete-transfer
        # and disconnect callbacks, run them, then let the loop end.
        if not self._closed:
            self.close()
        # Sessions waiting on a worker thread are off the loop's map, and so
        # are data channels held by a bandwidth limit or a quota grant.
        # (A closed session has no data_channel attribute left.)
        held = [getattr(s, "data_channel", None) for s in self.sessions]
        held = [channel for channel in held if channel is not None]
        channels = list(
            dict.fromkeys([*self.ioloop.socket_map.values(), *held, *self.sessions])
        )
        for channel in channels:
            if isinstance(channel, DataChannelMixin) and channel.failure is None:
                channel.failure = "server_stopped"
        for channel in channels:
            if channel is not self.worker_pool.waker:
                channel.close()
        self.ioloop.sched.poll()
        self.worker_pool.waker.close()

    def _shutdown(self):
        if self.stopped.is_set():
            return
        # Login threads stuck on a hung database are not waited for, nor a
        # HASH of a large file.
        self.worker_pool.shutdown(timeout=1.0)
        self.digest_pool.shutdown(timeout=0.1)
        self.ioloop.sched.poll()
        self.ioloop.close()
        # The sessions' ends and the quota usage are written, the process
        # unregistered (its sessions with it); what misses the timeout
        # expires with the heartbeat.
        self.state.stop(timeout=min(2.0, self.shutdown_time_left()))
        # Every event of this server is in the journal; the database gets
        # what it takes within the shutdown timeout.
        audit.writer.flush(timeout=self.shutdown_time_left())
        self.stopped.set()


def build_server(options, sock=None):
    """Return an FTPServer bound to ``options.host:options.port`` (or ``sock``)."""
    return FTPServer(options, sock=sock)


def bind_socket(options, backlog=100):
    """Return a listening socket on ``options.host:options.port`` (for prefork)."""
    infos = socket.getaddrinfo(
        options.host,
        options.port,
        socket.AF_UNSPEC,
        socket.SOCK_STREAM,
        0,
        socket.AI_PASSIVE,
    )
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
