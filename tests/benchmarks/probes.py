"""Client-side probes (after ../shared/bench): each returns a dict of figures."""

import ftplib
import io
import statistics
import threading
import time


def stall(host, port, n_logins=16, concurrency=8, n_users=50):
    """NOOP latency of a logged-in client while others log in."""
    probe = ftplib.FTP()
    probe.connect(host, port, timeout=120)
    probe.login("probe", "pw-probe")
    latencies, stop, fails = [], threading.Event(), [0]

    def probe_loop():
        while not stop.is_set():
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
            user = f"u{i % n_users}"
            try:
                client = ftplib.FTP()
                client.connect(host, port, timeout=120)
                client.login(user, "pw-" + user)
                client.quit()
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
    probe.quit()
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


def smallops(host, port, n=200, size=4096):
    """Operation rates of small files over one session (ops/s)."""
    data = b"x" * size
    c = ftplib.FTP()
    c.connect(host, port, timeout=60)
    c.login("probe", "pw-probe")
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
        c.size(f"f{i}")
        c.voidcmd(f"MDTM f{i}")
    res["size_mdtm_per_s"] = 2 * n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        c.retrbinary(f"RETR f{i}", lambda b: None)
    res["retr_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        c.delete(f"f{i}")
    res["dele_per_s"] = n / (time.perf_counter() - t)
    c.cwd("..")
    c.rmd("small")
    c.quit()
    return res


def median_of(runs):
    """Return the per-key median of a list of result dicts."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}
