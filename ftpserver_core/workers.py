"""Run blocking work (password hashing, SQL) off the IO loop.

pyftpdlib's IO loop is single-threaded and not thread-safe. A
:class:`WorkerPool` runs a function in a thread and hands its result back to
the loop through a :class:`LoopWaker`: a socket pair the loop polls, so the
callback runs on the loop thread, between two events, never concurrently
with a handler.
"""

import collections
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)


class LoopWaker:
    """Let other threads schedule callbacks on an IO loop."""

    def __init__(self, ioloop):
        self.ioloop = ioloop
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._fileno = self._reader.fileno()
        self._pending = collections.deque()
        self._closed = False
        ioloop.register(self._fileno, self, ioloop.READ)

    def call_soon(self, callback, *args):
        """Run ``callback(*args)`` on the loop thread (callable from any thread)."""
        if self._closed:
            return
        self._pending.append((callback, args))
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the loop is already due to wake up
        except OSError:
            pass  # closed during shutdown

    # --- the IO loop's side

    def readable(self):
        return True

    def writable(self):
        return False

    def handle_read_event(self):
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._pending:
            callback, args = self._pending.popleft()
            try:
                callback(*args)
            except Exception:
                logger.exception("Callback %r failed on the IO loop.", callback)

    def handle_write_event(self):
        pass

    def handle_error(self):
        logger.exception("Error in the IO loop waker.")

    def handle_close(self):
        self.close()

    def close(self):
        if self._closed:
            return
        self._closed = True
        self.ioloop.unregister(self._fileno)
        self._reader.close()
        self._writer.close()


def default_workers():
    """Return one worker per CPU core, at least two."""
    return max(2, os.cpu_count() or 1)


class WorkerPool:
    """A bounded thread pool whose results come back on the IO loop."""

    def __init__(self, ioloop, workers=None):
        self.waker = LoopWaker(ioloop)
        self.workers = workers or default_workers()
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="ftpserver-auth"
        )

    def submit(self, function, callback, *args, **kwargs):
        """Run ``function(*args, **kwargs)`` in a thread, then ``callback(result)``
        on the loop. ``function`` must not raise: it returns its outcome."""
        future = self._executor.submit(function, *args, **kwargs)

        def done(f):
            if not f.cancelled():
                self.waker.call_soon(callback, f.result())

        future.add_done_callback(done)
        return future

    def call_soon(self, callback, *args):
        """Run ``callback(*args)`` on the loop thread (callable from any thread)."""
        self.waker.call_soon(callback, *args)

    def shutdown(self):
        """Wait for running work to finish, then release the threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.waker.close()
