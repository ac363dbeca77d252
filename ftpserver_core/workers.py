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


class Task:
    """A submitted call; ``cancel()`` drops it if no thread has started it."""

    __slots__ = (
        "function",
        "callback",
        "args",
        "kwargs",
        "key",
        "on_start",
        "cancelled",
    )

    def __init__(self, function, callback, args, kwargs, key, on_start=None):
        self.function = function
        self.callback = callback
        self.args = args
        self.kwargs = kwargs
        self.key = key
        self.on_start = on_start
        self.cancelled = False

    def cancel(self):
        """Skip the call if it has not started (its client has gone)."""
        self.cancelled = True


class WorkerPool:
    """A bounded pool of daemon threads whose results come back on the IO loop.

    Daemon threads, not ``concurrent.futures``: a thread stuck on a hung
    database must not keep the process from exiting at a stop.

    Tasks carry a key (the client's address) and waiting keys take turns. A
    key already running on ``max_running_per_key`` threads (half the pool)
    gets another only when no other key waits. A flood of logins from one
    address then holds at most half the threads once anyone else asks:
    everyone else's logins run on the other half instead of queueing behind
    the flood, and a lone address (a NAT, a load balancer) still gets them
    all.
    """

    def __init__(self, ioloop, workers=None, max_pending=None, name="auth"):
        self.waker = LoopWaker(ioloop)
        self.workers = workers or default_workers()
        self.max_pending = max_pending
        self.max_running_per_key = max(1, self.workers // 2)
        self._cond = threading.Condition()
        # key -> deque of waiting tasks, in the order the keys take turns.
        self._waiting = collections.OrderedDict()
        self._pending = 0
        self._running = collections.Counter()
        self._threads = []
        self._closed = False
        for number in range(self.workers):
            thread = threading.Thread(
                target=self._work, name=f"ftpserver-{name}_{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _next_task(self):
        """Return the next runnable task (the lock held), or None."""
        chosen = None
        for key in self._waiting:
            if key is None or self._running[key] < self.max_running_per_key:
                chosen = key
                break
        if chosen is None:
            if not self._waiting:
                return None
            # Only keys at their share wait: nobody else needs the thread
            # (one busy address behind a NAT gets the whole pool).
            chosen = next(iter(self._waiting))
        tasks = self._waiting[chosen]
        task = tasks.popleft()
        if tasks:
            self._waiting.move_to_end(chosen)  # the next key's turn
        else:
            del self._waiting[chosen]
        self._pending -= 1
        return task

    def _work(self):
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    task = self._next_task()
                    if task is not None:
                        break
                    self._cond.wait()
                if task.cancelled:
                    continue
                self._running[task.key] += 1
            if task.on_start is not None:
                # Before the result, through the same queue: it runs first.
                self.waker.call_soon(task.on_start)
            try:
                result = task.function(*task.args, **task.kwargs)
            except Exception:  # the function's contract is not to raise
                logger.exception("Worker task %r failed.", task.function)
                result = _FAILED
            finally:
                with self._cond:
                    self._running[task.key] -= 1
                    if not self._running[task.key]:
                        del self._running[task.key]
                    self._cond.notify()
            if result is not _FAILED:
                self.waker.call_soon(task.callback, result)

    def submit(self, function, callback, *args, key=None, on_start=None, **kwargs):
        """Run ``function(*args, **kwargs)`` in a thread, then ``callback(result)``
        on the loop. ``function`` must not raise: it returns its outcome.
        ``on_start()`` runs on the loop when a thread takes the task.

        Return the :class:`Task`, or None when ``max_pending`` tasks already
        wait (or the pool is shut down): the caller answers "try later".
        """
        task = Task(function, callback, args, kwargs, key, on_start)
        with self._cond:
            if self._closed:
                return None
            if self.max_pending is not None and self._pending >= self.max_pending:
                return None
            self._waiting.setdefault(key, collections.deque()).append(task)
            self._pending += 1
            self._cond.notify()
        return task

    def pending(self):
        """Return how many tasks wait for a thread."""
        with self._cond:
            return self._pending

    def call_soon(self, callback, *args):
        """Run ``callback(*args)`` on the loop thread (callable from any thread)."""
        self.waker.call_soon(callback, *args)

    def shutdown(self, timeout=None):
        """Drop waiting tasks; wait up to ``timeout`` seconds for running ones."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._pending = 0
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        self.waker.close()


_FAILED = object()
