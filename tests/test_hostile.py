"""Hostile input, property-based: arbitrary and malformed requests to every RPC of a real server
(with authentication on) never end INTERNAL or UNKNOWN, every refusal carries an ErrorInfo reason,
and a refused request writes nothing."""

from __future__ import annotations

import collections
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelregistry.v1 import registry_service_pb2 as pb

from registry_client import Registry
from registry_client.errors import AlreadyExistsError, RegistryError, from_rpc_error
from registry_server.server import build_server
from registry_server.tables import AliasChange, Checkpoint, Event, Model, ModelAlias, ModelLabel, ModelVersion

from .conftest import TOKENS, empty_database, write_tokens

SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]
# Examples per database; CI runs both databases. Raise it to search harder.
EXAMPLES = int(os.environ.get("MODEL_REGISTRY_HYPOTHESIS_EXAMPLES", "2000"))
SEED_UUID = "00000000-0000-4000-8000-000000000001"
# A caller may be refused, or find nothing; the database is up, so never UNAVAILABLE, and one caller
# at a time never conflicts (ABORTED).
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Values that reach deeper than random text: what exists, and the edges of the validation rules.
KNOWN_TEXT = [
    "m", "archived", "M", "", " m", "m ", "a/b", "a\\b", "123", "x" * 256, "x" * 257, "\x00", "a\x00b",
    "\x1f", "é", "💥", SEED_UUID, SEED_UUID.upper(), "description", "metadata", "labels", "notes", "name",
    "comment", "loss", '"', "'", "$.a", "a.b", "%", "_", "*", "model_version.name", "nan",
]
ASCII_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
texts = st.one_of(st.sampled_from(KNOWN_TEXT), st.text(max_size=40), st.text(max_size=300))
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**60), 2**60).map(float) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.one_of(st.integers(max(low, -3), min(high, 5)), st.integers(low, high), st.sampled_from([low, high]))
    if field.type == FieldDescriptor.TYPE_STRING:
        return texts
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if field.type == FieldDescriptor.TYPE_DOUBLE else 32)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return messages(field.message_type)


def _field_values(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(_scalars(key), _scalars(value), max_size=5)
    if field.is_repeated:
        return st.lists(_scalars(field), max_size=5)
    return _scalars(field)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name) if field.is_repeated or field.message_type is not None else None
        if isinstance(value, dict):
            target.update(value)
        elif isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@functools.cache
