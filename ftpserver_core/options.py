"""The server's configuration: FTPSERVER_* settings merged with command options.

Every value is validated here, once, for the ``ftpserver`` command and for the
system checks alike; an :class:`OptionError` quotes the bad value and says
what was expected.
"""

import errno
import ipaddress
import os
import re
from dataclasses import dataclass

from django.utils.module_loading import import_string

from .conf import settings


class OptionError(ValueError):
    """A bad configuration value; ``name`` is the setting's short name."""

    def __init__(self, name, message):
        super().__init__(message)
        self.name = name
        self.message = message


_ADDRESS_RE = re.compile(
    r"^(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)$"
)


# What a failed bind means, in runserver's words (ftpserver, ftpadmin web,
# quickstart).
BIND_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
    errno.EAFNOSUPPORT: "That address family is not supported on this machine.",
}


def parse_address(value, default_host):
    """Parse ``HOST:PORT``, ``PORT`` or ``[IPv6]:PORT`` into (host, port)."""
    value = str(value).strip()
    if value.isdigit():
        return default_host, parse_port(value)
    match = _ADDRESS_RE.match(value)
    if not match:
        raise OptionError(
            "ADDRESS",
            f"{value!r} is not a valid address; expected HOST:PORT, PORT or "
            "[IPv6]:PORT.",
        )
    host = match["ipv6"] or match["host"]
    if match["ipv6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise OptionError(
                "ADDRESS", f"{host!r} is not a valid IPv6 address."
            ) from None
    return host, parse_port(match["port"])


def parse_host(value):
    """Return ``value`` if it is a host name or address (text)."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise OptionError(
            "HOST",
            f"{value!r} is not a host name or address; expected e.g. "
            "'127.0.0.1', '0.0.0.0' or 'ftp.example.com'.",
        )
    return value.strip()


def parse_port(value, name="PORT"):
    """Return ``value`` as a TCP port (0 picks a free one)."""
    try:
        port = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != port):
            port = -1
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise OptionError(name, f"{value!r} is not a valid port; expected 0 to 65535.")
    return port


def parse_passive_ports(value):
    """Parse ``30000-30100``, ``12345,30000-30100`` or integers into a sorted list."""
    if value is None or value == "":
        return None
    expected = "expected ports or ranges such as '30000-30100' or '12345,30000-30100'"
    ports = set()
    if isinstance(value, str):
        for item in value.replace(" ", "").split(","):
            lo, sep, hi = item.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise OptionError(
                    "PASSIVE_PORTS", f"{value!r} is not valid; {expected}."
                )
            lo, hi = int(lo), int(hi) if sep else int(lo)
            if lo > hi:
                raise OptionError(
                    "PASSIVE_PORTS",
                    f"{item!r} in {value!r} is an empty range; {expected}.",
                )
            ports.update(range(lo, hi + 1))
    else:
        try:
            ports.update(int(p) for p in value)
        except (TypeError, ValueError):
            raise OptionError(
                "PASSIVE_PORTS", f"{value!r} is not valid; {expected}."
            ) from None
    bad = [p for p in ports if not 1 <= p <= 65535]
    if bad or not ports:
        raise OptionError(
            "PASSIVE_PORTS",
            f"{value!r} is not valid: ports must be between 1 and 65535.",
        )
    return sorted(ports)


def parse_session_reuse(value, min_version):
    """Return TLS_REQUIRE_SESSION_REUSE as a bool; it needs TLS 1.2 sessions."""
    if value not in (True, False):
        raise OptionError(
            "TLS_REQUIRE_SESSION_REUSE",
            f"{value!r} is not valid; expected True or False.",
        )
    if value and min_version == "TLSv1.3":
        # See tls.make_session_reuse_context: the reuse is checked on TLS 1.2.
        raise OptionError(
            "TLS_REQUIRE_SESSION_REUSE",
            "True needs TLS 1.2 on the control and data channels, but "
            "FTPSERVER_TLS_MIN_VERSION is 'TLSv1.3'; set it to 'TLSv1.2', or "
            "turn TLS_REQUIRE_SESSION_REUSE off.",
        )
    return bool(value)


UPLOAD_MODES = ("atomic", "direct")


def parse_upload_mode(value):
    """Return ``value`` if it is an upload mode."""
    if value not in UPLOAD_MODES:
        raise OptionError(
            "UPLOAD_MODE",
            f"{value!r} is not an upload mode; expected one of "
            f"{', '.join(map(repr, UPLOAD_MODES))}.",
        )
    return value


def parse_metrics_address(value):
    """Return the metrics endpoint's (host, port), or None (off)."""
    if value is None or value == "":
        return None
    try:
        return parse_address(value, "127.0.0.1")
    except OptionError as exc:
        message = exc.message
        if exc.name == "ADDRESS":
            message = (
                f"{value!r} is not a valid address; expected HOST:PORT, PORT "
                "or [IPv6]:PORT, or None (off)."
            )
        raise OptionError("METRICS_ADDRESS", message) from None


