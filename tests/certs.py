"""Self-signed certificates for the FTPS tests, made with ``cryptography``.

``make_certificate(directory)`` writes a certificate for ``localhost`` and
``127.0.0.1`` with its key, the two in one file, a key that matches nothing
and a file that is no certificate at all. Test modules wrap it in a
session-scoped fixture::

    @pytest.fixture(scope="session")
    def tls_cert(tmp_path_factory):
        return make_certificate(tmp_path_factory.mktemp("tls"))
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    """Paths (str) of the PEM files written by :func:`make_certificate`."""

    certfile: str  # the certificate alone
    keyfile: str  # its private key
    combined: str  # certificate then key, for CERTFILE without KEYFILE
    other_keyfile: str  # a valid key that does not match the certificate
    garbage: str  # a readable file that holds no PEM at all
    common_name: str


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_certificate(directory, common_name="localhost"):
    """Write a self-signed certificate and friends into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(common_name),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = _key_pem(key)
    files = CertFiles(
        certfile=str(directory / "cert.pem"),
        keyfile=str(directory / "key.pem"),
        combined=str(directory / "combined.pem"),
        other_keyfile=str(directory / "other-key.pem"),
        garbage=str(directory / "garbage.pem"),
        common_name=common_name,
    )
    Path(files.certfile).write_bytes(cert_pem)
    Path(files.keyfile).write_bytes(key_pem)
    Path(files.combined).write_bytes(cert_pem + key_pem)
    Path(files.other_keyfile).write_bytes(_key_pem(_key()))
    Path(files.garbage).write_text("this is not a PEM certificate\n")
    for path in (files.keyfile, files.combined, files.other_keyfile):
        Path(path).chmod(0o600)
    return files
