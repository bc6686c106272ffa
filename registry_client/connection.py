"""The channel to a registry: its address (with the default port), retry policy and credentials (TLS,
and the token on every call), and why a connection failed, in words a user can act on."""

from __future__ import annotations

import collections
import json
import os
import threading
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from modelregistry.v1 import registry_service_pb2 as pb

DEFAULT_PORT = 50051
DEFAULT_TARGET = f"localhost:{DEFAULT_PORT}"
TARGET_ENV = "MODEL_REGISTRY_TARGET"
TOKEN_ENV = "MODEL_REGISTRY_TOKEN"

_SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]


def _safe_to_repeat(method: MethodDescriptor) -> bool:
    """What the contract declares: reads (NO_SIDE_EFFECTS) and updates that set absolute values
    (IDEMPOTENT) can be repeated; so can the creates, because this client always sends them with a
    request_id, and the server answers a repeat with the first call's result. Deletes and RenameModel
    could fail on a second attempt after a first one that took effect."""
    level = method.GetOptions().idempotency_level
    repeatable = level in (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)
    unary = not (method.client_streaming or method.server_streaming)
    return unary and (repeatable or "request_id" in method.input_type.fields_by_name)


_RETRYABLE_METHODS = sorted(m.name for m in _SERVICE.methods if _safe_to_repeat(m))
SERVICE_CONFIG = json.dumps(
    {
        # Spread calls over every address the target resolves to (several replicas behind one DNS
        # name, or "ipv4:host1:port,host2:port"), skipping those that are down.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": _SERVICE.full_name, "method": m} for m in _RETRYABLE_METHODS],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    # CANCELLED by the server: gRPC cancels the calls a stopping server had
                    # received but not yet taken; a repeat of these methods is safe.
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ]
    }
)


def default_target() -> str:
    """The server address: $MODEL_REGISTRY_TARGET, else localhost:50051."""
    return with_default_port(os.environ.get(TARGET_ENV) or DEFAULT_TARGET)


# Name resolvers of gRPC whose addresses are not one host[:port] (ipv4: and ipv6: list several).
_OTHER_SCHEMES = ("ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:", "google-c2p:")


def with_default_port(target: str) -> str:
    """target with the registry's port, 50051, when it names a host without one ("localhost", "[::1]",
    "dns:///registry.internal"): gRPC would otherwise dial 443, the HTTPS port."""
    if "," in target or target.startswith(_OTHER_SCHEMES):
        return target
    prefix, address = "", target
    if target.startswith("dns:"):  # dns:host, dns:///host or dns://resolver/host
        slash = target.find("/", len("dns://")) if target.startswith("dns://") else len("dns:") - 1
        prefix, address = target[: slash + 1], target[slash + 1 :]
    if not address:
        return target
    if address.startswith("["):
        has_port = "]:" in address
    elif address.count(":") > 1:  # a bare IPv6 address
        address, has_port = f"[{address}]", False
    else:
        has_port = ":" in address
    return target if has_port else f"{prefix}{address}:{DEFAULT_PORT}"


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """The details of a call as an interceptor hands them on (grpc.ClientCallDetails is abstract)."""


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer TOKEN` to every call of a channel, streams included. gRPC sends call
    credentials over TLS only, so plaintext channels (loopback, tests) carry the token this way."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class _TraceContext(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the caller's current OpenTelemetry context (W3C `traceparent`, by the propagators
    configured) to every call, so that the server's spans continue the caller's trace. Used only when
    opentelemetry is importable; without a current span nothing is added."""

    def __init__(self, inject: Any) -> None:
        self._inject = inject

    def _with_context(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        carrier: dict[str, str] = {}
        self._inject(carrier)
        if not carrier:
            return details
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *carrier.items()],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_context(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_context(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_context(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_context(details), requests)


def _propagating(channel: grpc.Channel) -> grpc.Channel:
    """The channel, carrying the caller's trace context when opentelemetry is installed."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return channel
    return grpc.intercept_channel(channel, _TraceContext(propagate.inject))


def open_channel(
    target: str,
    *,
    token: str | None,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    channel: grpc.Channel | None = None,
) -> grpc.Channel:
    """A channel to target with the retry policy, over TLS when asked, carrying the token on every call:
    as call credentials on TLS (gRPC sends those over TLS only), else through _BearerToken. A given
    channel is used as it is, but for the token."""
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
    if channel is None and tls:
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca), private_key=_read(tls_key), certificate_chain=_read(tls_cert)
        )
        if token:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return _propagating(grpc.secure_channel(target, credentials, options=options))
    channel = channel or grpc.insecure_channel(target, options=options)
    return _propagating(grpc.intercept_channel(channel, _BearerToken(token)) if token else channel)


def wait_for_connection(channel: grpc.Channel, timeout: float) -> grpc.ChannelConnectivity | None:
    """Connect the channel and wait for the first verdict: READY, or TRANSIENT_FAILURE once every
    address failed its first attempt (a call would retry on and on); None when neither came in time."""
    verdicts = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE)
    settled: list[grpc.ChannelConnectivity] = []
    done = threading.Event()

    def on_change(state: grpc.ChannelConnectivity) -> None:
        if state in verdicts or state == grpc.ChannelConnectivity.SHUTDOWN:
            settled.append(state)
            done.set()

    channel.subscribe(on_change, try_to_connect=True)
    try:
        done.wait(timeout)
    finally:
        channel.unsubscribe(on_change)
    return settled[0] if settled else None


# What gRPC says when no connection could be made (as opposed to one lost during a call).
_NOT_CONNECTED = ("connections to all backends failing", "failed to connect to all addresses", "resolving", "DNS")


def unreachable(target: str, tls: bool, details: str) -> str | None:
    """Why the registry at target cannot be reached, with what to do, from gRPC's details of an
    UNAVAILABLE call; None when the details are not about connecting."""
    if not any(marker in details for marker in _NOT_CONNECTED):
        return None
    where = f"cannot reach the registry at {target}"
    if "resolving" in details or "DNS" in details:
        return f"{where}: the host name does not resolve (set --target or MODEL_REGISTRY_TARGET)"
    if "WRONG_VERSION_NUMBER" in details:
        return f"{where}: the server does not speak TLS: drop --tls, --tls-ca, --tls-cert and --tls-key"
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f"{where}: the server's certificate is not signed by a CA this client trusts: give the CA that "
            "signed it with --tls-ca PEM"
        )
    if "handshake" in details.lower():
        return f"{where}: the TLS handshake failed (check --tls-ca, --tls-cert and --tls-key): {details}"
    if "Socket closed" in details or "Connection reset" in details:
        if tls:
            return (
                f"{where}: the server closed the connection during the TLS handshake: if it asks for a "
                "client certificate, give --tls-cert and --tls-key (signed by a CA it trusts)"
            )
        return (
            f"{where}: the server closed the connection at once: if it serves TLS, connect with --tls-ca PEM "
            "(the CA that signed its certificate) or --tls (the system's CAs)"
        )
    return f"{where} (is the server running? set --target or MODEL_REGISTRY_TARGET)"
