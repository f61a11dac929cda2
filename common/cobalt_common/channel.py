"""A channel to the controller: plain text on loopback, else TLS pinned
to the fingerprint of the certificate the controller created.

The controller's certificate is self-signed; no certificate authority vouches
for it. An agent instead knows the SHA-256 fingerprint of the certificate (it
comes with the agent's command line) and accepts exactly that certificate:
it fetches the certificate the server presents, compares fingerprints in
constant time, and then trusts only that certificate for the channel.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import ssl
from typing import Any

import grpc

from cobalt_common.errors import ControllerError, ControllerUnavailableError

PING_INTERVAL_MS = 2000
PING_TIMEOUT_MS = 6000
"""A peer that has not answered a ping this long is gone: its connection closes.
Generous, so that a ping queued behind a large payload on a slow link is not
taken for a dead peer."""
PINGS = [
    ("grpc.keepalive_time_ms", PING_INTERVAL_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    # gRPC enforces a ping's timeout with this one (default a minute).
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
"""Both ends ping: a peer that vanished without closing anything (a machine
switched off, a network cut, a frozen process) is noticed within
``PING_INTERVAL_MS + PING_TIMEOUT_MS`` even when no message flows."""
KEEPALIVE = [
    *PINGS,
    ("grpc.max_receive_message_length", 1 << 30),
    ("grpc.max_send_message_length", 1 << 30),
]


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ControllerError(f"{address!r} is not a controller address such as 10.0.0.5:50051.")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_fingerprint(text: str) -> str:
    """``"AB:CD:..."`` or ``"abcd..."`` as 64 lowercase hex digits."""
    digits = text.replace(":", "").strip().lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ControllerError(
            f"{text!r} is not a SHA-256 fingerprint; the controller prints its own with "
            "`cobalt agent-token`."
        )
    return digits


def fetch_certificate(host: str, port: int, timeout: float = 10.0) -> bytes:
    """The DER certificate the server at ``host:port`` presents (not yet trusted)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ControllerError(f"the controller at {host}:{port} presented no certificate.")
    return der


def open_channel(
    address: str, fingerprint: str, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A channel to the controller at ``address``.

    Without a fingerprint only a loopback address is allowed (plain text). With
    one, the channel is TLS and accepts only the certificate whose SHA-256
    matches it.
    """
    host, port = split_address(address)
    if not fingerprint:
        if not is_loopback(host):
            raise ControllerError(
                f"the controller at {address} is not on loopback, so the agent needs its "
                "certificate's fingerprint (--fingerprint; `cobalt agent-token` prints the "
                "whole command). Traffic beyond loopback is always encrypted."
            )
        return grpc.insecure_channel(address, options=[*KEEPALIVE, *(options or [])])
    want = normalize_fingerprint(fingerprint)
    try:
        der = fetch_certificate(host, port)
    except OSError as exc:
        raise ControllerUnavailableError(
            f"cannot reach the controller at {address}: {exc}"
        ) from None
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, want):
        raise ControllerError(
            f"the controller at {address} presented a certificate with fingerprint {got}, "
            f"not the pinned {want}: refusing to connect. If the controller's certificate "
            "was replaced, get the new fingerprint from `cobalt agent-token`."
        )
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    credentials = grpc.ssl_channel_credentials(root_certificates=pem)
    pinned = [
        *KEEPALIVE,
        *(options or []),
        ("grpc.ssl_target_name_override", "cobalt-controller"),
    ]
    return grpc.secure_channel(address, credentials, options=pinned)
