"""Run the FTP server (modelled on Django's ``runserver``)."""

import logging
import os
import signal
import socket
import sys
import threading

import django
from django.conf import settings as django_settings
from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.db import DEFAULT_DB_ALIAS, connections

from ftpserver_core import (
    anonymous,
    audit,
    logs,
    metrics,
    privileges,
    scaleout,
    signals,
)
from ftpserver_core.checks import DEPLOY_TAG
from ftpserver_core.conf import settings as ftp_settings
from ftpserver_core.options import (
    BIND_ERRORS,
    OptionError,
    ServerOptions,
    parse_address,
    parse_log_format,
)
from ftpserver_core.prefork import Supervisor
from ftpserver_core.servers import bind_sockets, build_server

# Command-line option -> ServerOptions field.
OPTIONS = {
    "passive_ports": "--passive-ports",
    "masquerade_address": "--masquerade-address",
    "certfile": "--certfile",
    "keyfile": "--keyfile",
    "timeout": "--timeout",
    "max_connections": "--max-connections",
    "max_connections_per_ip": "--max-connections-per-ip",
    "banner": "--banner",
    "pidfile": "--pidfile",
    "workers": "--workers",
    "user": "--user",
    "group": "--group",
    "metrics_address": "--metrics",
    "log_format": "--log-format",
    "listeners": "--listen",
}


