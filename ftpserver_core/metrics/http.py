"""The HTTP endpoint: GET /metrics (Prometheus text) and GET /health (JSON)."""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger("ftpserver_core.metrics")

# Seconds a /health answer is given again. Each check opens a database
# connection (health.py), one at a time: 200 requests a second from anyone
# reaching the port made 200 connections a second, and the requests' threads
# piled up behind the check in progress. A balancer asks every few seconds.
HEALTH_REUSE = 1.0


class RequestHandler(BaseHTTPRequestHandler):
    """Answer /metrics and /health from ``server.observer``."""

    server_version = "ftpserver-metrics"
    # A scraper or a load balancer that stalls must not hold a thread.
    timeout = 10

    def do_GET(self):  # noqa: N802  (http.server's name)
        path = self.path.split("?", 1)[0]
        observer = self.server.observer
        try:
            if path == "/metrics":
                content_type, body = observer.exposition()
                self._send(200, content_type, body)
            elif path == "/health":
                healthy, report = self.server.health()
                self._send(
                    200 if healthy else 503,
                    "application/json",
                    json.dumps(report).encode() + b"\n",
                )
            else:
                self._send(
                    404,
                    "text/plain; charset=utf-8",
                    b"Not found: try /metrics or /health.\n",
                )
        except Exception:
            logger.exception("The metrics endpoint failed to answer %s.", path)
            self._send(
                500, "text/plain; charset=utf-8", b"Internal error; see the log.\n"
            )

    def _send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002  (http.server's name)
        # Scrapes every few seconds: DEBUG, and never on stderr by itself.
        logger.debug("%s %s", self.address_string(), format % args)


class MetricsHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server bound at construction, serving ``observer``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, observer):
        host, port = address
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.observer = observer
        self._health_lock = threading.Lock()
        self._health = None  # (time.monotonic() when answered, answer)
        super().__init__((host, port), RequestHandler)

    def health(self):
        """Return the observer's health answer, shared for HEALTH_REUSE seconds.

        Requests that come during a check wait for it and get its answer.
        """
        with self._health_lock:
            if self._health is not None:
                answered, answer = self._health
                if time.monotonic() - answered < HEALTH_REUSE:
                    return answer
            answer = self.observer.health()
            self._health = (time.monotonic(), answer)
            return answer