def messages(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Any message of this type, field by field, with well-known types built from what they hold."""
    cls = _message_class(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":
        return st.dictionaries(texts, json_values, max_size=5).map(lambda value: _struct(cls, value))
    if descriptor.full_name == "google.protobuf.FieldMask":
        paths = st.sampled_from(["description", "metadata", "labels", "notes", "name", "comment", "owner"]) | texts
        return st.lists(paths, max_size=4).map(lambda values: cls(paths=values))
    fields = {field.name: _field_values(field) for field in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _struct(cls: type[Message], value: dict[str, Any]) -> Message:
    struct = cls()
    struct.update(value)
    return struct


def _mutated(data: bytes, draw: Callable[..., Any]) -> bytes:
    """Bytes near a valid request: cut short, padded with garbage, or with bytes flipped."""
    how = draw(st.sampled_from(["cut", "append", "flip", "invalid utf-8"]))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        return data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    if how == "invalid utf-8":
        # Field 1 is a string in most requests: a length-delimited value that is not UTF-8.
        return b"\x0a\x02\xc3\x28" + data
    return data + draw(st.binary(min_size=1, max_size=32))


@st.composite
def calls(draw: Callable[..., Any]) -> tuple[str, tuple[tuple[str, str], ...], bytes]:
    method = draw(st.sampled_from(list(SERVICE.methods)))
    payload = draw(messages(method.input_type)).SerializeToString()
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "random"]))
    if kind == "mutated":
        payload = _mutated(payload, draw)
    elif kind == "random":
        payload = draw(st.binary(max_size=64))
    # Mostly callers the registry knows, so that most requests reach the registry's own checks.
    caller = draw(st.sampled_from(["admin", "admin", "admin", "alice", "bob", "viewer", None, "bogus"]))
    if caller is None:
        metadata: tuple[tuple[str, str], ...] = ()
    else:
        token = TOKENS[caller][0] if caller in TOKENS else draw(st.text(ASCII_PRINTABLE, max_size=40))
        scheme = draw(st.sampled_from(["Bearer "] * 5 + ["bearer ", "Basic ", ""]))
        metadata = (("authorization", scheme + token),)
    return method.name, metadata, payload


def _connect(url: str) -> Any:
    """A plain DB-API connection that sees every commit (not peewee's, whose tables the server binds)."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    return connection


def _snapshot(connection: Any) -> list[list[tuple[Any, ...]]]:
    rows = []
    for table in (Model, ModelVersion, Checkpoint, ModelLabel, ModelAlias, AliasChange, Event):
        cursor = connection.cursor()
        cursor.execute(f"SELECT * FROM {table._meta.table_name} ORDER BY 1")
        rows.append(cursor.fetchall())
    return rows


def _seed(registry: Registry) -> None:
    """The objects the requests' known names point at; made again when a request deleted them."""
    steps = [
        lambda: registry.create_checkpoint(uuid=SEED_UUID, metrics={"loss": 0.5}),
        lambda: registry.create_model("m", labels=["a"], metadata={"k": 1}),
        lambda: registry.create_model("archived"),
    ]
    for step in steps:
        try:
            step()
        except AlreadyExistsError:
            pass
    model = registry.get_model("m")
    if model.archived:
        model.unarchive()
    if model.get_version() is None:
        model.register_version(SEED_UUID)
    archived = registry.get_model("archived")
    if not archived.archived:
        archived.archive()


def _invoke(channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...], payload: bytes) -> None:
    """One call with raw bytes, of whatever shape the method has. A stream of the server's is read for
    a moment and then cancelled by us: a watch that got in streams on for as long as it is let."""
    path = f"/{SERVICE.full_name}/{method}"
    descriptor = SERVICE.methods_by_name[method]
    if descriptor.client_streaming:
        channel.stream_unary(path)(iter([payload]), metadata=metadata, timeout=30)
    elif descriptor.server_streaming:
        stream = channel.unary_stream(path)(payload, metadata=metadata, timeout=30)
        timer = threading.Timer(0.1, stream.cancel)
        timer.start()
        try:
            for _ in stream:
                pass
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED or not timer.finished.is_set():
                raise
        finally:
            timer.cancel()
    else:
        channel.unary_unary(path)(payload, metadata=metadata, timeout=30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hostile_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory: Path = tmp_path_factory.mktemp("hostile")
    with empty_database(request.param, directory) as url:
        running = build_server(url, "127.0.0.1", 0, auth_tokens=write_tokens(directory / "tokens"))
        target = f"127.0.0.1:{running.port}"
        db = _connect(url)
        try:
            with Registry(target, token=TOKENS["admin"][0]) as admin, grpc.insecure_channel(target) as channel:
                _seed(admin)
                yield channel, db, lambda: _seed(admin)
        finally:
            db.close()
            running.stop(grace=2)


def test_no_request_ends_internal_or_writes_when_refused(hostile_target: Any) -> None:
    channel, db, seed = hostile_target
    state = {"snapshot": _snapshot(db)}
    outcomes: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(call=calls())
    def property(call: tuple[str, tuple[tuple[str, str], ...], bytes]) -> None:
        method, metadata, payload = call
        try:
            _invoke(channel, method, metadata, payload)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert code in EXPECTED, f"{method}: {code} {error.details()}"
            assert from_rpc_error(error).reason, f"{method}: {code} without an ErrorInfo reason"
        assert code in EXPECTED
        outcomes[code.name] += 1
        if code == grpc.StatusCode.OK:
            if not method.startswith(("Get", "List", "Watch", "Download")):
                try:
                    seed()
                except RegistryError:
                    pass
                state["snapshot"] = _snapshot(db)
            return
        assert _snapshot(db) == state["snapshot"], f"{method} was refused ({code.name}) but changed the database"

    property()
    print(f"{sum(outcomes.values())} requests: {dict(outcomes)}")  # shown with pytest -s
    assert sum(outcomes.values()) >= EXAMPLES
