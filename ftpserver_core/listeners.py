"""Listeners: the addresses one server accepts on, each with its own TLS and PROXY mode.

``FTPSERVER_LISTENERS`` (or ``--listen``, repeatable) lists them; without it
the server has one listener on FTPSERVER_HOST:FTPSERVER_PORT. A string holds
entries separated by spaces (the environment's form). Each entry is a
string ``HOST:PORT[,tls=MODE][,proxy=MODE][,trusted=NET;NET]`` or a dict
with the keys ``address``, ``tls``, ``proxy`` and ``trusted``:

- ``tls``: ``explicit`` (AUTH TLS, RFC 4217; the default when a certificate
  is configured), ``implicit`` (TLS from the first byte, "port 990" FTPS) or
  ``off`` (the default, and the only mode, without a certificate);
- ``proxy``: the PROXY protocol (v1 and v2, detected): ``off`` (default);
  ``optional``: connections from the trusted networks must start with a
  header, others are clients; ``required``: only the trusted networks may
  connect, each with a header;
- ``trusted``: the proxies' networks (default FTPSERVER_PROXY_TRUSTED).
"""

import ipaddress
import logging
from dataclasses import dataclass

from pyftpdlib.ioloop import Acceptor

from .options import OptionError, parse_address
from .proxyprotocol import MODES as PROXY_MODES

logger = logging.getLogger(__name__)

TLS_MODES = ("off", "explicit", "implicit")
KEYS = ("address", "tls", "proxy", "trusted")


@dataclass(frozen=True)
class Listener:
    """One address the server accepts on, and how it speaks there."""

    host: str
    port: int
    tls: str = "off"
    proxy: str = "off"
    trusted: tuple = ()

    @property
    def scheme(self):
        """``ftps`` for implicit FTPS only: explicit FTPS starts as ``ftp://``."""
        return "ftps" if self.tls == "implicit" else "ftp"

    def describe(self, tls_required):
        """Say how this listener speaks, for the banner."""
        if self.tls == "implicit":
            text = "implicit FTPS (TLS from the first byte)"
        elif self.tls == "explicit":
            text = "explicit FTPS (AUTH TLS, " + (
                "required)" if tls_required else "optional)"
            )
        else:
            text = "plain FTP"
        if self.proxy != "off":
            networks = ", ".join(str(n) for n in self.trusted)
            text += f", PROXY protocol {self.proxy} from {networks}"
        return text


def parse_networks(value, name="PROXY_TRUSTED"):
    """Return ``value`` (a list, or a string split on ';' or ',') as networks."""
    if value is None:
        return ()
    items = value.replace(";", ",").split(",") if isinstance(value, str) else value
    networks = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise OptionError(
                name,
                f"{text!r} is not a network; expected an address or a CIDR "
                "network such as 10.0.0.0/8 or 2001:db8::/32.",
            ) from None
    return tuple(networks)


def _spec_dict(spec, index):
    """Turn a ``HOST:PORT,key=value`` string (or a dict) into a dict."""
    name = f"LISTENERS[{index}]"
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise OptionError(
                name,
                f"unknown key(s) {', '.join(map(repr, unknown))}; expected "
                f"{', '.join(KEYS)}.",
            )
        return dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise OptionError(
            name,
            f"{spec!r} is not a listener; expected 'HOST:PORT[,tls=MODE]"
            "[,proxy=MODE][,trusted=NET;NET]' or a dict.",
        )
    address, *pairs = spec.strip().split(",")
    values = {"address": address.strip()}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in KEYS[1:]:
            raise OptionError(
                name,
                f"{pair.strip()!r} in {spec!r} is not an option; expected "
                "tls=off|explicit|implicit, proxy=off|optional|required or "
                "trusted=NET;NET.",
            )
        values[key] = value.strip()
    return values


def parse_listener(spec, index, default_host, certificate, default_trusted):
    """Return the Listener of ``spec`` (see the module's docstring)."""
    name = f"LISTENERS[{index}]"
    values = _spec_dict(spec, index)
    address = values.get("address")
    if address is None:
        raise OptionError(name, "no 'address'; expected 'HOST:PORT'.")
    try:
        host, port = parse_address(str(address), default_host)
    except OptionError as exc:
        raise OptionError(name, exc.message) from None
    tls = values.get("tls") or ("explicit" if certificate else "off")
    if tls not in TLS_MODES:
        raise OptionError(
            name, f"tls={tls!r} is not a mode; expected one of {', '.join(TLS_MODES)}."
        )
    if tls != "off" and not certificate:
        raise OptionError(
            name, f"tls={tls!r} needs a certificate: set FTPSERVER_CERTFILE."
        )
    if tls == "off" and certificate:
        raise OptionError(
            name,
            "tls='off' on a server with a certificate is not supported; "
            "expected 'explicit' or 'implicit'.",
        )
    proxy = values.get("proxy") or "off"
    if proxy not in PROXY_MODES:
        raise OptionError(
            name,
            f"proxy={proxy!r} is not a mode; expected one of {', '.join(PROXY_MODES)}.",
        )
    trusted = (
        parse_networks(values["trusted"], name)
        if values.get("trusted") is not None
        else default_trusted
    )
    if proxy != "off" and not trusted:
        raise OptionError(
            name,
            f"proxy={proxy!r} with no trusted networks: anyone could claim any "
            "address; set FTPSERVER_PROXY_TRUSTED or trusted=NET;NET to the "
            "proxies' addresses.",
        )
    return Listener(host, port, tls, proxy, trusted)


def parse_listeners(specs, host, port, certificate, trusted):
    """Return the listeners: ``specs``, or one on ``host:port`` when None.

    A ``host``/``port`` given on the command line (not None) replaces the
    first listener's address.
    """
    if not specs:
        return (
            parse_listener(
                {"address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"},
                0,
                host,
                certificate,
                trusted,
            ),
        )
    if isinstance(specs, str):
        # From the environment: entries separated by spaces.
        specs = specs.split()
    elif isinstance(specs, dict):
        specs = [specs]
    listeners = [
        parse_listener(spec, index, host, certificate, trusted)
        for index, spec in enumerate(specs)
    ]
    seen = {}
    for index, listener in enumerate(listeners):
        key = (listener.host, listener.port)
        if listener.port and key in seen:
            raise OptionError(
                f"LISTENERS[{index}]",
                f"{listener.host}:{listener.port} is listed twice (also "
                f"LISTENERS[{seen[key]}]); expected one entry per address.",
            )
        seen[key] = index
    return tuple(listeners)


class ListenerAcceptor(Acceptor):
    """A further listening socket of a server, with its own handler class."""

    def __init__(self, server, listener, handler, sock=None, backlog=100):
        super().__init__(ioloop=server.ioloop)
        self.server = server
        self.listener = listener
        self.handler = handler
        if sock is not None:
            sock.setblocking(False)
            self.set_socket(sock)
        else:
            self.bind_af_unspecified((listener.host, listener.port))
        # Also for a socket bound by the prefork parent: listen() is what
        # makes the dispatcher accept (asyncore's ``accepting``).
        self.listen(backlog)
        self.address = self.socket.getsockname()[:2]

    def handle_accepted(self, sock, addr):
        self.server.accept_connection(self, sock, addr)

    def handle_error(self):
        # As pyftpdlib's server: log, keep listening (one bad accept must
        # not close the port).
        logger.exception("Accepting a connection on %s:%s failed.", *self.address)
