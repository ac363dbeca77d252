"""Fault tools for the tests: a TCP proxy that fails on demand, a tiny full
disk, real server processes whose database goes through the proxy, and an
upload load.

- :class:`TcpProxy`: 127.0.0.1 in front of a loopback (host, port), in one
  thread; ``forward()``, ``refuse()``, ``cut()``, ``hang()``, ``recover()``.
- :func:`mount_tmpfs`: a small tmpfs at a directory (skips when it cannot
  mount one); a fixture wraps it, e.g. ``tiny_disk`` in test_faults.py.
- :func:`database_proxy`, :func:`proxied_database_url`, :func:`server_env`,
  :func:`start_server`: an ``ftpserver`` process whose PostgreSQL
  connections go through a :class:`TcpProxy`.
- :func:`upload_load`: ftplib clients uploading small files in a loop,
  recording the uploads the server acknowledged (226).
"""

import contextlib
import ftplib
import io
import ipaddress
import os
import selectors
import socket
import struct
import subprocess
import threading
import time

import pytest
from django.db import connection

from .processes import ServerProcess, command_env

# --- the proxy


def reset(sock):
    """Close ``sock`` with an RST, so that its peer fails at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Pipe:
    """One proxied connection: the client's socket and the target's.

    ``out[i]`` holds what waits to be sent to ``socks[i]``; ``eof[i]`` is set
    once ``socks[i]`` sent its FIN (forwarded as a shutdown of the other side
    when everything before it was sent).
    """

    def __init__(self, client, upstream):
        self.socks = (client, upstream)
        self.out = (bytearray(), bytearray())
        self.eof = [False, False]
        self.shut = [False, False]
        self.hung = False
        self.closed = False


class TcpProxy:
    """A TCP proxy on 127.0.0.1:<free port> in front of ``target``, a loopback
    (host, port), whose behaviour switches at runtime:

    - ``forward()``: forward both ways (the start mode). Connections that
      ``hang()`` held are served again, as after a network stall.
    - ``refuse(cut_existing=False, delay=0)``: close every new connection
      with an RST (after ``delay`` seconds: a server that takes a while to
      fail); ``cut_existing`` also resets the open ones.
    - ``cut()``: reset every open connection now; new ones are forwarded.
    - ``hang(cut_existing=False)``: new connections are accepted and then
      neither read nor answered; open ones stop forwarding both ways but stay
      open (or are reset first, with ``cut_existing``).
    - ``recover()``: reset the connections held by ``hang()`` and forward.

    One thread serves every connection (a selector); at most
    ``max_connections`` are open at once, the next ones are reset. Every mode
    change is done when its method returns. A context manager: ``close()``
    at exit resets everything and stops the thread.
    """

    MODES = ("forward", "refuse", "hang")

    def __init__(
        self,
        target,
        *,
        max_connections=128,
        buffer_size=256 * 1024,
        connect_timeout=5.0,
    ):
        host, port = target
        if not _is_loopback(host):
            raise ValueError(f"TcpProxy only proxies to loopback, not {host!r}")
        self.target = (host, int(port))
        self.max_connections = max_connections
        self.buffer_size = buffer_size
        self.connect_timeout = connect_timeout
        self.mode = "forward"
        self.refuse_delay = 0.0
        # Counters (read them from any thread).
        self.accepted = 0  # every connection accepted, whatever the mode
        self.refused = 0  # closed by refuse() or over max_connections
        self.failed = 0  # the target refused the proxy's connection
        self._pipes = set()
        self._held = []  # accepted by hang(): not connected to the target
        self._delayed = []  # (deadline, socket): refused after a delay
        self._calls = []  # functions the loop runs for other threads
        self._calls_lock = threading.Lock()
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.listener.setblocking(False)
        self.host, self.port = self.listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake)
        self._thread = threading.Thread(
            target=self._loop, name=f"tcp-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def address(self):
        return (self.host, self.port)

    def __repr__(self):
        return (
            f"<TcpProxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]} "
            f"{self.mode}>"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the controls (any thread)

    def set_mode(self, mode, *, cut_existing=False, delay=0.0):
        """``forward``, ``refuse``, ``cut`` or ``hang`` (see the class)."""
        if mode == "cut":
            return self.cut()
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self._call(self._set_mode, mode, cut_existing, delay)

    def forward(self):
        self.set_mode("forward")

    def refuse(self, cut_existing=False, delay=0.0):
        self.set_mode("refuse", cut_existing=cut_existing, delay=delay)

    def hang(self, cut_existing=False):
        self.set_mode("hang", cut_existing=cut_existing)

    def cut(self):
        """Reset every open connection (held ones too); forward new ones."""
        self._call(self._cut)

    def recover(self):
        """Reset the connections held by ``hang()``, then forward."""
        self._call(self._recover)

    @property
    def open_connections(self):
        """Client connections open now (forwarded, stalled or held)."""
        return self._call(lambda: len(self._pipes) + len(self._held))

    @property
    def hung_connections(self):
        """Client connections held or stalled by ``hang()`` now."""
        return self._call(
            lambda: len(self._held) + sum(1 for p in self._pipes if p.hung)
        )

    def close(self):
        """Reset every connection, stop listening and stop the thread."""
        if self._stopping or not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown)
        finally:
            self._thread.join(10)
            self._wake_w.close()

    def _call(self, func, *args):
        """Run ``func`` in the loop thread; return its result."""
        if threading.current_thread() is self._thread:
            return func(*args)
        if not self._thread.is_alive():
            raise RuntimeError(f"{self!r} is closed")
        done = threading.Event()
        box = {}

        def call():
            try:
                box["result"] = func(*args)
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                done.set()

        with self._calls_lock:
            self._calls.append(call)
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError(f"{self!r} did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    # --- the loop thread

    def _loop(self):
        try:
            while not self._stopping:
                timeout = None
                if self._delayed:
                    timeout = max(0.0, self._delayed[0][0] - time.monotonic())
                for key, mask in self._selector.select(timeout):
                    key.data(key.fileobj, mask)
                self._refuse_due()
        finally:
            self._close_all()
            self._selector.close()
            self._wake_r.close()
            self.listener.close()

    def _wake(self, sock, mask):
        try:
            while sock.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for call in calls:
            call()

    def _set_mode(self, mode, cut_existing, delay):
        if cut_existing:
            self._cut()
        self.mode = mode
        self.refuse_delay = delay
        if mode == "hang":
            for pipe in self._pipes:
                pipe.hung = True
                self._update(pipe)
        elif mode == "forward":
            for pipe in list(self._pipes):
                if pipe.hung:
                    pipe.hung = False
                    self._update(pipe)
            held, self._held = self._held, []
            for sock in held:
                self._connect(sock)

    def _cut(self):
        self.mode = "forward"
        for pipe in list(self._pipes):
            self._close_pipe(pipe)
        held, self._held = self._held, []
        for sock in held:
            reset(sock)

    def _recover(self):
        for pipe in list(self._pipes):
            if pipe.hung:
                self._close_pipe(pipe)
        held, self._held = self._held, []
        for sock in held:
            reset(sock)
        self.mode = "forward"

    def _shutdown(self):
        self._stopping = True

    def _close_all(self):
        for pipe in list(self._pipes):
            self._close_pipe(pipe)
        for sock in self._held + [sock for _, sock in self._delayed]:
            reset(sock)
        self._held, self._delayed = [], []

    def _accept(self, listener, mask):
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the client reset it while queued
            self.accepted += 1
            open_now = len(self._pipes) + len(self._held) + len(self._delayed)
            if open_now >= self.max_connections:
                self.refused += 1
                reset(sock)
            elif self.mode == "refuse":
                self.refused += 1
                if self.refuse_delay > 0:
                    self._delayed.append((time.monotonic() + self.refuse_delay, sock))
                    self._delayed.sort(key=lambda item: item[0])
                else:
                    reset(sock)
            elif self.mode == "hang":
                self._held.append(sock)
            else:
                self._connect(sock)

    def _refuse_due(self):
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            reset(self._delayed.pop(0)[1])

    def _connect(self, client):
        try:
            upstream = socket.create_connection(
                self.target, timeout=self.connect_timeout
            )
        except OSError:
            self.failed += 1
            reset(client)
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(client, upstream)
        self._pipes.add(pipe)
        self._update(pipe)

    def _update(self, pipe):
        """(Re)register the pipe's sockets for what they can do now."""
        for i, sock in enumerate(pipe.socks):
            events = 0
            if not pipe.hung:
                if not pipe.eof[i] and len(pipe.out[1 - i]) < self.buffer_size:
                    events |= selectors.EVENT_READ
                if pipe.out[i]:
                    events |= selectors.EVENT_WRITE
            try:
                registered = self._selector.get_key(sock)
            except KeyError:
                registered = None
            if not events:
                if registered:
                    self._selector.unregister(sock)
            elif registered:
                if registered.events != events:
                    self._selector.modify(sock, events, registered.data)
            else:
                self._selector.register(sock, events, self._make_io(pipe, i))

    def _make_io(self, pipe, i):
        def io_ready(sock, mask):
            if pipe.closed or pipe.hung:
                return
            try:
                if mask & selectors.EVENT_WRITE:
                    self._write(pipe, i)
                if mask & selectors.EVENT_READ and not pipe.closed:
                    self._read(pipe, i)
            except OSError:
                self._close_pipe(pipe)  # one side failed: reset the other
                return
            if not pipe.closed:
                self._update(pipe)

        return io_ready

    def _read(self, pipe, i):
        try:
            data = pipe.socks[i].recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        other = 1 - i
        if data:
            pipe.out[other].extend(data)
            self._write(pipe, other)
            return
        pipe.eof[i] = True
        self._forward_eof(pipe, other)

    def _write(self, pipe, i):
        buf = pipe.out[i]
        if buf:
            try:
                sent = pipe.socks[i].send(buf)
            except (BlockingIOError, InterruptedError):
                return
            del buf[:sent]
        self._forward_eof(pipe, i)

    def _forward_eof(self, pipe, i):
        """Shut ``socks[i]`` for writing once its peer's FIN can follow."""
        if pipe.eof[1 - i] and not pipe.out[i] and not pipe.shut[i]:
            pipe.shut[i] = True
            try:
                pipe.socks[i].shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if all(pipe.shut):
            self._close_pipe(pipe, graceful=True)

    def _close_pipe(self, pipe, graceful=False):
        if pipe.closed:
            return
        pipe.closed = True
        self._pipes.discard(pipe)
        for sock in pipe.socks:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            if graceful:
                sock.close()
            else:
                reset(sock)


