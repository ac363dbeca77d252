"""One process's metrics: the mode, the registry, the endpoint, the cleanup."""

import atexit
import logging
import os
import shutil
import tempfile
import threading

logger = logging.getLogger("ftpserver_core.metrics")


class Observer:
    """The metrics of this ``ftpserver`` process (and, with prefork, its workers)."""

    def __init__(self, options):
        self.options = options
        self.host, self.port = options.metrics_address
        self.multiprocess_dir = None
        self.server = None  # the FTPServer (one process) or the Supervisor
        self._thread = None
        self._parent = os.getpid()
        if options.workers > 1:
            self._make_multiprocess_dir(options)
        from . import receivers, registry

        self.registry = registry.REGISTRY
        receivers.connect()
        if self.multiprocess_dir:
            from prometheus_client import CollectorRegistry

            from .collector import WorkersCollector

            # The parent's own files (made with the metrics above) too.
            self._give_files(options)
            self.registry = CollectorRegistry()
            WorkersCollector(self.registry, self.multiprocess_dir)
        from .http import MetricsHTTPServer

        self.http = MetricsHTTPServer((self.host, self.port), self)
        self.host, self.port = self.http.server_address[:2]
        if self.multiprocess_dir:
            from . import health

            # A fork waits for a health check in progress: no database
            # connection is copied into a worker half used.
            os.register_at_fork(
                before=health.lock.acquire,
                after_in_parent=health.lock.release,
                after_in_child=health.lock.release,
            )

    # --- multiprocess mode

    def _make_multiprocess_dir(self, options):
        self.multiprocess_dir = tempfile.mkdtemp(prefix="ftpserver-metrics-")
        atexit.register(self._remove_dir, os.getpid())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.multiprocess_dir
        from prometheus_client import values

        # Chosen at prometheus-client's import, which may have come earlier
        # (another app of the project): chosen again, before any metric.
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()

    def _give_files(self, options):
        # The workers run as --user: the directory is theirs to write in.
        target = options.identity
        if target is None or os.geteuid() != 0:
            return
        for path in [self.multiprocess_dir, *self._files()]:
            os.chown(path, target.uid, target.gid)

    def _files(self):
        return [
            os.path.join(self.multiprocess_dir, name)
            for name in os.listdir(self.multiprocess_dir)
        ]

    def _remove_dir(self, owner):
        if os.getpid() == owner and self.multiprocess_dir:
            shutil.rmtree(self.multiprocess_dir, ignore_errors=True)

    # --- lifecycle

    def server_built(self, server):
        """A server of this process was built: sampled at scrape time, or each second."""
        if self.multiprocess_dir and os.getpid() != self._parent:
            from .sampling import start_sampler

            start_sampler(server)
        elif self.server is None:
            self.server = server

    def start(self, server):
        """Serve the endpoint from a daemon thread; ``server``: FTPServer or Supervisor."""
        self.server = server
        self._thread = threading.Thread(
            target=self.http.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="ftpserver-metrics-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self):
        """Stop serving and close the address; the directory goes at exit."""
        if self._thread is not None:
            self.http.shutdown()
            self._thread = None
        self.http.server_close()

    def forked(self):
        """In a forked worker: let go of the parent's listening socket."""
        self._thread = None
        try:
            self.http.socket.close()
        except OSError:
            pass

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    # --- answers (the HTTP threads)

    def exposition(self):
        """Return (content type, body) of /metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not self.multiprocess_dir and self.server is not None:
            from .sampling import sample

            sample(self.server)
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def health(self):
        """Return (healthy, body) of /health."""
        from . import health

        workers = None
        if self.multiprocess_dir:
            lag = self._workers_audit_lag()
            children = getattr(self.server, "children", None)
            if children is not None:
                workers = (len(children), self.options.workers)
        else:
            from .. import audit

            lag = audit.writer.lag()
        return health.report(
            audit_lag=lag,
            max_audit_lag=self.options.health_max_audit_lag,
            workers=workers,
        )

    def _workers_audit_lag(self):
        # The largest of the live workers' lag gauges (sampled each second).
        for family in self.registry.collect():
            if family.name == "ftpserver_audit_write_lag_seconds":
                return max((s.value for s in family.samples), default=0.0)
        return 0.0
