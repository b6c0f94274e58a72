"""TLS material from partners.toml and the credentials, contexts and channels made of it.

A gateway's own certificate and key ([self.tls]) serve its gRPC and HTTP listeners and
are the client certificate it presents when it calls a gateway or platform that speaks
TLS (mutual TLS, RFC 8446 §4.3.2 CertificateRequest). How to reach a far side (the CA
that signed its server certificate, the name in it) is that party's ``tls`` table.
Files are read and checked when the configuration loads, so a bad one stops start-up
with the line that names it, never the first call.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True, kw_only=True)
class ServerTls:
    """This gateway's listeners: [self.tls] (docs/configuration.md, Transport security)."""

    cert_path: Path
    key_path: Path
    cert: bytes = field(repr=False)  # PEM chain, leaf first
    key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)  # CAs trusted for callers
    require_client_cert: bool = False


@dataclass(frozen=True, kw_only=True)
class ChannelTls:
    """How this process reaches one TLS-speaking party: the CA to verify its server
    certificate, the name to expect in it, and the client certificate to present."""

    ca: bytes = field(repr=False)
    server_name: str | None = None
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)

    def presenting(self, identity: ServerTls | None) -> ChannelTls:
        """The same, presenting identity's certificate (mutual TLS) when there is one."""
        if identity is None:
            return self
        return dataclasses.replace(self, cert=identity.cert, key=identity.key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def read_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ValueError when there is none."""
    certs = x509.load_pem_x509_certificates(pem)  # raises ValueError on garbage or none
    return list(certs)


def check_key_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """ValueError unless key_pem is an unencrypted PEM private key for the leaf of cert_pem."""
    leaf = read_certificates(cert_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted: grpc cannot ask for a passphrase
        raise ValueError("the key is encrypted; give an unencrypted PKCS#8 PEM") from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != leaf.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise ValueError("the key does not belong to the certificate")


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """gRPC server credentials; with require_client_cert a caller without a certificate
    from client_ca is refused in the handshake, before any call is read."""
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.client_ca,
        require_client_auth=tls.require_client_cert)


def server_ssl_context(tls: ServerTls) -> ssl.SSLContext:
    """The HTTP listener's context. It asks for no client certificate: the main site
    serves only public data (JWKS, health), fetched by platforms and load balancers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_path, tls.key_path)
    return context


def open_channel(target: str, tls: ChannelTls | None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A plaintext channel to a party without TLS, else a verified TLS channel."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    opts = list(options)
    if tls.server_name:  # the name in its certificate when target is an IP or an alias
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, tls.credentials(), options=opts)


def host_of(address: str) -> str:
    """The host of "host:port", "[v6]:port" or ":port" (the gateway binds "" to 127.0.0.1)."""
    host, _, _ = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost" (RFC 6761 §6.3) are loopback; 0.0.0.0, :: and any
    other name are not (they may reach, or resolve to, every interface)."""
    host = host_of(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
