"""TLS for FTPS: the one place that imports the optional pyOpenSSL."""

import hmac

from django.core.exceptions import ImproperlyConfigured

try:
    from OpenSSL import SSL
except ImportError:  # pragma: no cover - exercised in a venv without the extra
    SSL = None

available = SSL is not None

MISSING = (
    "FTPS needs pyOpenSSL, which is not installed. Install it with: "
    "pip install 'django-ftpserver-suite[tls]'"
)

MIN_VERSIONS = ("TLSv1.2", "TLSv1.3")

# Forward secrecy (ECDHE) and AEAD only for TLS 1.2; TLS 1.3 suites are always
# safe. No DHE: it would need DH parameters, and every client offers ECDHE.
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def require():
    """Raise ImproperlyConfigured with the install hint when pyOpenSSL is missing."""
    if not available:
        raise ImproperlyConfigured(MISSING)


def make_context(certfile, keyfile=None, min_version="TLSv1.2", max_version=None):
    """Return a server SSL.Context, or raise ValueError saying what is wrong."""
    require()
    if min_version not in MIN_VERSIONS:
        raise ValueError(
            f"TLS minimum version {min_version!r} is not supported; expected one of "
            f"{', '.join(MIN_VERSIONS)}."
        )
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(
        SSL.TLS1_3_VERSION if min_version == "TLSv1.3" else SSL.TLS1_2_VERSION
    )
    if max_version == "TLSv1.2":
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
    )
    context.set_cipher_list(CIPHERS)
    try:
        context.use_certificate_chain_file(certfile)
    except SSL.Error as exc:
        raise ValueError(
            f"Certificate file {certfile!r} could not be loaded ({_reason(exc)}); "
            "expected a PEM certificate chain."
        ) from exc
    try:
        context.use_privatekey_file(keyfile or certfile)
        context.check_privatekey()
    except SSL.Error as exc:
        raise ValueError(
            f"Private key {keyfile or certfile!r} could not be loaded or does not "
            f"match the certificate ({_reason(exc)}); expected the PEM key of "
            f"{certfile!r}."
        ) from exc
    return context


def _reason(exc):
    try:
        return "; ".join(str(item[2]) for item in exc.args[0]) or str(exc)
    except (IndexError, TypeError):
        return str(exc)


def make_data_context(certfile, keyfile=None, min_version="TLSv1.2"):
    """Return the context of FTPS data connections.

    TLS 1.3 servers send session tickets after the handshake; a client that
    only writes on an upload connection never reads them, so its kernel
    answers its close() with a reset that discards the end of the upload
    still in its send buffer (lftp, PyFilesystem2: uploads cut at 112 KiB).
    pyOpenSSL cannot turn the tickets off (no SSL_CTX_set_num_tickets), and
    TLS 1.2 sends none after its handshake: data connections use TLS 1.2,
    still with forward secrecy and AEAD only, unless TLS 1.3 is the minimum.
    """
    max_version = None if min_version == "TLSv1.3" else "TLSv1.2"
    context = make_context(certfile, keyfile, min_version, max_version)
    context.set_options(SSL.OP_NO_TICKET)
    return context


# FTPSERVER_TLS_REQUIRE_SESSION_REUSE (vsftpd's require_ssl_reuse): a PROT P
# data connection must resume the TLS session of its control connection, which
# only the client that made the control connection can do.

# Sessions are kept by the server (session IDs, no tickets: see
# make_data_context), under this context, and for this long: a data
# connection that comes later finds no session to resume and is refused.
# OpenSSL's 2 hours would cut off long FTP sessions (a mirror job); no
# session outlives the cache's size limit either (SSL_CTX default: 20480).
SESSION_ID_CONTEXT = b"ftpserver_core"
SESSION_LIFETIME = 24 * 3600


def make_session_reuse_context(certfile, keyfile=None):
    """Return the one context of control and data connections when data
    connections must resume the control connection's session.

    One context because the server's session cache belongs to a context: a
    data connection resumes only a session its own context made. TLS 1.2
    on both channels: a TLS 1.3 session cannot be resumed by the TLS 1.2 data
    connections, and TLS 1.3 data connections would get the session tickets
    that truncate uploads (see make_data_context). Each TLS 1.3 resumption
    also derives new keys from a ticket of its own, while a TLS 1.2
    resumption keeps the session's master secret, which is what
    resumes_session() compares.
    """
    context = make_data_context(certfile, keyfile, "TLSv1.2")
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_session_id(SESSION_ID_CONTEXT)
    context.set_timeout(SESSION_LIFETIME)
    return context


def resumes_session(data_connection, control_connection):
    """Return True when the data connection's TLS handshake resumed the
    control connection's session.

    A TLS 1.2 resumption keeps the session's master secret; a full handshake
    (a client that does not reuse sessions, or a stranger) makes a fresh one,
    and so does resuming any other session (another client's own control
    connection): equal master secrets mean the same session.
    """
    if not isinstance(control_connection, SSL.Connection):
        return False
    if (
        data_connection.get_protocol_version_name() != "TLSv1.2"
        or control_connection.get_protocol_version_name() != "TLSv1.2"
    ):
        return False  # make_session_reuse_context allows nothing else
    data_key = data_connection.master_key()
    control_key = control_connection.master_key()
    if not data_key or not control_key:
        return False
    return hmac.compare_digest(data_key, control_key)


def session_reused(connection):
    """Return True when the connection's handshake resumed some session.

    Only says why a data connection was refused (a client that does not
    reuse sessions, or one that resumed another session). pyOpenSSL has no
    SSL_session_reused(): this calls OpenSSL's through pyOpenSSL's private
    ``_lib``, and answers None where that is missing.
    """
    try:
        from OpenSSL._util import lib
    except ImportError:  # pragma: no cover - a pyOpenSSL without it
        return None
    reused = getattr(lib, "SSL_session_reused", None)
    ssl = getattr(connection, "_ssl", None)
    if reused is None or ssl is None:
        return None
    return bool(reused(ssl))
