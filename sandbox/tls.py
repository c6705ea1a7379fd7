"""A self-signed certificate the sandbox makes for itself, for clients that only speak https.

The certificate names ``localhost``, ``127.0.0.1`` and the host served on; it
lives in a private temporary folder that is removed when the server stops.
Clients trust it by pointing at the certificate file (it is its own CA).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterator

__all__ = ["make_certificate", "self_signed"]


def make_certificate(host: str, *, days: int = 30) -> tuple[bytes, bytes]:
    """PEM certificate and PEM private key for ``host`` (plus localhost and 127.0.0.1).

    ``cryptography`` is imported here, so a portal without HTTPS does not need it.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise SystemExit(
            "the sandbox needs the cryptography package to make its own certificate for "
            "HTTPS: pip install 'b24-update-worker[sandbox]', or pass --cert-file and --key-file"
        ) from None

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bitrix24 sandbox")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for text in {host, "127.0.0.1"}:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            alt.append(x509.DNSName(text))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@contextlib.contextmanager
def self_signed(host: str) -> Iterator[tuple[str, str]]:
    """Paths of a fresh certificate and key, valid while the block runs."""
    cert_pem, key_pem = make_certificate(host)
    with tempfile.TemporaryDirectory(prefix="b24-sandbox-tls-") as folder:
        cert_path = os.path.join(folder, "cert.pem")
        key_path = os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as out:
            out.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        yield cert_path, key_path
