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
import queue
import socket
import threading
import time

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
    """A bounded pool of daemon threads whose results come back on the IO loop.

    Daemon threads, not ``concurrent.futures``: a thread stuck on a hung
    database must not keep the process from exiting at a stop.
    """

    def __init__(self, ioloop, workers=None):
        self.waker = LoopWaker(ioloop)
        self.workers = workers or default_workers()
        self._tasks = queue.SimpleQueue()
        self._threads = []
        self._closed = False
        for number in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"ftpserver-auth_{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self):
        while True:
            task = self._tasks.get()
            if task is None:
                return
            function, callback, args, kwargs = task
            try:
                result = function(*args, **kwargs)
            except Exception:  # the function's contract is not to raise
                logger.exception("Worker task %r failed.", function)
                continue
            self.waker.call_soon(callback, result)

    def submit(self, function, callback, *args, **kwargs):
        """Run ``function(*args, **kwargs)`` in a thread, then ``callback(result)``
        on the loop. ``function`` must not raise: it returns its outcome."""
        if self._closed:
            return
        self._tasks.put((function, callback, args, kwargs))

    def pending(self):
        """Return how many tasks wait for a thread."""
        return self._tasks.qsize()

    def call_soon(self, callback, *args):
        """Run ``callback(*args)`` on the loop thread (callable from any thread)."""
        self.waker.call_soon(callback, *args)

    def shutdown(self, timeout=None):
        """Drop waiting tasks; wait up to ``timeout`` seconds for running ones."""
        self._closed = True
        try:
            while True:
                self._tasks.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._tasks.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        self.waker.close()
