"""The ``FTPSERVER_*`` settings, read lazily at access time.

Every setting lives in :data:`DEFAULTS` with its default; a project overrides it
in its Django settings with the ``FTPSERVER_`` prefix (``FTPSERVER_PORT = 21``).
Values are read at first access and re-read after ``override_settings``.
The ``ftpserver`` command's options win over these settings.
"""

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS = {
    # Address the ``ftpserver`` command listens on when none is given.
    "HOST": "127.0.0.1",
    "PORT": 2121,
    # Several listeners, each with its own TLS and PROXY protocol mode (see
    # ftpserver_core.listeners): e.g. ["0.0.0.0:21", "0.0.0.0:990,tls=implicit",
    # "10.0.0.5:2121,proxy=required"]. None: one listener on HOST:PORT.
    "LISTENERS": None,
    # The networks of the load balancers allowed to send a PROXY protocol
    # header (listeners with proxy=optional|required), e.g. ["10.0.0.0/8"].
    "PROXY_TRUSTED": (),
    # Seconds a trusted proxy has to send the header of a connection.
    "PROXY_TIMEOUT": 5.0,
    # Passive data ports: None (kernel picks), "30000-30100", "12345,30000-30100"
    # or an iterable of ints.
    "PASSIVE_PORTS": None,
    # When every passive port is in use: False answers PASV/EPSV with 425;
    # True falls back to a port the kernel picks, outside the range (which a
    # firewall that opens only the range then blocks).
    "PASSIVE_PORTS_FALLBACK": False,
    # Public address announced in PASV replies when the server is behind NAT.
    "MASQUERADE_ADDRESS": None,
    # TLS certificate chain and private key (PEM). With a certificate the TLS
    # handler is used; KEYFILE may be None when CERTFILE holds the key too.
    "CERTFILE": None,
    "KEYFILE": None,
    # With TLS on, require it on the control and the data channel (RFC 4217).
    "TLS_REQUIRED": True,
    # Oldest TLS version accepted: "TLSv1.2" or "TLSv1.3".
    "TLS_MIN_VERSION": "TLSv1.2",
    # Refuse a PROT P data connection that does not resume the control
    # connection's TLS session (vsftpd's require_ssl_reuse), so that another
    # client behind the same address cannot take a session's transfer. Both
    # channels then use TLS 1.2 (with TLS_MIN_VERSION "TLSv1.2" only). Off by
    # default: Python's ftplib does not reuse sessions; lftp and curl do.
    "TLS_REQUIRE_SESSION_REUSE": False,
    # Dotted paths of the handler classes (the signal contract's names).
    "HANDLER": "ftpserver_core.handlers.DjangoFTPHandler",
    "TLSHANDLER": "ftpserver_core.handlers.DjangoTLS_FTPHandler",
    # Seconds a client may stay idle between commands before it is kicked off.
    "TIMEOUT": 300,
    # Connections the server serves at once, and per client IP (None: no limit).
    # Sessions count from accept to close, logged in or not.
    "MAX_CONNECTIONS": 512,
    "MAX_CONNECTIONS_PER_IP": 20,
    # Logins in progress (waiting for or being checked) per client address
    # (IPv6: per /64); past it a login is answered 421 at once (None: no
    # cap). Room for a client that opens its connections in parallel
    # (rclone, FileZilla); however many wait, one address is checked on at
    # most half the worker threads while others wait, so their logins do
    # not queue behind it.
    "LOGINS_PER_ADDRESS": 10,
    # Logins waiting for a worker thread at most; past it 421 at once.
    "LOGIN_QUEUE": 256,
    # Seconds a connection may take to log in before it is closed (421).
    "LOGIN_GRACE": 60,
    # --- the defender (ftpserver_core/defender): scores, bans, lists.
    # Score and ban misbehaving addresses. Bans and the blocklist made in the
    # admin are enforced either way.
    "DEFENDER_ENABLED": True,
    # Points within DEFENDER_WINDOW seconds that ban an address (IPv6: /64).
    "DEFENDER_THRESHOLD": 15,
    "DEFENDER_WINDOW": 1800,
    # Points per misdeed; merged into the defaults: unknown_user 2,
    # wrong_password 1, no_login 1 (a connection closed without a login),
    # abuse 3 (an over-long command line), limit_exceeded 3 (a connection or
    # login limit hit).
    "DEFENDER_SCORES": None,
    # Seconds of a first ban; each repeat offence (within 30 days) adds
    # DEFENDER_BAN_GROWTH percent (0: every ban as long), up to
    # DEFENDER_MAX_BAN_TIME.
    "DEFENDER_BAN_TIME": 1800,
    "DEFENDER_BAN_GROWTH": 100,
    "DEFENDER_MAX_BAN_TIME": 7 * 86400,
    # Networks never scored nor banned, besides the admin's safelist.
    "DEFENDER_SAFELIST": (),
    # Failed logins of one user name (from any address) within the window
    # before its next logins wait: 1 s, then doubling per failure, up to
    # DEFENDER_USERNAME_MAX_DELAY seconds. Never a lock.
    "DEFENDER_USERNAME_THRESHOLD": 10,
    "DEFENDER_USERNAME_MAX_DELAY": 30.0,
    # Seconds between two polls of the database for bans and lists made
    # elsewhere (another process, another node, the admin).
    "DEFENDER_POLL_INTERVAL": 1.0,
    # Seconds between two audit records of refused connections of one
    # address for one reason.
    "DEFENDER_REFUSED_LOG_INTERVAL": 60,
    # --- shared state (ftpserver_core/state): what holds across processes
    # and nodes (live sessions, session limits, quotas, bandwidth shares,
    # disconnects). "database" (every process sharing the database, the
    # default) or "memory" (one process only: the admin then sees no live
    # sessions), or the dotted path of a StateBackend subclass.
    "STATE_BACKEND": "database",
    # Seconds between two rounds of the state thread: disconnects requested
    # anywhere reach their session within about this (PostgreSQL pushes
    # them sooner with LISTEN/NOTIFY), live sessions' details are refreshed.
    "STATE_POLL_INTERVAL": 1.0,
    # Seconds between two heartbeats of a process, and after which a process
    # that has not sent one counts as dead: its sessions and quota leases
    # stop counting, and the admin shows its sessions as lost.
    "STATE_HEARTBEAT": 5.0,
    "STATE_EXPIRY": 15.0,
    # Logged-in sessions from one client address (IPv6: its /64) on every
    # process and node together; past it a login is refused. None: the value
    # of MAX_CONNECTIONS_PER_IP (0: no limit).
    "MAX_SESSIONS_PER_ADDRESS": None,
    # End an account's open sessions when it is disabled, expires, is deleted
    # or its user's password changes (False: they run until they end).
    "END_SESSIONS_ON_ACCOUNT_CHANGE": True,
    # --- quotas (ftpserver_core/quotas.py)
    # Room a process reserves at a time within an account's quota (bytes and
    # files): uploads write from it without asking the database; what is
    # left goes back when the account's uploads pause.
    "QUOTA_LEASE_BYTES": 8 * 1024 * 1024,
    "QUOTA_LEASE_FILES": 16,
    # --- bandwidth (ftpserver_core/bandwidth.py)
    # Seconds of an account's rate its transfers may send in one burst.
    "BANDWIDTH_BURST": 0.25,
    # --- anonymous FTP (ftpserver_core/anonymous.py): off unless both are set.
    # True lets "anonymous" and "ftp" log in with any password (recorded as
    # their e-mail address) to ANONYMOUS_HOME, read-only.
    "ANONYMOUS_ENABLED": False,
    "ANONYMOUS_HOME": None,
    # Anonymous sessions at once (every process and node), and per address.
    "ANONYMOUS_MAX_SESSIONS": 50,
    "ANONYMOUS_MAX_SESSIONS_PER_ADDRESS": 2,
    # Download limit of all anonymous sessions together, bytes/s (None: none).
    "ANONYMOUS_DOWNLOAD_RATE": None,
    # Greeting sent on connect (220 reply), one line. Says nothing about the
    # version. Left unset, a FTPSERVER_HANDLER subclass's own banner stays
    # (so do its timeout, max_login_attempts, auth_failed_timeout and
    # permit_foreign_addresses against TIMEOUT, MAX_LOGIN_ATTEMPTS,
    # AUTH_FAILED_DELAY and PERMIT_FOREIGN_ADDRESSES left unset).
    "BANNER": "FTP server ready.",
    # Written with the server's PID at start, removed at exit.
    "PIDFILE": None,
    # The unprivileged user (name or uid) the server becomes once its port is
    # bound, when started as root, so that port 21 leaves no root process;
    # GROUP (name or gid) defaults to that user's own group. None: no drop
    # (a server started as root then warns that it runs as root).
    "USER": None,
    "GROUP": None,
    # Permission letters (pyftpdlib's "elradfmwMT") of an account whose own
    # and group's permissions are both blank.
    "DEFAULT_PERMISSION": "elr",
    # Home directory template for accounts with none of their own or their
    # group's: "/srv/ftp/{username}". None: such accounts cannot log in.
    "DEFAULT_HOME": None,
    # Absolute directories every home must be inside (or be), e.g.
    # ["/srv/ftp"]: checked when a home template is saved and again at login
    # on the real path (symlinks resolved). None: anywhere but /, directly
    # under / and the system directories (/etc, /usr, /var ... except /var/ftp).
    # A root may be a service's own directory below /var (/var/lib/app/homes),
    # which homes may then use.
    "HOME_ROOTS": None,
    # Mode of home directories created on first login (in the environment:
    # octal digits, FTPSERVER_HOME_DIR_MODE=750).
    "HOME_DIR_MODE": 0o750,
    # Processes accepting on the same port, each with its own IO loop (prefork).
    "WORKERS": 1,
    # Threads that verify passwords and load policies off the IO loop.
    # None: one per CPU core (at least 2).
    "AUTH_WORKERS": None,
    # Seconds a verified password is remembered, so repeat logins skip the
    # password hash (a password change forgets it at once). 0: off.
    "CREDENTIAL_CACHE_TTL": 300,
    # Seconds before a failed login is answered (slows password guessing).
    "AUTH_FAILED_DELAY": 3.0,
    # Failed logins on one connection before it is closed.
    "MAX_LOGIN_ATTEMPTS": 3,
    # Use sendfile(2) for plain-FTP downloads.
    "USE_SENDFILE": True,
    # Allow FXP (data connections to another host than the client's).
    "PERMIT_FOREIGN_ADDRESSES": False,
    # This server's name in audit records. None: the host name.
    "NODE_NAME": None,
    # Write every FTP event to the audit table (the built-in receivers).
    "AUDIT_ENABLED": True,
    # Event types to record (AuditEvent.Event values). None: all of them.
    "AUDIT_EVENTS": None,
    # The audit writer inserts every AUDIT_INTERVAL seconds, or sooner once
    # AUDIT_BATCH_SIZE records wait. Few large batches cost the FTP loop less
    # than many small ones (tests/benchmarks: DELE of small files at 0.49x
    # bare pyftpdlib with 500 on PostgreSQL, 0.94x with 5000).
    "AUDIT_INTERVAL": 0.2,
    "AUDIT_BATCH_SIZE": 5000,
    # Records kept in memory at most; past it the writer reads them back
    # from the journal.
    "AUDIT_MAX_QUEUE": 100_000,
    # Quick retries of a failed insert before the database counts as down
    # (then records wait in the journal and the database is probed each
    # second with a cheap query).
    "AUDIT_RETRIES": 3,
    # Directory of the audit journal, where every record is written before
    # its reply leaves and kept until the database has it. It belongs to one
    # project: None derives it from the settings' DATA_DIR (the suite:
    # FTPADMIN_DATA_DIR/audit-journal) or BASE_DIR (BASE_DIR/var/audit-journal).
    "AUDIT_JOURNAL_DIR": None,
    # fsync() the journal before each reply: records also survive a power
    # loss, at the cost of a disk flush per acknowledged event.
    "AUDIT_FSYNC": False,
    # The former name of AUDIT_JOURNAL_DIR, still read when that is unset.
    "AUDIT_SPOOL_DIR": None,
    # Seconds a data connection may make no progress before it is closed
    # (426) and its transfer recorded incomplete. 0: never.
    "DATA_TIMEOUT": 120,
    # "direct": uploads are written in place, as classic FTP servers do.
    # "atomic": a fresh upload is written to a hidden temporary file in the
    # same directory and renamed to its name once complete, so nothing
    # watching the directory sees a partial file (drop folders). Not the
    # default: it costs large uploads (ftpbench STOR 0.84x bare against
    # 0.97x, docs/performance.rst).
    "UPLOAD_MODE": "direct",
    # Compute each transfer's SHA-256 as it streams (audit records, HASH
    # answered from it). Off by default: hashing on the IO loop costs a large
    # upload about half its speed on a 2-core machine (docs/performance.rst).
    # The HASH command works either way.
    "DIGESTS": False,
    # Seconds within which a login is answered, whatever the database does
    # (421 when it does not answer in time).
    "LOGIN_TIMEOUT": 10.0,
    # Seconds a stop (SIGTERM, Ctrl-C) may take; what the database has not
    # taken by then stays in the journal for the next start.
    "SHUTDOWN_TIMEOUT": 10.0,
    # Seconds the server's database connections may take to connect and to
    # run one statement (PostgreSQL connect_timeout and statement_timeout,
    # SQLite's busy timeout), when the DATABASES OPTIONS set none.
    "DATABASE_TIMEOUT": 5.0,
    # --- observability (ftpserver_core/metrics, ftpserver_core/logs.py)
    # "HOST:PORT" of the HTTP endpoint serving Prometheus metrics at
    # /metrics and a load balancer's health check at /health (None: off).
    # Needs prometheus-client (django-ftpserver-suite[metrics]). It has no
    # authentication: bind it to a monitoring network, not the Internet.
    "METRICS_ADDRESS": None,
    # Seconds the oldest audit record may wait for the database before
    # /health answers 503 (the journal keeps it safe; the node is unhealthy).
    "HEALTH_MAX_AUDIT_LAG": 60,
    # The FTP process's log lines: "text" (as configured in LOGGING) or
    # "json" (one JSON object per line, for log shippers).
    "LOG_FORMAT": "text",
}


class Settings:
    """Read ``FTPSERVER_<NAME>`` from Django settings, falling back to DEFAULTS.

    A value is looked up on first access and then kept, because the audit
    receivers read settings for every FTP event; ``override_settings`` (and
    anything else that sends ``setting_changed``) clears the kept values.
    """

    prefix = "FTPSERVER_"
    # Bumped at every clear(): what is built from settings can tell it is stale.
    generation = 0

    def __getattr__(self, name):
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown setting {self.prefix}{name}.")
        value = getattr(django_settings, self.prefix + name, DEFAULTS[name])
        self.__dict__[name] = value
        return value

    def is_set(self, name):
        """Return True when the project's settings name ``FTPSERVER_<name>``."""
        return hasattr(django_settings, self.prefix + name)

    def as_dict(self):
        """Return every setting with its current value."""
        return {name: getattr(self, name) for name in DEFAULTS}

    def clear(self):
        """Forget the kept values, so the next access reads Django settings."""
        self.__dict__.clear()
        Settings.generation += 1


settings = Settings()


@receiver(setting_changed)
def _setting_changed(setting, **kwargs):
    if setting.startswith(Settings.prefix):
        settings.clear()
