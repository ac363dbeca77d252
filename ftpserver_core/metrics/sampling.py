"""Gauges read from a server's state: at scrape time, or each second in a worker."""

import logging
import threading
import time

from pyftpdlib.handlers.ftp.data import DTPHandler
from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP

from .. import audit
from . import registry

logger = logging.getLogger("ftpserver_core.metrics")

# Seconds between two samples of a prefork worker.
INTERVAL = 1.0


def sample(server):
    """Set the gauges from ``server`` (any thread: only reads, each retried)."""
    # Connections awaiting their PROXY header count as open (as for the limit).
    pending = getattr(server, "proxy_pending", 0)
    registry.CONNECTIONS_OPEN.set(len(server.ip_map) + pending)
    ports = server.options.passive_ports
    registry.PASSIVE_PORTS.set(len(ports) if ports else 0)
    registry.PASSIVE_PORTS_IN_USE.set(_passive_in_use(server, ports))
    registry.BANS_ACTIVE.set(_bans_active(server.defender))
    writer = audit.writer
    registry.AUDIT_QUEUE.set(writer.pending())
    registry.AUDIT_SEGMENTS.set(writer.journal_segments())
    registry.AUDIT_LAG.set(writer.lag())


def _snapshot(items):
    # The loop may change a dict while this thread copies it: try again.
    for _ in range(5):
        try:
            return list(items())
        except RuntimeError:
            continue
    return []


def _passive_in_use(server, ports):
    channels = _snapshot(server.ioloop.socket_map.values)
    if not ports:
        return sum(isinstance(c, PassiveDTP) for c in channels)
    wanted = frozenset(ports)
    count = 0
    for channel in channels:
        if isinstance(channel, PassiveDTP | DTPHandler):
            try:
                port = channel.socket.getsockname()[1]
            except (AttributeError, OSError, IndexError):
                continue
            count += port in wanted
    return count


def _bans_active(defender):
    if defender is None:
        return 0
    now = time.time()
    bans = _snapshot(defender.bans.items)
    return sum(
        1 for _, ban in bans if ban.get("expires") is None or ban["expires"] > now
    )


def start_sampler(server):
    """Sample ``server`` each second until it stops, in a daemon thread."""

    def run():
        while True:
            try:
                sample(server)
            except Exception:
                logger.exception("Sampling the FTP server's metrics failed.")
            if server.stopped.wait(INTERVAL):
                return

    thread = threading.Thread(target=run, name="ftpserver-metrics", daemon=True)
    thread.start()
    return thread
