"""Build a configured FTP server: its own IO loop, handler class and workers."""

import collections
import logging
import socket
import sys
import threading
import time
import weakref

from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer as BaseFTPServer

from . import audit, database, metrics, proxyprotocol, tls
from .authorizers import DjangoAuthorizer
from .bandwidth import Bandwidth
from .defender import Defender
from .dtp import DataChannelMixin
from .listeners import ListenerAcceptor
from .quotas import QuotaTracker
from .state import SharedState
from .workers import WorkerPool

logger = logging.getLogger(__name__)

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


# pyftpdlib's class attributes that a project's handler subclass may set
# itself, and the option of each: a setting the project left unset does not
# override the class (its own banner stays).
CLASS_OPTIONS = {
    "banner": "banner",
    "timeout": "timeout",
    "max_login_attempts": "max_login_attempts",
    "auth_failed_timeout": "auth_failed_delay",
    "permit_foreign_addresses": "permit_foreign_addresses",
}


def _project_sets(cls, name):
    """Return True when a class of the project (not pyftpdlib's nor ours) sets ``name``."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return not klass.__module__.startswith(("pyftpdlib.", "ftpserver_core."))
    return False


def build_handler_class(
    options, worker_pool, digest_pool=None, state=None, listener=None, authorizer=None
):
    """Return a fresh subclass of the configured handler carrying ``options``.

    ``listener``: the listener it serves (its TLS and PROXY modes);
    ``authorizer``: one shared by the server's listeners (a new one if None).
    """
    base = options.handler
    listener = listener or options.every_listener[0]
    attrs = {
        "__module__": base.__module__,
        "authorizer": authorizer
        or DjangoAuthorizer(
            state=state, max_per_address=options.max_sessions_per_address
        ),
        "listener": listener,
        "proxy_timeout": options.proxy_timeout,
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
    for attr, field in CLASS_OPTIONS.items():
        if field not in options.explicit and _project_sets(base, attr):
            del attrs[attr]
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
            implicit_tls=listener.tls == "implicit",
        )
    # With metrics on, their command and login timers come first (one class
    # per server: pyftpdlib's and the configured handler stay untouched).
    return type(base.__name__, metrics.handler_bases(base), attrs)


class FTPServer(BaseFTPServer):
    """A pyftpdlib server that stops cleanly from any thread."""

    def __init__(self, options, sock=None, backlog=100, socks=None):
        """Listen on ``options.listeners``, or on ``socks`` (prefork workers).

        ``sock``: the first listener's socket (the others are bound here).
        """
        if socks:
            sock = socks[0]
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
        listeners = options.every_listener
        handler = build_handler_class(
            options, self.worker_pool, self.digest_pool, self.state, listeners[0]
        )
        # One authorizer (one login cache) for every listener.
        self.handlers = [handler] + [
            build_handler_class(
                options,
                self.worker_pool,
                self.digest_pool,
                self.state,
                listener,
                authorizer=handler.authorizer,
            )
            for listener in listeners[1:]
        ]
        self.listener = listeners[0]
        self.proxy_pending = 0  # connections whose PROXY header is awaited
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
            self.acceptors = [self] + [
                ListenerAcceptor(
                    self,
                    listener,
                    handler_class,
                    sock=socks[index + 1] if socks else None,
                    backlog=backlog,
                )
                for index, (listener, handler_class) in enumerate(
                    zip(listeners[1:], self.handlers[1:], strict=True)
                )
            ]
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
    def addresses(self):
        """[(listener, (host, port))] of every listener, the real ports included."""
        return [
            (self.listener, self._bound),
            *((a.listener, a.address) for a in self.acceptors[1:]),
        ]

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
        # session from accept to close; connections awaiting their PROXY
        # header count too.
        return len(self.ip_map) + self.proxy_pending

    # --- accepting (every listener)

    def handle_accepted(self, sock, addr):
        self.accept_connection(self, sock, addr)

    def accept_connection(self, acceptor, sock, addr):
        """Start a session on ``acceptor``'s listener, after its PROXY header."""
        listener = acceptor.listener
        if listener.proxy == "off":
            self._start_session(acceptor.handler, sock, addr)
        elif proxyprotocol.trusted(addr[0], listener.trusted):
            if not self._accept_new_cons():
                # Readers waiting for headers hold descriptors too: no
                # more of them than sessions.
                sock.close()
                return
            self.proxy_pending += 1
            proxyprotocol.HeaderReader(
                sock,
                self.ioloop,
                self.options.proxy_timeout,
                lambda s, source: self._header_read(acceptor, s, addr, source),
                lambda s, why: self._header_failed(acceptor, s, addr, why),
            )
        elif listener.proxy == "optional":
            self._start_session(acceptor.handler, sock, addr)
        else:
            self._start_session(
                acceptor.handler,
                sock,
                addr,
                refusal=f"{addr[0]} is not a trusted proxy of this listener",
            )

    def _header_read(self, acceptor, sock, addr, source):
        self.proxy_pending -= 1
        if source is None:
            self._answer_proxy_check(acceptor, sock)
            return
        self._start_session(acceptor.handler, sock, addr, source=source)

    @staticmethod
    def _answer_proxy_check(acceptor, sock):
        """Greet the proxy's own connection (a health check) and close it.

        A v2 LOCAL (v1 UNKNOWN) header is the balancer speaking for itself,
        every few seconds: as a session it would be audited twice each time,
        scored as a connection without login, and the balancer's address
        banned within a minute (every node then looks down).
        """
        try:
            if acceptor.listener.tls != "implicit":
                sock.send(f"220 {acceptor.handler.banner}\r\n".encode()[:512])
        except OSError:
            pass
        finally:
            sock.close()

    def _header_failed(self, acceptor, sock, addr, why):
        self.proxy_pending -= 1
        self._start_session(acceptor.handler, sock, addr, refusal=why)

    def _start_session(self, handler_class, sock, addr, source=None, refusal=None):
        """pyftpdlib's handle_accepted, with the client's address from a proxy.

        The address must be the client's before anything counts or records
        it: ip_map, the per-address limits, bans, the audit.
        """
        handler = None
        ip = None
        try:
            handler = handler_class(sock, self, ioloop=self.ioloop)
            if not handler.connected:
                return None
            if source is not None:
                handler.proxy_address = addr[:2]
                handler.remote_ip, handler.remote_port = source
            ip = handler.remote_ip
            self.ip_map.append(ip)
            if refusal is not None:
                logger.warning(
                    "PROXY protocol: refused the connection from %s:%s (%s).",
                    addr[0],
                    addr[1],
                    refusal,
                )
                handler.refuse(
                    "proxy_protocol",
                    "421 This port accepts connections through its load balancer only.",
                )
                return None
            if not self._accept_new_cons():
                handler.handle_max_cons()
                return None
            try:
                handler.handle()
            except Exception:
                handler.handle_error()
            else:
                return handler
        except Exception:
            # As pyftpdlib: one bad session must not take the server down.
            logger.exception("Starting a session from %s failed.", addr[0])
            if handler is not None:
                handler.close()
            elif ip is not None and ip in self.ip_map:
                self.ip_map.remove(ip)
        return None

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


def build_server(options, sock=None, socks=None):
    """Return an FTPServer bound to its listeners (or to ``socks``, prefork)."""
    server = FTPServer(options, sock=sock, socks=socks)
    metrics.server_built(server)  # its gauges, when metrics are on
    return server


def bind_sockets(options, backlog=100):
    """Return a listening socket for each listener (for prefork)."""
    socks = []
    try:
        for listener in options.every_listener:
            socks.append(bind_socket(listener.host, listener.port, backlog))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_socket(host, port, backlog=100):
    """Return a listening socket on ``host:port``."""
    infos = socket.getaddrinfo(
        host,
        port,
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
