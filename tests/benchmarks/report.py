"""The benchmark's tables: figures with ratios vs bare, and the targets.

Tables are reStructuredText simple tables, printed as they are and written
to ``--rst PATH``.
"""

import math
import statistics

# baseline-sqlite: ours at an earlier revision (--baseline), on SQLite.
SERVERS = [
    "ours-sqlite",
    "ours-postgres",
    "baseline-sqlite",
    "bare",
    "django-ftpserver",
]
OURS = ["ours-sqlite", "ours-postgres"]

# (probe, key, label, unit); the order of the table.
FIGURES = [
    ("stall", "noop_p99_ms", "stall: idle client's NOOP p99", "ms"),
    ("stall", "noop_p50_ms", "stall: idle client's NOOP p50", "ms"),
    ("stall", "noop_max_ms", "stall: idle client's NOOP max", "ms"),
    ("stall", "logins_per_s", "stall: logins per second", "/s"),
    ("smallops", "stor_per_s", "smallops: STOR 4 KiB", "/s"),
    ("smallops", "retr_per_s", "smallops: RETR 4 KiB", "/s"),
    ("smallops", "size_mdtm_per_s", "smallops: SIZE+MDTM", "/s"),
    ("smallops", "dele_per_s", "smallops: DELE", "/s"),
    ("sessions", "login_ms", "sessions: cached login, connect to 230 (median)", "ms"),
    ("sessions", "login_p90_ms", "sessions: cached login, connect to 230 (p90)", "ms"),
    ("sessions", "cycles_per_s", "sessions: connect, login, STOR 4 KiB, QUIT", "/s"),
    ("logins", "burst_s", "logins: 100 at once, cache off", "s"),
    ("logins", "hasher_limit_s", "logins: hasher limit (100 PBKDF2 / cores)", "s"),
    ("logins", "burst_vs_limit", "logins: cache off / hasher limit", "x"),
    ("logins", "pbkdf2_ms", "logins: one PBKDF2 check (client side)", "ms"),
    ("logins", "cached_burst_s", "logins: 100 at once, same account, cache on", "s"),
    ("ftpbench", "stor_mb_s", "ftpbench: STOR (1 client)", "MB/s"),
    ("ftpbench", "retr_mb_s", "ftpbench: RETR (1 client)", "MB/s"),
    ("ftpbench", "c_login_s", "ftpbench -n 100: connect, login (serial)", "s"),
    ("ftpbench", "c_stor_idle_mb_s", "ftpbench -n 100: STOR, 100 idle", "MB/s"),
    ("ftpbench", "c_retr_idle_mb_s", "ftpbench -n 100: RETR, 100 idle", "MB/s"),
    ("ftpbench", "c_retr_s", "ftpbench -n 100: RETR 10 MiB each", "s"),
    ("ftpbench", "c_stor_s", "ftpbench -n 100: STOR 10 MiB each", "s"),
    ("ftpbench", "c_quit_s", "ftpbench -n 100: QUIT", "s"),
    ("transfers", "retr_s", "transfers: 100 clients RETR 10 MiB at once", "s"),
    ("transfers", "stor_s", "transfers: 100 clients STOR 10 MiB at once", "s"),
    ("idle", "served", "idle: clients served, of 1000", ""),
    ("idle", "rss_mb", "idle: server RSS, 1000 clients", "MB"),
    ("idle", "rss_peak_mb", "idle: server RSS, peak", "MB"),
    ("idle", "rss_before_mb", "idle: server RSS before", "MB"),
    ("idle", "login_s", "idle: 1000 logins, 8 at a time", "s"),
    ("prefork", "w1_stor_s", "prefork: 100 STOR 10 MiB, --workers 1", "s"),
    ("prefork", "w2_stor_s", "prefork: 100 STOR 10 MiB, --workers 2", "s"),
    ("prefork", "speedup", "prefork: speed-up of 2 workers", "x"),
    ("parallel", "stor_per_s", "parallel: 8 clients STOR 4 KiB, 2 workers", "/s"),
    (
        "parallel",
        "cycles_per_s",
        "parallel: 8 clients connect, login, STOR 4 KiB, QUIT, 2 workers",
        "/s",
    ),
    ("ftps", "stor_per_s", "ftps: STOR 4 KiB, PROT P", "/s"),
    ("ftps", "retr_per_s", "ftps: RETR 4 KiB, PROT P", "/s"),
    ("flood", "alone_s", "flood: a login alone, cache off", "s"),
    ("flood", "flooded_s", "flood: the same login under the flood", "s"),
    ("flood", "ratio", "flood: under the flood / alone", "x"),
    ("flood", "connections", "flood: flood connections meanwhile", ""),
    ("admin", "unfiltered_ms", "admin: changelist, unfiltered", "ms"),
    ("admin", "filter_worst_ms", "admin: changelist, slowest filter", "ms"),
    ("admin", "search_worst_ms", "admin: changelist, slowest search", "ms"),
    ("export", "csv_s", "export: CSV of 1,000,000 transfers", "s"),
    ("export", "peak_rss_mb", "export: peak RSS of the process", "MB"),
    ("export", "lines", "export: CSV lines", ""),
]


