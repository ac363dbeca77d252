"""The metrics. Imported once prometheus-client's mode is chosen (observer.py).

Labels are bounded: command verbs the handler knows (others count as
"other"), and the reasons the signal contract lists. Never a user name nor
a client address.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Served in single-process mode; in multiprocess mode the parent reads the
# workers' files instead (observer.py).
REGISTRY = CollectorRegistry(auto_describe=True)

OTHER = "other"

CONNECTIONS_OPEN = Gauge(
    "ftpserver_connections_open",
    "Control connections open (from accept to close).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CONNECTIONS = Counter(
    "ftpserver_connections",
    "Control connections accepted and greeted.",
    registry=REGISTRY,
)
CONNECTIONS_REFUSED = Counter(
    "ftpserver_connections_refused",
    "Connections refused before or instead of a login, by reason.",
    ["reason"],
    registry=REGISTRY,
)
LOGINS = Counter(
    "ftpserver_logins",
    "Logins by result (success, failed) and failure reason (none on success).",
    ["result", "reason"],
    registry=REGISTRY,
)
LOGIN_SECONDS = Histogram(
    "ftpserver_login_duration_seconds",
    "Seconds from PASS received to the login's verdict (before any "
    "failed-login delay).",
    ["result"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
COMMAND_SECONDS = Histogram(
    "ftpserver_command_duration_seconds",
    "Seconds the IO loop spent on a command (a transfer's data and a "
    "login's check run later, elsewhere), by verb.",
    ["command"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5),
    registry=REGISTRY,
)
TRANSFER_BYTES = Counter(
    "ftpserver_transfer_bytes",
    "File bytes transferred (complete and incomplete transfers), by direction.",
    ["direction"],
    registry=REGISTRY,
)
FILES = Counter(
    "ftpserver_files",
    "Files transferred completely, by direction.",
    ["direction"],
    registry=REGISTRY,
)
TRANSFERS = Counter(
    "ftpserver_transfers",
    "File transfers by direction and result (completed, or why not).",
    ["direction", "result"],
    registry=REGISTRY,
)
QUOTA_REFUSALS = Counter(
    "ftpserver_quota_refusals",
    "Uploads refused or cut short by a quota or the maximum upload size.",
    ["reason"],
    registry=REGISTRY,
)
BANS_ACTIVE = Gauge(
    "ftpserver_bans_active",
    "Addresses and networks banned now (shared by every process).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
PASSIVE_PORTS_IN_USE = Gauge(
    "ftpserver_passive_ports_in_use",
    "Ports of FTPSERVER_PASSIVE_PORTS held by a listener or a data "
    "connection (without a range: passive listeners open).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PASSIVE_PORTS = Gauge(
    "ftpserver_passive_ports",
    "Ports in FTPSERVER_PASSIVE_PORTS (0: the kernel picks).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
AUDIT_QUEUE = Gauge(
    "ftpserver_audit_queue_records",
    "Audit records waiting in memory for the database.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
AUDIT_SEGMENTS = Gauge(
    "ftpserver_audit_journal_segments",
    "Audit journal segment files held (more than one: a backlog to write).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
AUDIT_LAG = Gauge(
    "ftpserver_audit_write_lag_seconds",
    "Seconds the oldest audit record not yet in the database has waited.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
