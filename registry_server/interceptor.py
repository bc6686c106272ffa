"""The gate of the registry service on a real server: who calls (bearer token), whether their role
allows the RPC, requests that do not even parse, and an audit line for every mutation. Health and
reflection pass untouched."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterator

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from . import auth, errors
from .servicer import STATUS_CODES, rich_status

audit_log = logging.getLogger("registry_server.audit")


def _is_mutation(rpc: str) -> bool:
    return not rpc.startswith(auth.READ_PREFIXES)


def _object(request: Any, response: Any) -> str:
    """The object a mutation is about, as a path: models/NAME[/versions/N] or checkpoints/UUID."""
    if hasattr(request, "model_name"):
        created = getattr(response, "model_version", None)
        version = (created.version if created is not None else 0) or getattr(request, "version", 0)
        return f"models/{request.model_name}" + (f"/versions/{version}" if version else "")
    if hasattr(request, "uuid"):
        return f"checkpoints/{request.uuid}"
    if request is None and hasattr(response, "checkpoint"):  # an upload: the checkpoint it filled
        return f"checkpoints/{response.checkpoint.uuid}"
    if hasattr(request, "checkpoint"):
        created = getattr(response, "checkpoint", None)
        return f"checkpoints/{(created.uuid if created is not None else '') or request.checkpoint.uuid}"
    return f"models/{getattr(request, 'name', '')}" if request is not None else ""


def _reason(context: grpc.ServicerContext) -> str:
    """The ErrorInfo reason the call ends with, if any."""
    for key, value in context.trailing_metadata() or ():
        if key == rpc_status.GRPC_DETAILS_METADATA_KEY:
            status = rpc_status.status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


def _audit(principal: str, rpc: str, obj: str, outcome: str, reason: str) -> None:
    """One JSON object a line, so that log tools can filter by any field."""
    audit_log.info(
        json.dumps(
            {"principal": principal, "rpc": rpc, "object": obj, "outcome": outcome, "reason": reason},
            ensure_ascii=False,
        )
    )


class RegistryInterceptor(grpc.ServerInterceptor):
    """Authenticates and authorizes calls of `service`, parses their requests, audits mutations.

    With `tokens` None nobody is asked for a token: every call runs as auth.ANONYMOUS."""

    def __init__(self, service: str, tokens: auth.TokenFile | None) -> None:
        self._prefix = f"/{service}/"
        self.tokens = tokens

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler
        rpc = details.method[len(self._prefix) :]
        metadata = dict(details.invocation_metadata or ())
        parse, serialize = handler.request_deserializer, handler.response_serializer

        def admit(raw: bytes | None, context: grpc.ServicerContext) -> tuple[auth.Principal, Any]:
            """The caller and its parsed request (None for a client stream); aborts the call otherwise."""
            principal, request = auth.ANONYMOUS, None
            try:
                principal = self._principal(metadata.get("authorization"))
                request = _parse(parse, raw) if raw is not None else None
                auth.authorize(principal, rpc)
            except errors.RegistryError as refusal:
                if _is_mutation(rpc):
                    outcome = STATUS_CODES[type(refusal)].name
                    _audit(principal.name, rpc, _object(request, None), outcome, refusal.reason)
                context.abort_with_status(rich_status(refusal))
            return principal, request

        def serve_as(principal: auth.Principal, call: Callable[[], Any], request: Any, context: grpc.ServicerContext) -> Any:
            token = auth.set_current(principal)
            response = None
            try:
                response = call()
                return response
            finally:
                auth.reset_current(token)
                if _is_mutation(rpc):
                    code = context.code() or grpc.StatusCode.OK
                    _audit(principal.name, rpc, _object(request, response), code.name, _reason(context))

        if handler.unary_unary is not None:
            serve = handler.unary_unary

            def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
                principal, request = admit(raw, context)
                return serve_as(principal, lambda: serve(request, context), request, context)

            return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serialize)
        if handler.unary_stream is not None:  # WatchEvents, DownloadCheckpointFiles: reads
            stream = handler.unary_stream

            def unary_stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
                principal, request = admit(raw, context)
                token = auth.set_current(principal)
                try:
                    yield from stream(request, context)
                finally:
                    auth.reset_current(token)

            return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=serialize)
        if handler.stream_unary is not None:  # UploadCheckpointFiles
            upload = handler.stream_unary

            def stream_unary(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                principal, _ = admit(None, context)
                requests = (_parse(parse, raw) for raw in raw_requests)  # refused as the handler reads them
                return serve_as(principal, lambda: upload(requests, context), None, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, response_serializer=serialize)
        return handler

    def _principal(self, authorization: str | None) -> auth.Principal:
        return auth.ANONYMOUS if self.tokens is None else self.tokens.authenticate(authorization)


def _parse(parse: Callable[[bytes], Any], raw: bytes) -> Any:
    """grpc would answer INTERNAL to bytes that are not the request message; they are the caller's error."""
    try:
        return parse(raw)
    except DecodeError as error:
        raise errors.invalid("MALFORMED_REQUEST", f"the request is not a valid message: {error}")