class Command(BaseCommand):
    help = "Start the FTP server. Options override the FTPSERVER_* settings."

    # Checks run in handle(), before the server starts, like runserver.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "addrport",
            nargs="?",
            help="HOST:PORT, PORT or [IPv6]:PORT (default: FTPSERVER_HOST:FTPSERVER_PORT).",
        )
        parser.add_argument(
            "--passive-ports", help="e.g. 30000-30100 or 12345,30000-30100"
        )
        parser.add_argument(
            "--masquerade-address", help="Public IPv4 address for PASV replies."
        )
        parser.add_argument(
            "--certfile", help="TLS certificate chain (PEM); turns FTPS on."
        )
        parser.add_argument("--keyfile", help="TLS private key (PEM).")
        parser.add_argument(
            "--timeout", help="Idle seconds before a client is disconnected."
        )
        parser.add_argument("--max-connections", help="Connections served at once.")
        parser.add_argument(
            "--max-connections-per-ip", help="Connections per client IP."
        )
        parser.add_argument("--banner", help="Greeting sent to clients.")
        parser.add_argument(
            "--pidfile", help="File to write the PID to (removed at exit)."
        )
        parser.add_argument(
            "--listen",
            action="append",
            dest="listeners",
            metavar="HOST:PORT[,tls=MODE][,proxy=MODE][,trusted=NET;NET]",
            help="A listener (repeat for several; replaces FTPSERVER_LISTENERS): "
            "tls=off|explicit|implicit, proxy=off|optional|required.",
        )
        parser.add_argument(
            "--workers",
            help="Processes accepting on the same port, each with its own loop "
            "(default 1).",
        )
        parser.add_argument(
            "--user",
            help="Unprivileged user (name or uid) to run as once the port is "
            "bound; the server must be started as root.",
        )
        parser.add_argument(
            "--group",
            help="Group (name or gid) to run as with --user (default: the user's).",
        )
        parser.add_argument(
            "--metrics",
            dest="metrics_address",
            metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics and a "
            "health check at /health (default: FTPSERVER_METRICS_ADDRESS).",
        )
        parser.add_argument(
            "--log-format",
            help="text or json: one JSON object per log line "
            "(default: FTPSERVER_LOG_FORMAT).",
        )

    def handle(self, *args, **options):
        self._set_log_format(options["log_format"])
        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        # The FTP server's own deployment checks (not Django's web ones).
        self.check(tags=[DEPLOY_TAG], include_deployment_checks=True)

        overrides = {field: options[field] for field in OPTIONS}
        if options["listeners"] and options["addrport"]:
            raise CommandError(
                f"Both an address ({options['addrport']!r}) and --listen were "
                "given; give every address with --listen."
            )
        if options["addrport"]:
            try:
                overrides["host"], overrides["port"] = parse_address(
                    options["addrport"], ftp_settings.HOST
                )
            except OptionError as exc:
                raise CommandError(exc.message) from None
        try:
            server_options = ServerOptions.from_settings(**overrides)
        except OptionError as exc:
            field = exc.name.lower().partition("[")[0]
            where = OPTIONS.get(field) if overrides.get(field) is not None else None
            if where and field == "listeners":
                index = int(exc.name.partition("[")[2].rstrip("]"))
                where = f"--listen {overrides[field][index]!r}"
            raise CommandError(
                f"{where or 'FTPSERVER_' + exc.name}: {exc.message}"
            ) from None
        try:
            target = server_options.identity
        except LookupError as exc:  # the user went away since the checks
            raise CommandError(str(exc)) from None
        if (
            target is not None
            and not privileges.is_root()
            and not privileges.already(target)
        ):
            where = "--user" if options["user"] else "FTPSERVER_USER"
            raise CommandError(
                f"{where} {server_options.user!r}: privileges can only be dropped "
                f"by root, and this process runs as {privileges.current()}; start "
                f"the server as root, or without {where}."
            )
        # Other nodes' passive ports, against this server's own (E060).
        with scaleout.checking(server_options):
            self.check(
                tags=[scaleout.TAG],
                include_deployment_checks=True,
                databases=[DEFAULT_DB_ALIAS],
            )

        observer = self._prepare_metrics(server_options, options)

        pidfile = server_options.pidfile
        if pidfile:
            try:
                with open(pidfile, "w") as fh:
                    fh.write(f"{os.getpid()}\n")
            except OSError as exc:
                raise CommandError(
                    f"Cannot write the PID file {pidfile!r}: {exc.strerror}."
                ) from None
        try:
            if server_options.workers > 1:
                server = Supervisor(
                    server_options, bind_sockets(server_options), server_options.workers
                )
            else:
                server = build_server(server_options)
        except OSError as exc:
            self._remove(pidfile)
            error = exc
            if exc.errno is None and exc.args and isinstance(exc.args[0], OSError):
                error = exc.args[0]  # pyftpdlib re-raises bind errors wrapped
            if isinstance(error, socket.gaierror):
                message = f"Cannot resolve {server_options.host!r}: {error.strerror}."
            else:
                message = BIND_ERRORS.get(error.errno, str(error))
            raise CommandError(message) from None

        try:
            self._drop_privileges(server_options, target)
        except privileges.PrivilegeError as exc:
            self._discard(server)
            self._remove(pidfile)
            raise CommandError(exc.message) from None
        try:
            # Registered before it serves: a node started at the same moment
            # with an overlapping range is seen by one of the two.
            claim = scaleout.claim(server, server_options)
        except scaleout.Overlap as exc:
            self._discard(server)
            self._remove(pidfile)
            raise CommandError(str(exc)) from None

        previous = self._install_signal_handlers(server)
        if observer is not None:
            observer.start(server)
        self._print_banner(server, server_options)
        signals.dispatch(
            signals.ftp_server_started,
            type(self),
            server=server,
            host=server.host,
            port=server.port,
        )
        try:
            if isinstance(server, Supervisor):
                server.run()
            else:
                server.serve()
        except KeyboardInterrupt:
            pass
        finally:
            signals.dispatch(
                signals.ftp_server_stopped,
                type(self),
                server=server,
                host=server.host,
                port=server.port,
            )
            # What the database does not take in time stays in the journal,
            # written at the next start.
            audit.writer.flush(timeout=server.shutdown_time_left())
            claim.release()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._remove(pidfile)
            if observer is not None:
                observer.stop()
            self.stdout.write("FTP server stopped.")

    def _set_log_format(self, value):
        """Switch to JSON log lines first: the checks' warnings are logged too."""
        try:
            log_format = parse_log_format(value or ftp_settings.LOG_FORMAT)
        except OptionError as exc:
            where = "--log-format" if value else "FTPSERVER_LOG_FORMAT"
            raise CommandError(f"{where}: {exc.message}") from None
        if log_format == "json":
            logs.use_json()
            # This command's own warnings and errors become JSON lines too.
            self.stderr = OutputWrapper(
                logs.LogStream(logging.getLogger("ftpserver_core.command"))
            )

    def _prepare_metrics(self, server_options, options):
        """Bind the metrics address (before any drop); None when metrics are off."""
        where = (
            "--metrics" if options["metrics_address"] else "FTPSERVER_METRICS_ADDRESS"
        )
        try:
            return metrics.prepare(server_options)
        except metrics.MetricsUnavailable as exc:
            raise CommandError(f"{where}: {exc}") from None
        except OSError as exc:
            host, port = server_options.metrics_address
            raise CommandError(
                f"{where} {host}:{port}: {BIND_ERRORS.get(exc.errno, str(exc))}"
            ) from None

    def _drop_privileges(self, options, target):
        """Become ``target`` once bound; before any client, journal or worker."""
        if target is None:
            if privileges.is_root():
                self.stderr.write(
                    "Warning: the FTP server runs as root. Give it --user (or "
                    "FTPSERVER_USER) to drop privileges once the port is bound.\n",
                    self.style.WARNING,
                )
            return
        directory = audit.journal_dir()
        if privileges.already(target):
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError:
                pass  # access_problems() says what is wrong
        else:
            privileges.prepare_journal(directory, target)
            # SQLite files opened as root (by a check) would stay usable
            # through their descriptors and hide a database the user cannot
            # write: every connection is made again, as the user.
            connections.close_all()
            privileges.drop(target)
        problems = privileges.access_problems(
            target,
            directory,
            databases=[connections.settings[alias] for alias in connections],
            # Prefork workers build their TLS contexts after the drop.
            tls_files=(
                (options.certfile, options.keyfile)
                if options.tls and options.workers > 1
                else ()
            ),
        )
        if problems:
            raise privileges.PrivilegeError(" ".join(problems))
        # Not refused: what the server has imported keeps working, and a
        # module imported later fails in a log line. But say it now.
        for code in privileges.unreadable_code():
            self.stderr.write(
                f"Warning: the user {target.user!r} cannot read {code!r}: a "
                "Python module the server imports after the drop would fail to "
                "load. Install Python and the project where that user can read "
                "them.\n",
                self.style.WARNING,
            )

    @staticmethod
    def _discard(server):
        """Close a server that was bound but will not serve."""
        if isinstance(server, Supervisor):
            server.socket.close()
        else:
            server.worker_pool.shutdown(timeout=1.0)
            server.close_all()

    @staticmethod
    def _remove(pidfile):
        if pidfile:
            try:
                os.remove(pidfile)
            except OSError:
                pass

    def _install_signal_handlers(self, server):
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def stop(signum, frame):
            server.stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
        return previous

    def _print_banner(self, server, options):
        addresses = server.addresses
        urls = [_url(listener, address) for listener, address in addresses]
        lines = [f"Starting FTP server at {urls[0]}"]
        lines += [f"Also listening at {url}" for url in urls[1:]]
        if options.tls:
            modes = [
                "implicit FTPS (TLS from the first byte)"
                if listener.tls == "implicit"
                else "explicit FTPS (AUTH TLS)"
                for listener, _ in addresses
            ]
            if len(set(modes)) == 1:
                tls_modes = modes[0]
            else:
                tls_modes = ", ".join(
                    f"{mode} at {url}" for mode, url in zip(modes, urls, strict=True)
                )
            tls_state = (
                tls_modes
                + ", "
                + (
                    "required on control and data channels"
                    if options.tls_required
                    else "optional"
                )
                + f", {options.tls_min_version} or newer"
            )
        else:
            tls_state = "off (plain FTP: passwords travel in clear text)"
        lines.append(f"TLS: {tls_state}")
        proxied = [
            f"{listener.proxy} at {url} from "
            + ", ".join(str(network) for network in listener.trusted)
            for (listener, _), url in zip(addresses, urls, strict=True)
            if listener.proxy != "off"
        ]
        if proxied:
            lines.append(f"PROXY protocol: {'; '.join(proxied)}")
        ports = options.passive_ports
        passive = (
            f"{_port_ranges(ports)} ({len(ports)} port{'s' if len(ports) > 1 else ''})"
            if ports
            else "any free port"
        )
        identity = privileges.current()
        self.stdout.write(
            f"Django version {django.get_version()}, using settings "
            f"{django_settings.SETTINGS_MODULE!r}\n"
            + "".join(f"{line}\n" for line in lines)
            + f"Passive ports: {passive}\n"
            f"Masquerade address: {options.masquerade_address or 'none'}\n"
            f"Worker processes: {options.workers}\n"
            + _anonymous_line()
            + _metrics_line()
            + (f"Running as: {identity}\n" if identity else "")
            + f"Quit the server with {'CTRL-BREAK' if sys.platform == 'win32' else 'CONTROL-C'}.\n"
        )
        self.stdout.flush()


def _anonymous_line():
    """Say that anonymous FTP is on, and where (nothing when it is off)."""
    if not anonymous.enabled():
        return ""
    limit = ftp_settings.ANONYMOUS_MAX_SESSIONS
    per_address = ftp_settings.ANONYMOUS_MAX_SESSIONS_PER_ADDRESS
    return (
        f"Anonymous FTP: ON, read-only, in {ftp_settings.ANONYMOUS_HOME} "
        f"({limit or 'unlimited'} sessions, {per_address or 'unlimited'} per "
        "address)\n"
    )


def _port_ranges(ports):
    """Show sorted ports as '12345,30000-30100' (not one misleading range)."""
    runs = []
    for port in ports:
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ",".join(f"{lo}-{hi}" if hi > lo else f"{lo}" for lo, hi in runs)


def _url(listener, address):
    """``ftp://host:port/``; ``ftps://`` for implicit FTPS only."""
    host, port = address
    shown = f"[{host}]" if ":" in host else host
    return f"{listener.scheme}://{shown}:{port}/"


def _metrics_line():
    """Say where the metrics are served (nothing when they are off)."""
    observer = metrics.active()
    return f"Metrics: {observer.url}\n" if observer is not None else ""
