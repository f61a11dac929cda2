"""The certificate a controller presents when it listens beyond loopback.

The controller makes its own key and self-signed certificate once, in its
home (``tls/controller.key``, mode 0600, and ``tls/controller.crt``), and keeps
them across restarts so that agents' pinned fingerprints stay valid. Agents
pin the certificate's SHA-256 fingerprint (``cobalt agent-token`` prints it);
no certificate authority is involved. Delete the folder to make a new one (every
agent then needs the new fingerprint).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cobalt_common.errors import ConfigError

SERVER_NAME = "cobalt-controller"
"""The name in the certificate; agents check it (``ssl_target_name_override``)."""


@dataclass(frozen=True, slots=True)
class ControllerCertificate:
    key_pem: bytes
    cert_pem: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER bytes, 64 lowercase hex digits."""
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(self.cert_pem.decode())).hexdigest()

    @staticmethod
    def load_or_create(folder: Path) -> ControllerCertificate:
        key_path, cert_path = folder / "controller.key", folder / "controller.crt"
        if key_path.exists() and cert_path.exists():
            return ControllerCertificate(key_path.read_bytes(), cert_path.read_bytes())
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID
        except ImportError:
            raise ConfigError(
                "listening beyond loopback needs a certificate, which cobalt makes with the "
                "cryptography package: pip install 'cobalt[remote]'."
            ) from None
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        cert_path.write_bytes(cert_pem)
        return ControllerCertificate(key_pem, cert_pem)
