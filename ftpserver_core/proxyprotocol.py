"""PROXY protocol v1 and v2: a client's real address behind a load balancer.

HAProxy (``send-proxy`` / ``send-proxy-v2``) and cloud load balancers put a
header in front of the client's bytes that says where the connection really
comes from. A listener that expects it reads the header before anything else
(before the 220, before an implicit TLS handshake), and only from the
trusted networks of its proxies: anyone else could claim any address.

https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
"""

import ipaddress
import logging
import socket
import struct

from pyftpdlib.ioloop import AsyncChat

logger = logging.getLogger(__name__)

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the specification's figure)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# v2 allows 65535 bytes of addresses and TLVs; a proxy sends a few dozen.
V2_MAX = V2_FIXED + 4096
MODES = ("off", "optional", "required")

# How often a header that arrived in pieces is looked at again (the bytes
# are peeked, not read, so the loop would see them as new at every poll).
RETRY_INTERVAL = 0.02


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


def parse(data):
    """Parse the PROXY header at the start of ``data``.

    Return ``(length, source)``: the header's length in bytes (0 while more
    bytes are needed) and the client's ``(ip, port)``, or None when the proxy
    speaks for itself (v2 LOCAL, v1 UNKNOWN: health checks). Raise
    ProxyHeaderError when ``data`` cannot start with a header.
    """
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and data[:1] == b"\r":
        return _parse_v2(data)
    if data[:6] == V1_PREFIX[: len(data[:6])] and data[:1] == b"P":
        return _parse_v1(data)
    raise ProxyHeaderError(f"no PROXY header: the connection starts with {data[:16]!r}")


def _parse_v1(data):
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX} bytes")
        return 0, None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return end + 2, None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}")
    _, family, src, dst, sport, dport = parts
    version = 4 if family == "TCP4" else 6
    try:
        address = ipaddress.ip_address(src)
        ipaddress.ip_address(dst)  # its family is not checked: only the source's
    except ValueError:
        raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}") from None
    # int() takes "+1", "1_0" and " 1"; a scope id names an interface of the
    # proxy, not a client.
    if (
        address.version != version
        or "%" in src
        or not all(_is_port(port) for port in (sport, dport))
    ):
        raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}")
    # As v2 (_unmapped): one client, one address form in ip_map, bans, audit.
    return end + 2, (_unmapped(str(address)), int(sport))


def _is_port(text):
    """True for 0-65535 in decimal digits, without sign or leading zero."""
    return (
        text.isascii()
        and text.isdigit()
        and (text == "0" or text[0] != "0")
        and int(text) <= 65535
    )


def _parse_v2(data):
    if len(data) < V2_FIXED:
        return 0, None
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("bad PROXY v2 signature")
    version_command, family, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY protocol version {version_command >> 4}")
    total = V2_FIXED + length
    if total > V2_MAX:
        raise ProxyHeaderError(f"PROXY v2 header of {total} bytes (at most {V2_MAX})")
    if len(data) < total:
        return 0, None
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection
        return total, None
    if command != 1:
        raise ProxyHeaderError(f"PROXY v2 command {command}")
    body = data[V2_FIXED:total]
    if family == 0x11 and length >= 12:  # TCP over IPv4
        src = socket.inet_ntop(socket.AF_INET, body[:4])
        (port,) = struct.unpack("!H", body[8:10])
        return total, (src, port)
    if family == 0x21 and length >= 36:  # TCP over IPv6
        src = socket.inet_ntop(socket.AF_INET6, body[:16])
        (port,) = struct.unpack("!H", body[32:34])
        return total, (_unmapped(src), port)
    if family == 0x00:  # UNSPEC: the proxy's address stands
        return total, None
    raise ProxyHeaderError(f"PROXY v2 family 0x{family:02x} is not TCP")


def _unmapped(ip):
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if ":" not in ip:
        return ip
    mapped = ipaddress.IPv6Address(ip).ipv4_mapped
    return str(mapped) if mapped else ip


def trusted(ip, networks):
    """True when ``ip`` is in one of ``networks`` (ip_network objects)."""
    try:
        address = ipaddress.ip_address(_unmapped(ip) if ":" in ip else ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


class HeaderReader(AsyncChat):
    """Own an accepted socket until its PROXY header is read; then hand it on.

    The header is peeked and then read to its exact length, so whatever
    follows it (a TLS ClientHello, a pipelined command) stays in the socket
    for the handler that takes it over. ``on_done(sock, source)`` gets the
    socket and the client's (ip, port) (None: the proxy's own connection);
    ``on_error(sock, why)`` the socket and a sentence.
    """

    def __init__(self, sock, ioloop, timeout, on_done, on_error):
        super().__init__(sock, ioloop=ioloop)
        self._on_done = on_done
        self._on_error = on_error
        self._deadline = ioloop.call_later(
            timeout, self._timed_out, _errback=self.handle_error
        )
        self._retry = None

    def readable(self):
        return True

    def writable(self):
        return False

    def handle_read(self):
        try:
            data = self.socket.recv(V2_MAX, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"the connection failed before its PROXY header ({exc})")
            return
        if not data:
            self._fail("the connection closed before its PROXY header")
            return
        try:
            length, source = parse(data)
        except ProxyHeaderError as exc:
            self._fail(str(exc))
            return
        if not length:
            # In pieces: look again shortly instead of at every poll.
            self.del_channel()
            self._retry = self.ioloop.call_later(
                RETRY_INTERVAL, self._look_again, _errback=self.handle_error
            )
            return
        try:
            self.socket.recv(length)  # exactly the header: it is all there
        except OSError as exc:
            self._fail(f"the connection failed in its PROXY header ({exc})")
            return
        self._hand_over(self._on_done, source)

    def _look_again(self):
        self._retry = None
        if self.socket is not None:
            self.add_channel()
            self.handle_read()

    def _timed_out(self):
        self._fail("no PROXY header in time")

    def _fail(self, why):
        self._hand_over(self._on_error, why)

    def _hand_over(self, callback, value):
        for call in (self._deadline, self._retry):
            if call is not None and not call.cancelled:
                call.cancel()
        sock = self.socket
        if sock is None:
            return
        if self._fileno in self.ioloop.socket_map:
            self.del_channel()
        # The socket is the next owner's now: this dispatcher lets go of it
        # without closing it.
        self.socket = None
        self._fileno = None
        self.connected = False
        self._closed = True
        callback(sock, value)

    def handle_error(self):
        logger.exception("Reading a PROXY header failed.")
        sock = self.socket
        self.socket = None
        self._closed = True
        if sock is not None:
            try:
                self.ioloop.unregister(sock.fileno())
            except Exception:  # noqa: S110  (not registered)
                pass
            sock.close()

    def close(self):
        # The server's stop: a connection still waiting for its header.
        if self.socket is not None:
            self._hand_over(lambda sock, _: sock.close(), None)
