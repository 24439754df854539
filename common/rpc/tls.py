"""TLS for the servers and for this package's own clients (``cqrs up``, ``cqrs probe``).

Server: ``CQRS_TLS_CERT`` + ``CQRS_TLS_KEY`` (PEM files) make both servers TLS-only;
``CQRS_TLS_CLIENT_CA`` also requires a client certificate signed by that CA (mutual
TLS), whose common name then becomes the subject recorded with the caller's events when
no API token names one. Files are read once, at start-up.

Client: ``CQRS_TLS_CA`` (the CA that signed the servers' certificates; the system's roots
when unset), ``CQRS_TLS_CLIENT_CERT`` / ``CQRS_TLS_CLIENT_KEY`` for mutual TLS and
``CQRS_CLIENT_TOKEN`` (``authorization: Bearer``) for the calls this package makes.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from common.settings import Settings


class TlsError(ValueError):
    """A TLS setting that cannot be used."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{what}={path!r}: {exc.strerror}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The servers' TLS credentials, or None for plaintext (no certificate configured)."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise TlsError("CQRS_TLS_CLIENT_CA needs CQRS_TLS_CERT and CQRS_TLS_KEY")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise TlsError("CQRS_TLS_CERT and CQRS_TLS_KEY go together")
    pair = (_read(settings.tls_key, "CQRS_TLS_KEY"), _read(settings.tls_cert, "CQRS_TLS_CERT"))
    client_ca = (
        _read(settings.tls_client_ca, "CQRS_TLS_CLIENT_CA") if settings.tls_client_ca else None
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def uses_tls(settings: Settings) -> bool:
    """Whether this package's clients should speak TLS to the servers."""
    return bool(settings.tls_cert or settings.tls_ca)


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials for this package's own channels, or None for plaintext."""
    if not uses_tls(settings):
        return None
    roots = _read(settings.tls_ca, "CQRS_TLS_CA") if settings.tls_ca else None
    key = _read(settings.tls_client_key, "CQRS_TLS_CLIENT_KEY") if settings.tls_client_key else None
    cert = (
        _read(settings.tls_client_cert, "CQRS_TLS_CLIENT_CERT")
        if settings.tls_client_cert
        else None
    )
    return grpc.ssl_channel_credentials(roots, key, cert)


def channel(settings: Settings, address: str) -> grpc.Channel:
    """A blocking channel to one of our servers as ``settings`` say to reach them."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials)


def call_metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The metadata our own clients send (the API token, when one is configured)."""
    return (("authorization", f"Bearer {settings.client_token}"),) if settings.client_token else ()
