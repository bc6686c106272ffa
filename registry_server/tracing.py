"""OpenTelemetry tracing, in one place: off unless asked for (`--tracing`, or the standard
OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables),
and then needs model-registry[otel]. One SERVER span per RPC (interceptor.py), continuing the
caller's W3C trace context from the call's metadata (`traceparent`), with child spans for database
transactions (transactions.py) and storage calls (files.py).

Everything else is the SDK's standard configuration: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER(_ARG), OTEL_PROPAGATORS, OTEL_EXPORTER_OTLP_*. OTEL_TRACES_EXPORTER is otlp (the
default: OTLP over HTTP/protobuf), console, or none (spans are made and sampled but not exported)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # None: tracing off
_otel: Any = None  # the opentelemetry names used per call, imported once by configure()
_SERVER_ERRORS = {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}


def wanted(flag: bool = False) -> bool:
    """Whether tracing is asked for, by the flag or the standard environment variables."""
    env = os.environ.get
    exporter = env("OTEL_TRACES_EXPORTER", "")
    return flag or (exporter not in ("", "none")) or bool(
        env("OTEL_EXPORTER_OTLP_ENDPOINT") or env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(provider: Any = None) -> None:
    """Turns tracing on in this process with `provider` (a TracerProvider; tests pass one with an
    in-memory exporter), or one built from the OTEL_* variables. Raises ImportError without the SDK."""
    global _tracer, _otel
    import types

    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    _otel = types.SimpleNamespace(
        attach=context.attach, detach=context.detach, extract=propagate.extract,
        in_context=trace.set_span_in_context, current_span=trace.get_current_span,
        SERVER=SpanKind.SERVER, Status=Status, ERROR=StatusCode.ERROR,
    )
    if provider is None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "model-registry"})
        provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip() or "otlp"
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif exporter != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: this server knows otlp, console and none")
        trace.set_tracer_provider(provider)
    from . import __version__

    _tracer = provider.get_tracer("registry_server", __version__)


def disable() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


class CallSpan:
    """The span of one RPC, current on the thread that serves it between `enter` and `end`."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Any) -> None:
        self.span = span
        self._token = _otel.attach(_otel.in_context(span))

    def end(self, code: str, reason: str) -> None:
        span = self.span
        span.set_attribute("rpc.grpc.status_code", code)
        if reason:
            span.set_attribute("modelregistry.error_reason", reason)
        if code in _SERVER_ERRORS:
            span.set_status(_otel.Status(_otel.ERROR, f"{code} {reason}".strip()))
        span.end()
        try:
            _otel.detach(self._token)
        except ValueError:  # a stream ended on another thread than it began: nothing to restore there
            pass


def start_call(service: str, method: str, protocol: str, carrier: Mapping[str, str]) -> CallSpan | None:
    """The SERVER span of a call, child of the caller's context in `carrier` (gRPC metadata or HTTP
    headers), made current; None while tracing is off."""
    tracer = _tracer
    if tracer is None:
        return None
    span = tracer.start_span(
        f"{service}/{method}",
        context=_otel.extract(carrier),
        kind=_otel.SERVER,
        attributes={"rpc.system": protocol, "rpc.service": service, "rpc.method": method},
    )
    return CallSpan(span)


_OFF = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (a database transaction, a storage call); nothing while off."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes)


def current_ids() -> tuple[str, str] | None:
    """The trace and span ids (hex) of the current span, for log lines; None without one."""
    if _tracer is None:
        return None
    context = _otel.current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
