"""The HTTP endpoint: GET /metrics (Prometheus text) and GET /health (JSON)."""

import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger("ftpserver_core.metrics")


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
                healthy, report = observer.health()
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
        super().__init__((host, port), RequestHandler)
