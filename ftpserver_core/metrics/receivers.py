"""Counters fed by the FTP signals (connected only when metrics are on).

They run on the IO loop: each is a dict lookup and an increment.
"""

from time import perf_counter

from .. import signals
from . import registry

UPLOAD, DOWNLOAD = "upload", "download"


def _bounded(value, allowed):
    return value if value in allowed else registry.OTHER


def _connected(sender, **kwargs):
    registry.CONNECTIONS.inc()


def _refused(sender, reason=None, **kwargs):
    registry.CONNECTIONS_REFUSED.labels(
        _bounded(reason, signals.CONNECTION_REFUSAL_REASONS)
    ).inc()


def _login_time(handler, result):
    started = getattr(handler, "metrics_pass_at", None)
    if started is None:
        return
    handler.metrics_pass_at = None
    ended = getattr(handler, "metrics_verdict_at", None) or perf_counter()
    registry.LOGIN_SECONDS.labels(result).observe(max(0.0, ended - started))


def _login(sender, handler=None, **kwargs):
    registry.LOGINS.labels("success", "none").inc()
    _login_time(handler, "success")


def _login_failed(sender, handler=None, reason=None, **kwargs):
    registry.LOGINS.labels(
        "failed", _bounded(reason, signals.LOGIN_FAILURE_REASONS)
    ).inc()
    _login_time(handler, "failed")


def _transfer(direction, completed):
    def receiver(sender, size=0, reason=None, **kwargs):
        registry.TRANSFER_BYTES.labels(direction).inc(size or 0)
        if completed:
            registry.FILES.labels(direction).inc()
            result = "completed"
        else:
            result = _bounded(reason, signals.TRANSFER_FAILURE_REASONS)
        registry.TRANSFERS.labels(direction, result).inc()

    receiver.__name__ = f"_{direction}_{'completed' if completed else 'incomplete'}"
    return receiver


def _quota(sender, reason=None, **kwargs):
    registry.QUOTA_REFUSALS.labels(_bounded(reason, signals.QUOTA_REASONS)).inc()


RECEIVERS = {
    signals.ftp_client_connected: _connected,
    signals.ftp_connection_refused: _refused,
    signals.ftp_login: _login,
    signals.ftp_login_failed: _login_failed,
    signals.ftp_file_received: _transfer(UPLOAD, True),
    signals.ftp_file_received_incomplete: _transfer(UPLOAD, False),
    signals.ftp_file_sent: _transfer(DOWNLOAD, True),
    signals.ftp_file_sent_incomplete: _transfer(DOWNLOAD, False),
    signals.ftp_quota_exceeded: _quota,
}


def connect():
    """Connect the metrics' receivers (idempotent)."""
    for signal, receiver in RECEIVERS.items():
        signal.connect(
            receiver, weak=False, dispatch_uid=f"ftpserver-metrics-{id(signal)}"
        )


def disconnect():
    """Disconnect them (tests)."""
    for signal in RECEIVERS:
        signal.disconnect(dispatch_uid=f"ftpserver-metrics-{id(signal)}")
