"""Serve the admin under waitress, a production WSGI server (like runserver)."""

import io
import signal
import socket
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import django
from django.conf import settings
from django.contrib.staticfiles.management.commands import collectstatic
from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError
from django.core.wsgi import get_wsgi_application
from django.db import connections

from ftpserver_core.options import BIND_ERRORS, OptionError, parse_address

# Proof that the admin's static files are collected.
SENTINEL = Path("admin") / "css" / "base.css"


class Stop(SystemExit):
    """Raised by SIGTERM in the main thread: waitress's loop ends on it."""


class Command(BaseCommand):
    help = (
        "Serve the admin with waitress (a production WSGI server) and its static "
        "files with WhiteNoise, after the system checks and collectstatic."
    )

    # Checks run in handle(), with the deployment ones, like runserver.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "addrport",
            nargs="?",
            default="127.0.0.1:8000",
            help="HOST:PORT, PORT or [IPv6]:PORT (default 127.0.0.1:8000).",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=4,
            help="Threads serving requests (default 4); each keeps a database "
            "connection.",
        )
        parser.add_argument(
            "--trusted-proxy",
            metavar="ADDRESS",
            help="Address of a reverse proxy whose X-Forwarded-Proto and "
            "X-Forwarded-For headers are believed (e.g. 127.0.0.1).",
        )
        parser.add_argument(
            "--no-collectstatic",
            action="store_true",
            help="Do not run collectstatic at start (STATIC_ROOT must be "
            "collected already, e.g. read-only in an image).",
        )

    def handle(self, *args, addrport, threads, trusted_proxy, no_collectstatic, **kw):
        try:
            host, port = parse_address(addrport, "127.0.0.1")
        except OptionError as exc:
            raise CommandError(exc.message) from None
        if threads < 1:
            raise CommandError(f"--threads {threads}: expected 1 or more.")

        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        # Django's deployment checks of the web side (HTTPS, cookies, DEBUG);
        # the FTP server's own run in the ftpserver command.
        self.check(tags=[Tags.security], include_deployment_checks=True)

        static = self._static_files(collect=not no_collectstatic)
        server = self._create_server(host, port, threads, trusted_proxy)
        # The checks' connections belong to this thread; requests open their own.
        connections.close_all()
        previous = self._install_signal_handlers()
        self._print_banner(server, threads, trusted_proxy, static)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            # run() has ended its loop; close the listening sockets too.
            server.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.stdout.write("Admin web server stopped.")

    def _static_files(self, collect):
        """Collect the static files (only what changed); return a summary."""
        root = Path(settings.STATIC_ROOT)
        if collect:
            # collectstatic copies only files newer than their copy: cheap at
            # every start, and an upgrade's new CSS is never served stale.
            collector = collectstatic.Command(stdout=io.StringIO())
            defaults = vars(collector.create_parser("", "collectstatic").parse_args([]))
            collector.set_options(**{**defaults, "interactive": False, "verbosity": 0})
            try:
                collected = collector.collect()
            except OSError as exc:
                raise CommandError(
                    f"Cannot collect the static files into STATIC_ROOT "
                    f"{str(root)!r}: {exc.strerror} ({exc.filename!r}). Run "
                    "'ftpadmin collectstatic' as a user who may write there, or "
                    "set STATIC_ROOT to a writable directory."
                ) from None
            return (
                f"{len(collected['modified'])} copied, "
                f"{len(collected['unmodified'])} unchanged, in '{root}'"
            )
        if not (root / SENTINEL).is_file():
            raise CommandError(
                f"STATIC_ROOT {str(root)!r} has no collected static files (no "
                f"{str(SENTINEL)!r}): run 'ftpadmin collectstatic', or start "
                "without --no-collectstatic."
            )
        return f"in '{root}' (not checked for changes)"

    def _create_server(self, host, port, threads, trusted_proxy):
        from waitress.server import create_server

        proxy = {}
        if trusted_proxy:
            proxy = {
                "trusted_proxy": trusted_proxy,
                "trusted_proxy_headers": {"x-forwarded-proto", "x-forwarded-for"},
                "clear_untrusted_proxy_headers": True,
            }
        try:
            return create_server(
                get_wsgi_application(),
                host=host,
                port=port,
                threads=threads,
                ident="ftpadmin",
                **proxy,
            )
        except socket.gaierror as exc:
            raise CommandError(f"Cannot resolve {host!r}: {exc.strerror}.") from None
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            message = BIND_ERRORS.get(exc.errno, exc.strerror or str(exc))
            raise CommandError(f"{shown}:{port}: {message}") from None
        except ValueError as exc:  # waitress's own check of an option
            raise CommandError(str(exc)) from None

    @staticmethod
    def _install_signal_handlers():
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, frame):
            raise Stop(0)

        return {signal.SIGTERM: signal.signal(signal.SIGTERM, stop)}

    def _print_banner(self, server, threads, trusted_proxy, static):
        urls = []
        for host, port in _listening(server):
            shown = f"[{host}]" if ":" in host else host
            urls.append(f"http://{shown}:{port}/admin/")
        self.stdout.write(
            f"Django version {django.get_version()}, using settings "
            f"{settings.SETTINGS_MODULE!r}\n"
            f"Starting admin web server at {', '.join(urls)}\n"
            f"Server: waitress {version('waitress')}, {threads} thread"
            f"{'s' if threads > 1 else ''}\n"
            f"Static files: {static}, served by WhiteNoise\n"
            f"DEBUG: {'on (never in production)' if settings.DEBUG else 'off'}\n"
            f"Trusted proxy: {trusted_proxy or 'none'}\n"
            f"Quit the server with "
            f"{'CTRL-BREAK' if sys.platform == 'win32' else 'CONTROL-C'}.\n"
        )
        self.stdout.flush()


def _listening(server):
    """The (host, port) pairs waitress listens on (one server or several)."""
    if hasattr(server, "effective_listen"):
        return server.effective_listen
    return [(server.effective_host, server.effective_port)]