# --- a full disk


@contextlib.contextmanager
def mount_tmpfs(path, size):
    """Mount a tmpfs of ``size`` bytes at ``path`` (created); unmount at exit.

    Skips the test when the mount fails (no root, no CAP_SYS_ADMIN in a
    container): the reason is the mount's own error.
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={int(size)},mode=0755"]
            + ["tmpfs", path],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs at {path}: {exc}")
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs at {path}: "
            f"{(result.stderr or result.stdout).strip() or result.returncode}"
        )
    try:
        yield path
    finally:
        _unmount(path)


def _unmount(path):
    for _ in range(50):
        if subprocess.run(["umount", path], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)  # a server still closing its files
    # Still busy: detach it now, the kernel frees it when the last file closes.
    subprocess.run(["umount", "-l", path], capture_output=True, check=True)


# --- server processes whose database goes through a proxy


def is_postgresql():
    return connection.vendor == "postgresql"


def require_postgresql():
    if not is_postgresql():
        pytest.skip(
            "needs PostgreSQL (a database reached over TCP through the proxy); "
            "set DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME"
        )


def database_target():
    """The (host, port) of the current PostgreSQL database."""
    s = connection.settings_dict
    return (s.get("HOST") or "127.0.0.1", int(s.get("PORT") or 5432))


def proxied_database_url(proxy):
    """DATABASE_URL of the current test database, through ``proxy``."""
    require_postgresql()
    s = connection.settings_dict
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@127.0.0.1:{proxy.port}/{s['NAME']}"


@contextlib.contextmanager
def database_proxy(**options):
    """A :class:`TcpProxy` in front of the test database (PostgreSQL only)."""
    require_postgresql()
    with TcpProxy(database_target(), **options) as proxy:
        yield proxy


def server_env(database_url=None, **ftp_settings):
    """The environment of an ``ftpserver`` process on the test database.

    ``ftp_settings`` become ``FTPSERVER_<NAME>`` variables, read by
    ``tests.fault_settings`` (tests.settings plus every FTPSERVER_* variable).
    """
    extra = {
        f"FTPSERVER_{name.upper()}": _env_value(v) for name, v in ftp_settings.items()
    }
    env = command_env(DJANGO_SETTINGS_MODULE="tests.fault_settings", **extra)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


def _env_value(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def start_server(workdir, env, args=("127.0.0.1:0",)):
    """Start ``python -m django ftpserver ARGS`` and wait for its banner."""
    server = ServerProcess(list(args), workdir, env)
    try:
        return server.wait_started()
    except BaseException:
        server.kill()
        raise


# --- load


def upload_load(
    host,
    port,
    user,
    password,
    n_clients,
    stop_event,
    *,
    size=4096,
    prefix="load",
    acknowledged=None,
    errors=None,
    timeout=30,
):
    """Run ``n_clients`` ftplib clients, each uploading ``size``-byte files
    with unique names (``{prefix}-{client}-{n}.bin``, in its home) in a loop
    until ``stop_event`` is set or its connection fails (the server died).

    Return the names of the files whose STOR got its 226 reply, in the order
    of the replies. Pass a list as ``acknowledged`` to watch it grow while
    the load runs (appended to under a lock); ``errors`` collects each
    client's last exception.
    """
    acknowledged = [] if acknowledged is None else acknowledged
    errors = [] if errors is None else errors
    lock = threading.Lock()
    payload = os.urandom(size)

    def client(number):
        ftp = ftplib.FTP(timeout=timeout)
        try:
            ftp.connect(host, port)
            ftp.login(user, password)
            n = 0
            while not stop_event.is_set():
                name = f"{prefix}-{number}-{n}.bin"
                n += 1
                reply = ftp.storbinary(f"STOR {name}", io.BytesIO(payload))
                if reply.startswith("226"):
                    with lock:
                        acknowledged.append(name)
        except (OSError, EOFError, ftplib.Error) as exc:
            with lock:
                errors.append(exc)
        finally:
            ftp.close()

    threads = [
        threading.Thread(target=client, args=(i,), name=f"upload-load-{i}", daemon=True)
        for i in range(n_clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acknowledged


def reply_of(call, *args):
    """Return the reply of an ftplib call, or the error's text when it failed
    (``"421 ..."``, ``"timed out"``)."""
    try:
        return call(*args)
    except (OSError, EOFError, ftplib.Error) as exc:
        return str(exc) or type(exc).__name__
