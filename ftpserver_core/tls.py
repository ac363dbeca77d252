"""TLS for FTPS: the one place that imports the optional pyOpenSSL."""

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