LOG_FORMATS = ("text", "json")


def parse_log_format(value):
    """Return ``value`` if it is a log format."""
    if value not in LOG_FORMATS:
        raise OptionError(
            "LOG_FORMAT",
            f"{value!r} is not a log format; expected one of "
            f"{', '.join(map(repr, LOG_FORMATS))}.",
        )
    return value


def parse_masquerade(value):
    """Return the IPv4 address announced in PASV replies, or None."""
    if not value:
        return None
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise OptionError(
            "MASQUERADE_ADDRESS",
            f"{value!r} is not an IPv4 address; PASV replies carry an IPv4 "
            "address such as '203.0.113.10'.",
        ) from None


def _positive(name, value, *, number=int, allow_none=False, allow_zero=False):
    if value is None and allow_none:
        return None
    try:
        result = number(value)
        ok = result > 0 or (allow_zero and result == 0)
    except (TypeError, ValueError):
        ok = False
    # True is not 1 second, and 2.5 workers is not 2.
    if isinstance(value, bool) or (
        number is int and isinstance(value, float) and not value.is_integer()
    ):
        ok = False
    if not ok:
        raise OptionError(
            name,
            f"{value!r} is not valid; expected a positive "
            f"{'number' if number is float else 'whole number'}"
            f"{' or None' if allow_none else ''}.",
        )
    return result


def _path(name, value):
    """Return ``value`` as a path (text), or None."""
    if value is None or value == "":
        return None
    try:
        path = os.fspath(value)
    except TypeError:
        path = None
    if not isinstance(path, str) or "\x00" in path:
        raise OptionError(name, f"{value!r} is not a file path; expected text or None.")
    return path


def _readable_file(name, value):
    path = _path(name, value)
    if path is None:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise OptionError(name, f"{path!r} is not a readable file.")
    return path


def parse_user(value):
    """Return the name of the user to drop privileges to, or None."""
    if value is None or value == "":
        return None
    from .privileges import user_entry

    try:
        return user_entry(value).pw_name
    except LookupError as exc:
        raise OptionError("USER", str(exc)) from None


def parse_group(value, user):
    """Return the name of the group to drop privileges to (None: the user's)."""
    if value is None or value == "":
        return None
    if user is None or user == "":
        raise OptionError(
            "GROUP",
            f"{value!r} is set without a user; expected a user too (--user, "
            "FTPSERVER_USER): the group is taken along with the user.",
        )
    from .privileges import group_entry

    try:
        return group_entry(value).gr_name
    except LookupError as exc:
        raise OptionError("GROUP", str(exc)) from None


def _identity(user, group):
    from .privileges import identity

    try:
        return identity(user, group).user
    except LookupError as exc:
        raise OptionError("USER", str(exc)) from None


