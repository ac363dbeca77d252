"""Prometheus metrics and a health check on their own HTTP address.

Off unless ``FTPSERVER_METRICS_ADDRESS`` (or ``ftpserver --metrics``) is set;
then :func:`prepare` imports prometheus-client (the ``metrics`` extra), makes
the metrics, connects their signal receivers and binds the address, and
:meth:`Observer.start` serves ``/metrics`` and ``/health`` from a thread.

With ``--workers N`` the library's multiprocess mode is used: every process
writes its values to files in a private temporary directory the parent
makes before forking, and the parent's endpoint adds them up. Gauges that
read server state (open connections, the audit queue...) are then sampled
each second by every worker; with one process they are read at scrape time.

Nothing here runs on the IO loop but the counters' increments; with metrics
off, the server's classes are the same as without this package.
"""

import importlib.util
import logging
import os

logger = logging.getLogger("ftpserver_core.metrics")

MISSING = (
    "prometheus-client is not installed; install "
    "django-ftpserver-suite[metrics] (pip install 'django-ftpserver-suite[metrics]') "
    "to serve metrics."
)

# The Observer of this process, once prepare() ran.
_observer = None


class MetricsUnavailable(Exception):
    """Metrics are asked for but cannot be served (the message says why)."""


def available():
    """True when prometheus-client can be imported (without importing it)."""
    return importlib.util.find_spec("prometheus_client") is not None


def active():
    """Return this process's Observer, or None when metrics are off."""
    return _observer


def prepare(options):
    """Set metrics up for ``options`` (a ServerOptions); None when they are off.

    Call before the server is built and before privileges are dropped (the
    address is bound here); raise MetricsUnavailable when it cannot be done.
    """
    global _observer
    if options.metrics_address is None:
        return None
    if not available():
        raise MetricsUnavailable(MISSING)
    from .observer import Observer

    _observer = Observer(options)
    return _observer


def handler_bases(base):
    """Return the bases of a server's handler class: the metrics' timers first."""
    if _observer is None:
        return (base,)
    from .handler import MetricsHandlerMixin

    return (MetricsHandlerMixin, base)


def server_built(server):
    """Tell the metrics of a server of this process (servers.build_server)."""
    if _observer is not None:
        _observer.server_built(server)


def process_dead(pid):
    """Forget the live gauges of a worker that exited (prefork)."""
    if _observer is not None and _observer.multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, _observer.multiprocess_dir)


def _forget_in_child():
    # A forked worker serves no endpoint: the parent does.
    if _observer is not None:
        _observer.forked()


os.register_at_fork(after_in_child=_forget_in_child)
