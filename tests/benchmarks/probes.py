"""Client-side probes (after ../shared/bench): each returns a dict of figures.

Every probe talks to 127.0.0.1 only, with socket timeouts and a bounded
number of operations; the transfers and idle probes also have an overall
deadline.
"""

import ftplib
import io
import re
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .fixtures import password
from .launch import raise_fd_limit

MB = 1_000_000
MIB = 1 << 20


def time_wait_sockets():
    """Return how many TCP sockets of this machine are in TIME_WAIT."""
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return 0


def wait_for_ports(limit=4000, timeout=90):
    """Wait until fewer than ``limit`` sockets are in TIME_WAIT.

    Every transfer leaves a socket in TIME_WAIT for 60 s; with tens of
    thousands of them, the kernel's search for a free port at every PASV
    bind() slows down whichever server is measured then, so probes that
    open many data connections start from a quiet port table.
    """
    deadline = time.monotonic() + timeout
    while time_wait_sockets() >= limit and time.monotonic() < deadline:
        time.sleep(1)


def login(host, port, user, timeout=120):
    client = ftplib.FTP()
    client.connect(host, port, timeout=timeout)
    try:
        client.login(user, password(user))
    except BaseException:
        client.close()
        raise
    return client


def noop_ok(client):
    try:
        client.voidcmd("NOOP")
    except (OSError, EOFError, ftplib.Error):
        return False
    return True


def close_quietly(client):
    try:
        client.quit()
    except Exception:
        client.close()


# --- stall --------------------------------------------------------------------


def stall(host, port, n_logins=16, concurrency=8, n_users=50):
    """NOOP latency of a logged-in client while others log in."""
    probe = login(host, port, "probe")
    latencies, stop, fails = [], threading.Event(), [0]

    def probe_loop():
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            t = time.perf_counter()
            probe.voidcmd("NOOP")
            latencies.append((time.perf_counter() - t) * 1000)
            time.sleep(0.01)

    counter, lock = iter(range(n_logins)), threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                close_quietly(login(host, port, f"u{i % n_users}", timeout=300))
            except Exception:
                fails[0] += 1

    prober = threading.Thread(target=probe_loop)
    prober.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    stop.set()
    prober.join()
    close_quietly(probe)
    latencies.sort()

    def q(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "logins_per_s": n_logins / elapsed,
        "noop_p50_ms": q(0.5),
        "noop_p99_ms": q(0.99),
        "noop_max_ms": latencies[-1],
        "fails": fails[0],
    }


# --- smallops -----------------------------------------------------------------