# The variant probes: ours in two configurations, each state's figures
# recorded as "<state>_<figure>" (bare pyftpdlib's under every state).
VARIANT_PROBES = {
    "defender": (("on", "defender on"), ("off", "defender off")),
    "quota": (("off", "no quota"), ("on", "a quota")),
    "fsync": (("off", "journal, no fsync"), ("on", "journal fsync")),
}
VARIANT_FIGURES = [
    ("stor_per_s", "STOR 4 KiB", "/s"),
    ("retr_per_s", "RETR 4 KiB", "/s"),
    ("size_mdtm_per_s", "SIZE+MDTM", "/s"),
    ("dele_per_s", "DELE", "/s"),
    ("login_ms", "cached login, connect to 230", "ms"),
    ("cycles_per_s", "connect, login, STOR 4 KiB, QUIT", "/s"),
]
SMALL_FILE_KEYS = VARIANT_FIGURES[:4]
FIGURES += [
    (probe, f"{state}_{key}", f"{probe}: {label}, {what}", unit)
    for probe, states in VARIANT_PROBES.items()
    for state, label in states
    for key, what, unit in VARIANT_FIGURES
]


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def rst_table(header, rows):
    """Return a reStructuredText simple table."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(row):
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


class Results:
    """Samples per (probe, key, server), and notes."""

    def __init__(self):
        self.samples = {}
        self.notes = []
        self.details = {}

    def add(self, probe, server, figures):
        for key, value in figures.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.samples.setdefault((probe, key, server), []).append(value)

    def median(self, probe, key, server):
        values = self.samples.get((probe, key, server))
        return statistics.median(values) if values else None

    def count(self, probe, key, server):
        return len(self.samples.get((probe, key, server), ()))


def figures_table(results, servers, rounds):
    shown = [s for s in SERVERS if s in servers]
    ratio_of = [s for s in shown if s != "bare"] if "bare" in shown else []
    header = ["figure", "unit", *shown, *[f"{s}/bare" for s in ratio_of]]
    rows, single = [], False
    for probe, key, label, unit in FIGURES:
        values = {s: results.median(probe, key, s) for s in shown}
        if all(v is None for v in values.values()):
            continue
        cells = []
        for s in shown:
            cell = fmt(values[s])
            n = results.count(probe, key, s)
            if values[s] is not None and n < rounds and probe not in ("export",):
                cell += f" ({n})"
                single = True
            cells.append(cell)
        bare = values.get("bare")
        ratios = []
        for s in ratio_of:
            v = values[s]
            ratios.append(f"{v / bare:.2f}x" if v is not None and bare else "-")
        rows.append([label, unit, *cells, *ratios])
    table = rst_table(header, rows)
    if single:
        table += "\n\n(n): a median of n rounds, fewer than the others (see the notes)."
    return table


def _ratio(results, probe, key, server):
    ours, bare = results.median(probe, key, server), results.median(probe, key, "bare")
    if ours is None or not bare:
        return None
    return ours / bare


def targets(results):
    """Return [(target, threshold, {ours server: (measured text, met)})]."""
    out = []

    def each(fn):
        return {s: fn(s) for s in OURS}

    def simple(probe, key, limit, unit, lower=True):
        def fn(s):
            v = results.median(probe, key, s)
            if v is None:
                return None
            return f"{fmt(v)} {unit}".strip(), (v <= limit if lower else v >= limit)

        return fn

    out.append(
        (
            "idle client's NOOP p99 while 16 clients log in, 8 at a time",
            "<= 20 ms",
            each(simple("stall", "noop_p99_ms", 20, "ms")),
        )
    )

    def logins_fn(s):
        burst = results.median("logins", "burst_s", s)
        ratio = results.median("logins", "burst_vs_limit", s)
        limit = results.median("logins", "hasher_limit_s", s)
        if burst is None or ratio is None:
            return None
        return f"{fmt(burst)} s = {ratio:.2f}x limit {fmt(limit)} s", ratio <= 1.15

    out.append(
        (
            "100 concurrent logins, PBKDF2, credential cache off",
            "<= 1.15x hasher limit",
            each(logins_fn),
        )
    )
    out.append(
        (
            "100 concurrent repeat logins, same account, cache on",
            "<= 0.5 s",
            each(simple("logins", "cached_burst_s", 0.5, "s")),
        )
    )
    for key, what in [
        ("stor_per_s", "STOR"),
        ("retr_per_s", "RETR"),
        ("size_mdtm_per_s", "SIZE+MDTM"),
        ("dele_per_s", "DELE"),
    ]:
        out.append(
            (
                f"smallops {what} 4 KiB, auditing on",
                ">= 0.90x bare",
                each(_ratio_fn(results, "smallops", key, 0.90, lower=False)),
            )
        )
    out.append(
        (
            "a cached login, connect to 230 (latency)",
            "<= 3x bare",
            each(_ratio_fn(results, "sessions", "login_ms", 3.0, lower=True)),
        )
    )
    out.append(
        (
            "connect, login, STOR 4 KiB, QUIT (cycles/s)",
            ">= 0.5x bare",
            each(_ratio_fn(results, "sessions", "cycles_per_s", 0.5, lower=False)),
        )
    )
    for key, what in [("stor_mb_s", "STOR"), ("retr_mb_s", "RETR")]:
        out.append(
            (
                f"ftpbench {what} of a large file (MB/s)",
                ">= 0.95x bare",
                each(_ratio_fn(results, "ftpbench", key, 0.95, lower=False)),
            )
        )
    for key, what in [("retr_s", "RETR"), ("stor_s", "STOR")]:
        out.append(
            (
                f"100 clients {what} 10 MiB at once (time)",
                "<= 1.10x bare",
                each(_ratio_fn(results, "transfers", key, 1.10, lower=True)),
            )
        )

    out.append(
        (
            "a login while 150 connections from one address fail and drop",
            "<= 2x the login alone",
            each(simple("flood", "ratio", 2.0, "x")),
        )
    )

    def idle_fn(s):
        served = results.median("idle", "served", s)
        rss = results.median("idle", "rss_peak_mb", s)
        if served is None:
            return None
        return (
            f"{served:.0f} served, {fmt(rss)} MB peak",
            served >= 1000 and rss <= 150,
        )

    out.append(
        ("1000 logged-in idle clients", "all served, RSS <= 150 MB", each(idle_fn))
    )
    out.append(
        (
            "admin audit changelist, filtered, 1,000,000 records (slowest filter)",
            "< 300 ms",
            each(simple("admin", "filter_worst_ms", 299.999, "ms")),
        )
    )

    def export_fn(s):
        t = results.median("export", "csv_s", s)
        m = results.median("export", "peak_rss_mb", s)
        if t is None:
            return None
        return f"{fmt(t)} s, peak {fmt(m)} MB", t < 60 and m < 200

    out.append(
        (
            "streaming CSV export of 1,000,000 transfers",
            "< 60 s, peak < 200 MB",
            each(export_fn),
        )
    )

    for key, what in [("stor_per_s", "STOR"), ("cycles_per_s", "short-session cycles")]:
        out.append(
            (
                f"--workers 2, 8 clients: {what} 4 KiB (bare: a prefork of 2)",
                ">= 0.90x bare",
                each(_ratio_fn(results, "parallel", key, 0.90, lower=False)),
            )
        )
    for key, what in [("stor_per_s", "STOR"), ("retr_per_s", "RETR")]:
        out.append(
            (
                f"FTPS {what} 4 KiB, PROT P, a TLS handshake per file",
                ">= 0.90x bare",
                each(_ratio_fn(results, "ftps", key, 0.90, lower=False)),
            )
        )
    for probe, states in VARIANT_PROBES.items():
        for state, label in states:
            if (probe, state) == ("fsync", "on"):
                continue  # a disk flush per event: figures only, no target
            out.append(
                (
                    f"{label}: small files (the lowest of STOR, RETR, SIZE+MDTM, DELE)",
                    ">= 0.90x bare",
                    each(_worst_ratio_fn(results, probe, state, 0.90)),
                )
            )
            out.append(
                (
                    f"{label}: connect, login, STOR 4 KiB, QUIT",
                    ">= 0.5x bare",
                    each(
                        _ratio_fn(
                            results, probe, f"{state}_cycles_per_s", 0.5, lower=False
                        )
                    ),
                )
            )

    def prefork_fn(s):
        w1 = results.median("prefork", "w1_stor_s", s)
        w2 = results.median("prefork", "w2_stor_s", s)
        if w1 is None or w2 is None:
            return None
        return f"{fmt(w1)} s / {fmt(w2)} s = {w1 / w2:.2f}x", w1 / w2 >= 1.4

    out.append(
        (
            "--workers 2 vs 1: 100 clients STOR 10 MiB at once",
            ">= 1.4x faster",
            each(prefork_fn),
        )
    )
    return out


def _ratio_fn(results, probe, key, limit, lower):
    def fn(s):
        r = _ratio(results, probe, key, s)
        if r is None:
            return None
        v = results.median(probe, key, s)
        return f"{fmt(v)} = {r:.2f}x", (r <= limit if lower else r >= limit)

    return fn


def _worst_ratio_fn(results, probe, state, limit):
    """The lowest ratio to bare of a variant's small-file rates."""

    def fn(s):
        ratios = [
            (_ratio(results, probe, f"{state}_{key}", s), what)
            for key, what, _ in SMALL_FILE_KEYS
        ]
        ratios = [(r, what) for r, what in ratios if r is not None]
        if not ratios:
            return None
        r, what = min(ratios)
        return f"{what.split()[0]} {r:.2f}x", r >= limit

    return fn


def targets_table(results, servers):
    shown = [s for s in OURS if s in servers]
    rows = []
    for target, threshold, by_server in targets(results):
        cells = []
        measured = False
        for s in shown:
            got = by_server.get(s)
            if got is None:
                cells.append("-")
                continue
            measured = True
            text, ok = got
            cells.append(f"{text} {'met' if ok else 'MISSED'}")
        if measured:
            rows.append([target, threshold, *cells])
    if not rows:
        return ""
    return rst_table(["target", "threshold", *shown], rows)


def admin_table(details):
    """One row per changelist case: median ms per database."""
    dbs = [s for s in OURS if s in details]
    if not dbs:
        return ""
    names = [c["name"] for c in details[dbs[0]]["cases"]]
    rows = []
    for name in names:
        row = [name]
        for s in dbs:
            case = next(c for c in details[s]["cases"] if c["name"] == name)
            row.append(f"{fmt(case['median_ms'])} ms ({case['queries']} queries)")
        kind = next(c for c in details[dbs[0]]["cases"] if c["name"] == name)["kind"]
        rows.append([name, kind, *row[1:]])
    return rst_table(["changelist case", "kind", *dbs], rows)