def _handler_class(name, dotted):
    from pyftpdlib.handlers import FTPHandler

    try:
        cls = import_string(dotted) if isinstance(dotted, str) else dotted
    except ImportError as exc:
        raise OptionError(
            name,
            f"{dotted!r} cannot be imported ({exc}); expected the dotted path of "
            "an FTPHandler subclass, such as "
            "'ftpserver_core.handlers.DjangoFTPHandler'.",
        ) from None
    except Exception as exc:  # ImproperlyConfigured from a missing extra
        raise OptionError(name, f"{dotted!r} cannot be used: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, FTPHandler)):
        raise OptionError(name, f"{dotted!r} is not a pyftpdlib FTPHandler subclass.")
    # The FTPS handler's stand-in when pyOpenSSL is missing (handlers.py).
    missing = getattr(cls, "missing_extra", None)
    if missing:
        raise OptionError(name, f"{dotted!r} cannot be used: {missing}")
    return cls


@dataclass(frozen=True)
class ServerOptions:
    """Validated server options."""

    host: str
    port: int
    passive_ports: list | None
    masquerade_address: str | None
    certfile: str | None
    keyfile: str | None
    tls_required: bool
    tls_min_version: str
    tls_require_session_reuse: bool
    handler: type
    timeout: int
    max_connections: int | None
    max_connections_per_ip: int | None
    max_sessions_per_address: int | None
    logins_per_address: int | None
    login_queue: int
    login_grace: float
    banner: str
    pidfile: str | None
    auth_workers: int | None
    workers: int
    user: str | None
    group: str | None
    auth_failed_delay: float
    max_login_attempts: int
    use_sendfile: bool
    permit_foreign_addresses: bool
    data_timeout: float
    passive_ports_fallback: bool
    upload_mode: str
    digests: bool
    login_timeout: float
    shutdown_timeout: float
    database_timeout: float
    # Observability (ftpserver_core.metrics, ftpserver_core.logs).
    metrics_address: tuple | None
    health_max_audit_lag: float
    log_format: str
    listeners: tuple = ()
    proxy_timeout: float = 5.0
    # The fields the project set (its FTPSERVER_* settings, the command's
    # options); the others hold defaults, which a handler class's own
    # attributes win over (servers.build_handler_class).
    explicit: frozenset = frozenset()

    @property
    def tls(self):
        """True when the server speaks FTPS."""
        return self.certfile is not None

    @property
    def every_listener(self):
        """The listeners; one on host:port for options made without any."""
        if self.listeners:
            return self.listeners
        from .listeners import Listener

        return (Listener(self.host, self.port),)

    @property
    def identity(self):
        """The privileges.Identity to drop to once bound, or None (no drop)."""
        if self.user is None:
            return None
        from .privileges import identity

        return identity(self.user, self.group)

    @classmethod
    def from_settings(cls, **overrides):
        """Merge FTPSERVER_* settings with ``overrides`` (None: not given).

        Raise the first OptionError when a value is bad.
        """
        values, errors = cls.collect(overrides)
        if errors:
            raise errors[0]
        return cls(**values)

    @classmethod
    def errors(cls, **overrides):
        """Return the OptionErrors of the current configuration."""
        return cls.collect(overrides)[1]

    @classmethod
    def collect(cls, overrides):
        """Return (values, errors) for the settings with ``overrides`` applied."""
        raw = {name.lower(): value for name, value in settings.as_dict().items()}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        values, errors = {}, []
        values["explicit"] = frozenset(
            name.lower() for name in settings.as_dict() if settings.is_set(name)
        ) | {k for k, v in overrides.items() if v is not None}

        def check(key, parse, *args):
            try:
                values[key] = parse(*args)
            except OptionError as exc:
                errors.append(exc)

        check("host", parse_host, raw["host"])
        check("port", parse_port, raw["port"])
        check("passive_ports", parse_passive_ports, raw["passive_ports"])
        check("masquerade_address", parse_masquerade, raw["masquerade_address"])
        check("certfile", _readable_file, "CERTFILE", raw["certfile"])
        check("keyfile", _readable_file, "KEYFILE", raw["keyfile"])
        values["tls_required"] = bool(raw["tls_required"])
        values["tls_min_version"] = raw["tls_min_version"]
        check(
            "tls_require_session_reuse",
            parse_session_reuse,
            raw["tls_require_session_reuse"],
            raw["tls_min_version"],
        )
        check("timeout", _positive, "TIMEOUT", raw["timeout"])
        check(
            "max_connections",
            lambda v: _positive("MAX_CONNECTIONS", v, allow_none=True),
            raw["max_connections"],
        )
        check(
            "max_connections_per_ip",
            lambda v: _positive("MAX_CONNECTIONS_PER_IP", v, allow_none=True),
            raw["max_connections_per_ip"],
        )
        check(
            "max_sessions_per_address",
            lambda v: _positive("MAX_SESSIONS_PER_ADDRESS", v, allow_none=True),
            raw["max_sessions_per_address"],
        )
        if values.get("max_sessions_per_address") is None:
            # One knob by default: the per-address connection limit (each
            # process's, at accept) also holds for logged-in sessions on
            # every process and node together.
            values["max_sessions_per_address"] = values.get("max_connections_per_ip")
        check(
            "logins_per_address",
            lambda v: _positive("LOGINS_PER_ADDRESS", v, allow_none=True),
            raw["logins_per_address"],
        )
        check("login_queue", _positive, "LOGIN_QUEUE", raw["login_queue"])
        check(
            "login_grace",
            lambda v: _positive("LOGIN_GRACE", v, number=float),
            raw["login_grace"],
        )
        values["banner"] = str(raw["banner"])
        check("pidfile", _path, "PIDFILE", raw["pidfile"])
        check(
            "auth_workers",
            lambda v: _positive("AUTH_WORKERS", v, allow_none=True),
            raw["auth_workers"],
        )
        check("workers", _positive, "WORKERS", raw["workers"])
        check("user", parse_user, raw["user"])
        check("group", parse_group, raw["group"], raw["user"])
        if values.get("user") and "group" in values:
            # A user whose own group is root's drops to no group at all.
            check("user", _identity, values["user"], values["group"])
        check(
            "auth_failed_delay",
            lambda v: _positive("AUTH_FAILED_DELAY", v, number=float, allow_zero=True),
            raw["auth_failed_delay"],
        )
        check(
            "max_login_attempts",
            _positive,
            "MAX_LOGIN_ATTEMPTS",
            raw["max_login_attempts"],
        )
        for name in ("data_timeout", "database_timeout"):
            check(
                name,
                lambda v, n=name: _positive(
                    n.upper(), v, number=float, allow_zero=True
                ),
                raw[name],
            )
        for name in ("login_timeout", "shutdown_timeout"):
            check(
                name,
                lambda v, n=name: _positive(n.upper(), v, number=float),
                raw[name],
            )
        check(
            "proxy_timeout",
            lambda v: _positive("PROXY_TIMEOUT", v, number=float),
            raw["proxy_timeout"],
        )
        _collect_listeners(raw, overrides, values, errors)
        check("upload_mode", parse_upload_mode, raw["upload_mode"])
        check("metrics_address", parse_metrics_address, raw["metrics_address"])
        check(
            "health_max_audit_lag",
            lambda v: _positive("HEALTH_MAX_AUDIT_LAG", v, number=float),
            raw["health_max_audit_lag"],
        )
        check("log_format", parse_log_format, raw["log_format"])
        values["digests"] = bool(raw["digests"])
        values["passive_ports_fallback"] = bool(raw["passive_ports_fallback"])
        values["use_sendfile"] = bool(raw["use_sendfile"])
        values["permit_foreign_addresses"] = bool(raw["permit_foreign_addresses"])

        from . import tls

        if raw["tls_min_version"] not in tls.MIN_VERSIONS:
            errors.append(
                OptionError(
                    "TLS_MIN_VERSION",
                    f"{raw['tls_min_version']!r} is not supported; expected one of "
                    f"{', '.join(tls.MIN_VERSIONS)}.",
                )
            )
        if values.get("keyfile") and not values.get("certfile"):
            errors.append(
                OptionError(
                    "CERTFILE", "A key file is set but no certificate file; set both."
                )
            )
        if values.get("certfile"):
            if not tls.available:
                errors.append(OptionError("CERTFILE", tls.MISSING))
            else:
                check("handler", _handler_class, "TLSHANDLER", raw["tlshandler"])
                if "TLS_MIN_VERSION" not in [e.name for e in errors]:
                    try:
                        tls.make_context(
                            values["certfile"],
                            values.get("keyfile"),
                            raw["tls_min_version"],
                        )
                    except ValueError as exc:
                        errors.append(OptionError("CERTFILE", str(exc)))
        else:
            check("handler", _handler_class, "HANDLER", raw["handler"])
            # Unused without a certificate, and fine then without pyOpenSSL;
            # a typo is still said before TLS is turned on.
            try:
                _handler_class("TLSHANDLER", raw["tlshandler"])
            except OptionError as exc:
                if tls.MISSING not in exc.message:
                    errors.append(exc)
        return values, errors


def _collect_listeners(raw, overrides, values, errors):
    """Parse the listeners; the first one's address is ``host``/``port``."""
    from dataclasses import replace

    from .listeners import parse_listeners, parse_networks

    if "host" not in values or "port" not in values:
        return  # their own errors are reported
    for name, kinds in (
        ("listeners", (str, list, tuple, dict)),
        ("proxy_trusted", (str, list, tuple)),
    ):
        if raw[name] is not None and not isinstance(raw[name], kinds):
            errors.append(
                OptionError(
                    name.upper(),
                    f"{raw[name]!r} is not valid; expected a list of "
                    f"{'listeners' if name == 'listeners' else 'networks'} or a "
                    "string of them.",
                )
            )
            return
    try:
        trusted = parse_networks(raw["proxy_trusted"])
        listeners = parse_listeners(
            raw["listeners"],
            values["host"],
            values["port"],
            bool(raw["certfile"]),
            trusted,
        )
    except OptionError as exc:
        errors.append(exc)
        return
    given = overrides.get("host") is not None or overrides.get("port") is not None
    if raw["listeners"] and given and overrides.get("listeners") is None:
        # An address on the command line moves the first listener.
        listeners = (
            replace(listeners[0], host=values["host"], port=values["port"]),
            *listeners[1:],
        )
    values["listeners"] = listeners
    values["host"], values["port"] = listeners[0].host, listeners[0].port