def smallops(host, port, home=None, n=500, n_local=4500, size=4096, user="probe"):
    """Operation rates of small files over one session (ops/s).

    ``n`` files are uploaded and downloaded (each transfer is a data
    connection, and the kernel's port table limits how many a run can
    afford); when ``home`` (the probe account's home on this machine) is
    given, ``n_local`` more are written there directly, so that SIZE+MDTM
    and DELE run over ``n + n_local`` files: phases of a second or so, not
    shorter than the audit writer's interval. ``home`` is ``user``'s.
    """
    wait_for_ports()
    data = b"x" * size
    c = login(host, port, user, timeout=60)
    try:
        c.mkd("small")
    except ftplib.error_perm:
        pass
    c.cwd("small")
    c.voidcmd("TYPE I")
    res = {}
    t = time.perf_counter()
    for i in range(n):
        c.storbinary(f"STOR f{i}", io.BytesIO(data))
    res["stor_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        c.retrbinary(f"RETR f{i}", lambda b: None)
    res["retr_per_s"] = n / (time.perf_counter() - t)
    total = n
    if home is not None:
        for i in range(n, n + n_local):
            (home / "small" / f"f{i}").write_bytes(data)
        total += n_local
    t = time.perf_counter()
    for i in range(total):
        c.size(f"f{i}")
        c.voidcmd(f"MDTM f{i}")
    res["size_mdtm_per_s"] = 2 * total / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(total):
        c.delete(f"f{i}")
    res["dele_per_s"] = total / (time.perf_counter() - t)
    c.cwd("..")
    c.rmd("small")
    c.quit()
    return res


# --- short sessions -----------------------------------------------------------


def sessions(host, port, n=300, cycles=300, size=4096, user="probe"):
    """A cached login's latency and the short-session cycle rate.

    Latency: connect to 230 (connect, greeting, USER, PASS), one at a time,
    median and p90 over ``n`` logins after a warm-up (the credential cache
    holds the password). Cycle: connect, log in, STOR ``size`` bytes, QUIT,
    one at a time (the workload of scanners, cameras and scripts).
    """
    wait_for_ports()
    secret = password(user)
    close_quietly(login(host, port, user))  # warm the credential cache
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c = ftplib.FTP()
        c.connect(host, port, timeout=30)
        c.login(user, secret)
        times.append(time.perf_counter() - t)
        c.close()
    times.sort()
    data = b"x" * size
    t = time.perf_counter()
    for i in range(cycles):
        c = ftplib.FTP()
        c.connect(host, port, timeout=30)
        c.login(user, secret)
        c.storbinary(f"STOR cycle{i % 50}", io.BytesIO(data))
        c.quit()
    cycle_s = time.perf_counter() - t
    return {
        "login_ms": statistics.median(times) * 1000,
        "login_p90_ms": times[int(len(times) * 0.9)] * 1000,
        "cycles_per_s": cycles / cycle_s,
    }


def small_files_and_sessions(host, port, home, user="probe"):
    """The variant probes' workload: smallops and sessions, shorter.

    300 files stored and retrieved (2,700 more written to ``home``, so that
    SIZE+MDTM and DELE run over 3,000), 100 cached logins, 200 cycles: a
    third fewer data connections than the two probes, as each round of a
    variant probe measures five servers.
    """
    figures = smallops(host, port, home, n=300, n_local=2700, user=user)
    figures.update(sessions(host, port, n=100, cycles=200, user=user))
    return figures


# --- several clients at once: --workers 2 -------------------------------------

PARALLEL_DIR = "parallel"


def _parallel_client(kind, host, port, user, index, count, size, barrier, results):
    """One client process of :func:`parallel`; puts (index, t0, t1, error)."""
    data = b"x" * size
    try:
        if kind == "stor":
            c = login(host, port, user, timeout=60)
            c.voidcmd("TYPE I")
            c.cwd(PARALLEL_DIR)
            barrier.wait(60)
            t0 = time.perf_counter()
            for i in range(count):
                c.storbinary(f"STOR s{index}_{i}", io.BytesIO(data))
            t1 = time.perf_counter()
            close_quietly(c)
        else:
            secret = password(user)
            barrier.wait(60)
            t0 = time.perf_counter()
            for i in range(count):
                c = ftplib.FTP()
                c.connect(host, port, timeout=30)
                c.login(user, secret)
                c.storbinary(f"STOR {PARALLEL_DIR}/c{index}_{i % 50}", io.BytesIO(data))
                c.quit()
            t1 = time.perf_counter()
        results.put((index, t0, t1, None))
    except BaseException as exc:
        barrier.abort()
        results.put((index, None, None, repr(exc)))


def _parallel_phase(kind, host, port, user, clients, count, size, timeout):
    """Run ``clients`` client processes released together; return ops/s."""
    import multiprocessing

    # Processes, not threads: eight ftplib clients in one interpreter would
    # share one GIL and measure it rather than the server. Forked while
    # this process runs no other thread.
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    procs = [
        ctx.Process(
            target=_parallel_client,
            args=(kind, host, port, user, i, count, size, barrier, results),
            daemon=True,
        )
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    got, deadline = [], time.monotonic() + timeout
    try:
        while len(got) < clients:
            got.append(results.get(timeout=max(1, deadline - time.monotonic())))
    finally:
        for proc in procs:
            proc.join(max(1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = [error for _, _, _, error in got if error]
    if errors:
        raise RuntimeError(
            f"{len(errors)} of {clients} {kind} clients failed: {errors[0]}"
        )
    t0 = min(t for _, t, _, _ in got)
    t1 = max(t for _, _, t, _ in got)
    return clients * count / (t1 - t0)


def parallel(
    host,
    port,
    home=None,
    clients=8,
    stor_each=100,
    cycles_each=40,
    size=4096,
    user="probe",
    timeout=300,
):
    """Rates of ``clients`` client processes at once (a server with 2 workers).

    STOR: each client logged in, then released together to store
    ``stor_each`` new files of ``size`` bytes over its session. Cycles: each
    client released together to run ``cycles_each`` short sessions (connect,
    log in, STOR, QUIT). The rate is all operations over the time from the
    first client's start to the last one's end. ``home`` (``user``'s home on
    this machine): where the files are removed afterwards.

    Few operations a round (800 uploads, 320 cycles: under 1,500 sockets
    left in TIME_WAIT) so that the rounds rarely wait for the port table;
    the rate of a phase of a few tenths of a second is noisy, its median
    over the rounds less so.
    """
    wait_for_ports()
    c = login(host, port, user, timeout=60)
    try:
        c.mkd(PARALLEL_DIR)
    except ftplib.error_perm:
        pass
    close_quietly(c)
    # Warm every worker's credential cache: the cycles measure cached logins.
    for _ in range(16):
        close_quietly(login(host, port, user, timeout=60))
    try:
        stor = _parallel_phase(
            "stor", host, port, user, clients, stor_each, size, timeout
        )
        # No wait for the port table here: every server gets the same start.
        cycles = _parallel_phase(
            "cycle", host, port, user, clients, cycles_each, size, timeout
        )
    finally:
        if home is not None:
            shutil.rmtree(home / PARALLEL_DIR, ignore_errors=True)
    return {"stor_per_s": stor, "cycles_per_s": cycles}


# --- FTPS ---------------------------------------------------------------------


def ftps_small_files(host, port, cafile, n=200, size=4096, user="probe"):
    """STOR then RETR of ``n`` files of ``size`` bytes over FTPS (ops/s).

    Explicit FTPS (AUTH TLS), PROT P: every transfer opens a data
    connection with a full TLS handshake of its own (ftplib offers no
    session to resume), verified against ``cafile``. The files are deleted
    at the end.
    """
    wait_for_ports()
    context = ssl.create_default_context(cafile=cafile)
    c = ftplib.FTP_TLS(context=context, timeout=60)
    c.connect(host, port)
    c.login(user, password(user))
    c.prot_p()
    try:
        c.mkd("ftps")
    except ftplib.error_perm:
        pass
    c.cwd("ftps")
    c.voidcmd("TYPE I")
    data = b"x" * size
    t = time.perf_counter()
    for i in range(n):
        c.storbinary(f"STOR f{i}", io.BytesIO(data))
    stor = n / (time.perf_counter() - t)
    got = [0]

    def count(chunk):
        got[0] += len(chunk)

    t = time.perf_counter()
    for i in range(n):
        c.retrbinary(f"RETR f{i}", count)
    retr = n / (time.perf_counter() - t)
    if got[0] != n * size:
        raise RuntimeError(f"RETR over FTPS received {got[0]} of {n * size} bytes")
    version = c.sock.version()
    for i in range(n):
        c.delete(f"f{i}")
    c.cwd("..")
    c.rmd("ftps")
    close_quietly(c)
    return {"stor_per_s": stor, "retr_per_s": retr, "tls_version": version}


# --- logins -------------------------------------------------------------------


def pbkdf2_seconds(checks=3):
    """Median time of one check of a password against Django's default hash."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    encoded = hasher.encode("pw-check", hasher.salt())
    times = []
    for _ in range(checks):
        t = time.perf_counter()
        assert hasher.verify("pw-check", encoded)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def login_burst(host, port, users, timeout=300):
    """Log ``users`` in at once (one thread each, released together).

    Every client has connected and read the greeting before the release; the
    figure is the time from the release to the last 230 reply.
    """
    n = len(users)
    barrier = threading.Barrier(n + 1)
    finished, errors = [None] * n, []

    def client(i):
        try:
            c = ftplib.FTP()
            c.connect(host, port, timeout=timeout)
        except Exception as exc:
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait(timeout=60)
            c.login(users[i], password(users[i]))
            finished[i] = time.perf_counter()
        except Exception as exc:
            errors.append(exc)
        finally:
            close_quietly(c)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout + 60)
    done = [f for f in finished if f is not None]
    return {
        "seconds": (max(done) - t0) if done else float("nan"),
        "fails": n - len(done),
        "errors": [repr(e) for e in errors[:3]],
    }


# --- many sessions: transfers, prefork ------------------------------------------


class Sessions:
    """``n`` logged-in sessions of one account, for transfers all at once."""

    def __init__(self, host, port, n, user="probe", concurrency=10, timeout=300):
        raise_fd_limit()
        self.timeout = timeout
        with ThreadPoolExecutor(concurrency) as pool:
            self.clients = list(
                pool.map(lambda _: login(host, port, user, timeout), range(n))
            )
        for c in self.clients:
            c.voidcmd("TYPE I")

    def close(self):
        for c in self.clients:
            close_quietly(c)
        self.clients = []

    def _pump(self, conns, on_event, deadline):
        """Run a selector loop over the data connections until all are done."""
        sel = selectors.DefaultSelector()
        for conn, events in conns:
            conn.setblocking(False)
            sel.register(conn, events)
        open_count = len(conns)
        while open_count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("transfers did not finish in time")
            for key, _ in sel.select(timeout=min(left, 5)):
                if on_event(key.fileobj):
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    open_count -= 1
        sel.close()

    def retr_all(self, filename):
        """Every session downloads ``filename`` at once: seconds, bytes."""
        deadline = time.monotonic() + self.timeout
        buf = bytearray(256 * 1024)
        got = [0]

        def readable(conn):
            try:
                n = conn.recv_into(buf)
            except BlockingIOError:
                return False
            got[0] += n
            return n == 0

        t0 = time.perf_counter()
        conns = [
            (c.transfercmd(f"RETR {filename}"), selectors.EVENT_READ)
            for c in self.clients
        ]
        self._pump(conns, readable, deadline)
        for c in self.clients:
            c.voidresp()
        return time.perf_counter() - t0, got[0]

    def stor_all(self, size, prefix="t"):
        """Every session uploads ``size`` bytes at once (its own file): seconds."""
        deadline = time.monotonic() + self.timeout
        chunk = memoryview(b"x" * (256 * 1024))
        left = {}

        def writable(conn):
            todo = left[conn]
            try:
                sent = conn.send(chunk[: min(len(chunk), todo)])
            except BlockingIOError:
                return False
            left[conn] = todo - sent
            if left[conn] <= 0:
                conn.shutdown(socket.SHUT_WR)
                return True
            return False

        t0 = time.perf_counter()
        conns = []
        for i, c in enumerate(self.clients):
            conn = c.transfercmd(f"STOR {prefix}{i}.bin")
            left[conn] = size
            conns.append((conn, selectors.EVENT_WRITE))
        self._pump(conns, writable, deadline)
        for c in self.clients:
            c.voidresp()
        return time.perf_counter() - t0


def flood(host, port, user, logins=3, waves_between=1, size=150):
    """The review's login flood: a user's login alone and under the flood.

    The flood: waves of ``size`` connections from 127.0.0.2 that each send
    ``USER user`` / ``PASS wrong`` and close at once. The user logs in from
    127.0.0.3 (his password not cached: the nocache variant). Returns the
    medians of ``logins`` logins alone and under the flood.
    """

    def login_from(source):
        client = ftplib.FTP()
        client.connect(host, port, timeout=300, source_address=(source, 0))
        t = time.perf_counter()
        try:
            client.login(user, password(user))
            return time.perf_counter() - t
        finally:
            close_quietly(client)

    def drop(lines):
        try:
            with socket.create_connection(
                (host, port), timeout=30, source_address=("127.0.0.2", 0)
            ) as sock:
                sock.sendall(lines)
        except OSError:
            pass

    alone = statistics.median(login_from("127.0.0.3") for _ in range(logins))
    lines = f"USER {user}\r\nPASS wrong\r\n".encode()
    stop = threading.Event()
    sent = [0]

    def flooder():
        while not stop.is_set():
            wave = [threading.Thread(target=drop, args=(lines,)) for _ in range(size)]
            for t in wave:
                t.start()
            for t in wave:
                t.join()
            sent[0] += size

    thread = threading.Thread(target=flooder, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        flooded = []
        for _ in range(logins):
            flooded.append(login_from("127.0.0.3"))
    finally:
        stop.set()
        thread.join(120)
    flooded = statistics.median(flooded)
    return {
        "alone_s": alone,
        "flooded_s": flooded,
        "ratio": flooded / alone,
        "connections": sent[0],
    }


def put_file(host, port, name, size, user="probe"):
    c = login(host, port, user)
    c.storbinary(f"STOR {name}", io.BytesIO(b"y" * size), blocksize=256 * 1024)
    close_quietly(c)


# --- idle -------------------------------------------------------------------------


def idle(host, port, rss, n=1000, concurrency=8, user="probe", timeout=300):
    """``n`` logged-in idle clients: how many are served, and the server's RSS.

    ``rss`` returns the server's resident memory (its worker processes
    included), sampled every 0.2 s from before the first login until the
    clients are gone.
    """
    raise_fd_limit()
    deadline = time.monotonic() + timeout
    rss_before = rss()
    samples, stop = [rss_before], threading.Event()

    def sample():
        while not stop.wait(0.2):
            samples.append(rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients, fails = [], [0]
    lock = threading.Lock()

    def connect(_):
        if time.monotonic() > deadline:
            fails[0] += 1
            return
        try:
            c = login(host, port, user, timeout=60)
        except Exception:
            with lock:
                fails[0] += 1
            return
        with lock:
            clients.append(c)

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(connect, range(n)))
        login_s = time.perf_counter() - t0
        served = sum(1 for c in clients if noop_ok(c))
        time.sleep(1.0)  # the audit writer's batch of 2000 records lands
        rss_loaded = rss()
    finally:
        for c in clients:
            c.close()
        time.sleep(0.5)
        stop.set()
        sampler.join()
    return {
        "served": served,
        "login_s": login_s,
        "rss_before_mb": rss_before / MB,
        "rss_mb": rss_loaded / MB,
        "rss_peak_mb": max(samples) / MB,
    }


# --- ftpbench ---------------------------------------------------------------------

FTPBENCH_LINE = re.compile(
    r"^(?P<what>\S.*?)\s+(?P<value>\d+\.\d+)\s+(?P<unit>MB/sec|secs)\s*(?P<mem>\S*)$"
)
FTPBENCH_KEYS = [
    (re.compile(r"^STOR \(client -> server\)"), "stor_mb_s"),
    (re.compile(r"^RETR \(server -> client\)"), "retr_mb_s"),
    (re.compile(r"^\d+ concurrent clients \(connect, login\)"), "c_login_s"),
    (re.compile(r"^STOR \(1 file with \d+ idle clients\)"), "c_stor_idle_mb_s"),
    (re.compile(r"^RETR \(1 file with \d+ idle clients\)"), "c_retr_idle_mb_s"),
    (re.compile(r"^\d+ concurrent clients \(RETR"), "c_retr_s"),
    (re.compile(r"^\d+ concurrent clients \(STOR"), "c_stor_s"),
    (re.compile(r"^\d+ concurrent clients \(QUIT\)"), "c_quit_s"),
]


def ftpbench(script, host, port, bench, clients=100, filesize="10M", timeout=900):
    """Run pyftpdlib's ftpbench as the probe account; return its figures."""
    argv = [
        sys.executable,
        "-W",
        "ignore::DeprecationWarning",
        str(script),
        "-u",
        "probe",
        "-p",
        password("probe"),
        "-H",
        host,
        "-P",
        str(port),
        "-b",
        bench,
        "-n",
        str(clients),
        "-s",
        filesize,
        "-t",
        "120",
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=raise_fd_limit,  # noqa: PLW1509
    )
    if done.returncode:
        raise RuntimeError(
            f"ftpbench -b {bench} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    figures = {}
    for line in done.stdout.splitlines():
        match = FTPBENCH_LINE.match(line.strip())
        if not match:
            continue
        for pattern, key in FTPBENCH_KEYS:
            if pattern.match(match["what"]):
                figures[key] = float(match["value"])
    return figures


def median_of(runs):
    """Return the per-key median of a list of result dicts."""
    keys = {k for r in runs for k in r}
    return {
        k: statistics.median(r[k] for r in runs if k in r)
        for k in keys
        if all(isinstance(r.get(k, 0), int | float) for r in runs)
    }
