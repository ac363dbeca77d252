"""Prefork: N worker processes accepting on one listening socket.

The parent binds the socket, closes its database connections and forks.
Each worker builds its own server after the fork: its own IO loop, worker
threads, database connections and audit writer. Passive ports are shared
through the kernel: a port one worker holds fails to bind in another, which
then tries the next one of the range. The parent restarts a worker that dies
and, on SIGTERM or Ctrl-C, stops every worker and waits for them.

An account's maximum sessions, the per-address session limit, quotas,
bandwidth limits and bans hold across the workers (the shared state,
``ftpserver_core.state``); the connection limits at accept and the
credential cache are per worker.

With ``--user`` the supervisor drops privileges before it forks (the
``ftpserver`` command has done so already), so no process stays root: a
worker it restarts never was. Each worker checks the drop again before its
loop serves anyone.
"""

import logging
import os
import signal
import time

from django.db import connections

from . import metrics, privileges
from .servers import build_server

logger = logging.getLogger(__name__)

# A worker dying more often than this is not restarted again.
MAX_RESTARTS = 10
RESTART_WINDOW = 60.0


class Supervisor:
    """Fork and watch the worker processes of one server."""

    def __init__(self, options, socks, workers):
        """``socks``: the listening socket of each of ``options.listeners``."""
        if not isinstance(socks, list | tuple):
            socks = [socks]
        self.options = options
        self.sockets = list(socks)
        self.socket = self.sockets[0]
        self.workers = workers
        self.host, self.port = self.socket.getsockname()[:2]
        self.children = {}
        self._stopping = False
        self._stop_requested = None
        self._restarts = []

    def shutdown_time_left(self):
        """Seconds left of the shutdown timeout since stop() (all of it before)."""
        timeout = self.options.shutdown_timeout
        if self._stop_requested is None:
            return timeout
        return max(0.0, timeout - (time.monotonic() - self._stop_requested))

    def stop(self):
        """Stop every worker (safe from a signal handler)."""
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
        self._stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self):
        """Fork the workers and wait until all of them have stopped."""
        connections.close_all()  # no connection may be shared across a fork
        target = self.options.identity
        if target is not None:
            privileges.ensure(target)
        for index in range(self.workers):
            self._spawn(index)
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG if self._stopping else 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                # Stopping: a worker past the shutdown timeout is killed (its
                # audit records are in its journal, for the next start).
                if not self.shutdown_time_left():
                    for child in list(self.children):
                        try:
                            os.kill(child, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                time.sleep(0.05)
                continue
            index = self.children.pop(pid, None)
            metrics.process_dead(pid)  # its live gauges go (when metrics are on)
            if index is None or self._stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            logger.warning("FTP worker %d (pid %d) exited with %d.", index, pid, code)
            if self._may_restart():
                self._spawn(index)
        for sock in self.sockets:
            sock.close()

    @property
    def addresses(self):
        """[(listener, (host, port))] of every listener, the real ports included."""
        return [
            (listener, sock.getsockname()[:2])
            for listener, sock in zip(
                self.options.every_listener, self.sockets, strict=True
            )
        ]

    def _may_restart(self):
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
        self._restarts.append(now)
        if len(self._restarts) > MAX_RESTARTS:
            logger.error(
                "FTP workers died %d times in %d s; not restarting them.",
                len(self._restarts),
                RESTART_WINDOW,
            )
            return False
        return True

    def _spawn(self, index):
        pid = os.fork()
        if pid:
            self.children[pid] = index
            return
        self.children = {}  # the siblings are the parent's to watch
        code = 1
        try:
            code = self._work(index)
        except BaseException:
            logger.exception("FTP worker %d failed.", index)
        finally:
            # Skip the parent's atexit handlers and finally blocks.
            os._exit(code)

    def _work(self, index):
        parent = os.getppid()
        server = build_server(self.options, socks=self.sockets)

        def watch_parent():
            # A worker whose supervisor was killed (SIGKILL, OOM) must not
            # serve on as an orphan nobody will stop.
            if os.getppid() != parent:
                logger.warning("FTP worker %d lost its supervisor; stopping.", index)
                server.stop()

        server.ioloop.call_every(1.0, watch_parent)
        # pyftpdlib's loop blocks in its first poll until an event arrives;
        # a first wake-up lets it see the timer above.
        server.worker_pool.call_soon(watch_parent)

        def stop(signum, frame):
            server.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self._stopping:
            return 0
        target = self.options.identity
        if target is not None:
            privileges.ensure(target)
        server.serve()
        return 0
