"""Every documented limit, enforced by a real server: the status, the ErrorInfo reason, and nothing
written by a request over a limit."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelregistry.v1 import registry_service_pb2 as pb
from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

from registry_client import Registry
from registry_client.errors import InvalidArgumentError, ResourceExhaustedError, from_rpc_error
from registry_server import validation
from registry_server.server import MAX_REQUEST_BYTES, build_server
from registry_server.store import ModelQuery, RegistryStore

KIB = 1024


def over_limit(registry: Registry, reason: str, attempt: Callable[[], Any]) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        attempt()
    assert refused.value.reason == reason


def test_field_limits(registry_target: str) -> None:
    with Registry(registry_target, timeout=30) as registry:
        longest = "n" * validation.MAX_NAME_LENGTH
        assert registry.create_model(longest).name == longest
        over_limit(registry, "INVALID_NAME", lambda: registry.create_model(longest + "n"))

        big = {"blob": "x" * validation.MAX_METADATA_BYTES}
        over_limit(registry, "VALUE_TOO_LARGE", lambda: registry.create_model("a", metadata=big))
        over_limit(registry, "VALUE_TOO_LONG", lambda: registry.create_model("a", notes="é" * (32 * KIB + 1)))
        labels = [f"l{i}" for i in range(validation.MAX_LABELS + 1)]
        over_limit(registry, "TOO_MANY_LABELS", lambda: registry.create_model("a", labels=labels))
        model = registry.create_model("a", labels=labels[:-1], notes="é" * (32 * KIB))
        assert len(model.labels) == validation.MAX_LABELS

        over_limit(registry, "VALUE_TOO_LARGE", lambda: model.add_metadata(big))
        over_limit(registry, "TOO_MANY_LABELS", lambda: model.set_labels(labels))
        over_limit(registry, "VALUE_TOO_LONG", lambda: model.set_description("d" * (validation.MAX_TEXT_LENGTH + 1)))
        checkpoint = registry.create_checkpoint()
        version = model.register_version(checkpoint.uuid)
        over_limit(registry, "VALUE_TOO_LONG", lambda: version.set_notes("x" * (validation.MAX_NOTES_BYTES + 1)))
        over_limit(registry, "TOO_MANY_LABELS", lambda: version.set_labels(labels))
        huge_metrics = {"m": "x" * validation.MAX_CHECKPOINT_JSON_BYTES}
        over_limit(registry, "VALUE_TOO_LARGE", lambda: registry.create_checkpoint(metrics=huge_metrics))

        # Nothing of the refused requests was written.
        model.reload()
        assert (model.metadata, len(model.labels), model.description) == ({}, validation.MAX_LABELS, "")
        assert [m.name for m in registry.get_models()] == ["a", longest]
        assert len(registry.get_checkpoints()) == 1
        assert registry.get_model("a").get_version().notes == ""


def test_page_size_is_lowered_to_the_maximum_and_negative_is_refused(
    registry_target: str, store: RegistryStore
) -> None:
    with store.db.atomic():
        for _ in range(validation.MAX_PAGE_SIZE + 1):
            store.create_checkpoint({})
    with grpc.insecure_channel(registry_target) as channel:
        stub = pb_grpc.ModelRegistryServiceStub(channel)
        page = stub.ListCheckpoints(pb.ListCheckpointsRequest(page_size=5000), timeout=30)
        assert len(page.checkpoints) == validation.MAX_PAGE_SIZE
        assert page.next_page_token and page.total_size == validation.MAX_PAGE_SIZE + 1
        assert len(stub.ListCheckpoints(pb.ListCheckpointsRequest(), timeout=30).checkpoints) == 50
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCheckpoints(pb.ListCheckpointsRequest(page_size=-1), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_requests_over_the_size_limit_are_resource_exhausted(database_url: str) -> None:
    running = build_server(database_url, "127.0.0.1", 0, max_request_bytes=64 * KIB)
    try:
        with Registry(f"127.0.0.1:{running.port}", timeout=30) as registry:
            with pytest.raises(ResourceExhaustedError):
                registry.create_model("m", notes="n" * (64 * KIB))
            assert registry.create_model("m", notes="n" * (60 * KIB)).name == "m"
            assert [m.name for m in registry.get_models()] == ["m"]
    finally:
        running.stop(grace=None)
    assert MAX_REQUEST_BYTES == 4 * KIB * KIB  # the documented default


def test_calls_over_the_concurrency_limit_are_refused_not_queued(tmp_path: Path) -> None:
    """Four writers at once, with the limit at two and the database locked by this test: two wait
    for the lock, the other two are refused at once, and the two admitted finish once it is free."""
    path = tmp_path / "registry.db"
    running = build_server(f"sqlite:///{path}", "127.0.0.1", 0, max_concurrent_rpcs=2)
    lock = sqlite3.connect(path, isolation_level=None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ModelRegistryServiceStub(channel)
            lock.execute("BEGIN IMMEDIATE")
            finished: queue.Queue[grpc.Future] = queue.Queue()
            writers = {stub.CreateModel.future(pb.CreateModelRequest(name=n), timeout=60): n for n in "abcd"}
            for writer in writers:
                writer.add_done_callback(finished.put)
            refused = [finished.get(timeout=8), finished.get(timeout=8)]  # while the lock is still held
            assert [w.code() for w in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            lock.execute("ROLLBACK")
            admitted = sorted(writers[w] for w in writers if w not in refused)
            assert sorted(w.result().model.name for w in writers if w not in refused) == admitted
            names = [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models]
            assert names == admitted
    finally:
        lock.close()
        running.stop(grace=10)


def test_every_repeated_request_field_declares_a_cap_and_every_rpc_its_role() -> None:
    """The contract declares the cap of every repeated field a request can carry (max_items), and the
    role and idempotency of every RPC; a new RPC or field without them fails here."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    from registry_server import contract

    for method in contract.SERVICE.methods:
        assert contract.undeclared_repeated_fields(method.input_type) == [], method.name
        assert contract.RPCS[method.name].role in ("viewer", "editor", "admin")
    # An RPC without a minimum_role is refused when the contract is read.
    file = descriptor_pb2.FileDescriptorProto(name="undeclared.proto", package="undeclared")
    file.message_type.add(name="Empty")
    service = file.service.add(name="Undeclared")
    service.method.add(name="Do", input_type=".undeclared.Empty", output_type=".undeclared.Empty")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    undeclared = pool.FindServiceByName("undeclared.Undeclared")
    with pytest.raises(TypeError, match="declares no"):
        contract._rpc(undeclared.methods_by_name["Do"])


def test_repeated_fields_are_capped_after_deduplication(registry_target: str) -> None:
    """Lists in requests that once broke the server: 100 and 500 label filters (SQLite parser stack
    overflow, then recursion: UNAVAILABLE and UNKNOWN), 50,000 aliases in one registration (the write
    lock held for ~54 s), 300,000 kinds in one watch, one path asked 5,000 times in a download."""
    channel = grpc.insecure_channel(registry_target)
    stub = pb_grpc.ModelRegistryServiceStub(channel)
    with channel, Registry(registry_target, timeout=30) as registry:
        labels = [f"l{i}" for i in range(validation.MAX_LABELS)]
        registry.create_model("tagged", labels=labels)
        assert [m.name for m in registry.get_models(labels=labels)] == ["tagged"]  # the most a model can carry
        assert [m.name for m in registry.get_models(labels=labels[:1] * 500)] == ["tagged"]  # duplicates count once
        for count in (100, 500):
            with pytest.raises(InvalidArgumentError) as refused:
                registry.get_models(labels=[f"l{i}" for i in range(count)])
            assert refused.value.reason == "TOO_MANY_LABELS"

        uuid = registry.create_checkpoint().uuid
        with pytest.raises(InvalidArgumentError) as refused:
            registry.register_version("tagged", uuid, aliases=[f"a{i}" for i in range(50_000)])
        assert refused.value.reason == "TOO_MANY_ALIASES"
        version = registry.register_version("tagged", uuid, aliases=[f"a{i}" for i in range(16)] * 3)
        assert len(version.aliases) == 16
        assert registry.get_model("tagged").num_versions == 1  # the refused one wrote nothing

        events = stub.WatchEvents(pb.WatchEventsRequest(kinds=[1] * 300_000), timeout=30)
        assert next(events).event.model_name == "tagged"
        events.cancel()
        with pytest.raises(grpc.RpcError) as refused_kinds:
            next(stub.WatchEvents(pb.WatchEventsRequest(kinds=list(range(1, 40))), timeout=30))
        assert refused_kinds.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(refused_kinds.value).reason == "TOO_MANY_KINDS"


def nested(depth: int) -> object:
    value: object = 1.0
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}  # the object itself is level 1


def test_what_is_accepted_can_always_be_read_back(registry_target: str) -> None:
    """A checkpoint whose metadata nested a list 48 deep was accepted, and then every read of a version
    embedding it failed INTERNAL for every caller; 40 models at the field limits made ListModels' default
    page 5.4 MiB (RESOURCE_EXHAUSTED for every caller). Now JSON nests at most MAX_JSON_DEPTH deep, and a
    page ends early, with a token, before its items exceed the page byte budget."""
    from registry_server.servicer import PAGE_BYTES

    with Registry(registry_target, timeout=60) as registry:
        with pytest.raises(InvalidArgumentError) as refused:
            registry.create_checkpoint(metadata=nested(48))
        assert refused.value.reason in ("JSON_TOO_DEEP", "MALFORMED_REQUEST")
        with pytest.raises(InvalidArgumentError) as refused:
            registry.create_checkpoint(metadata=nested(validation.MAX_JSON_DEPTH + 1))
        assert refused.value.reason == "JSON_TOO_DEEP"
        deepest = registry.create_checkpoint(metadata=nested(validation.MAX_JSON_DEPTH), metrics=nested(validation.MAX_JSON_DEPTH))
        model = registry.create_model("deep", metadata=nested(validation.MAX_JSON_DEPTH))
        model.register_version(deepest.uuid, metadata=nested(validation.MAX_JSON_DEPTH))
        assert model.get_version().checkpoint.metadata == nested(validation.MAX_JSON_DEPTH)
        assert len(model.get_versions()) == 1

        big = {"blob": "x" * (validation.MAX_METADATA_BYTES - 20)}
        notes = "n" * (validation.MAX_NOTES_BYTES - 1)
        labels = [f"{i:03d}" + "l" * (validation.MAX_LABEL_LENGTH - 3) for i in range(validation.MAX_LABELS)]
        for i in range(40):
            registry.create_model(f"big-{i:02d}", description="d" * validation.MAX_TEXT_LENGTH, metadata=big,
                                  notes=notes, labels=labels)
    with grpc.insecure_channel(registry_target, options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)]) as channel:
        stub = pb_grpc.ModelRegistryServiceStub(channel)
        names, token, pages = [], "", 0
        while True:
            page = stub.ListModels(pb.ListModelsRequest(page_token=token), timeout=60)
            assert page.ByteSize() <= PAGE_BYTES + 256 * 1024  # the budget, plus the item that crossed it
            names += [m.name for m in page.models]
            pages += 1
            token = page.next_page_token
            if not token:
                break
    assert names == [f"big-{i:02d}" for i in range(40)] + ["deep"]
    assert pages >= 3


def test_page_tokens_are_signed_and_every_bad_one_is_invalid_page_token(tmp_path: Path, registry_target: str) -> None:
    """Page tokens were an unkeyed hash: forgeable, and nested JSON, lone surrogates or NUL inside one
    ended UNKNOWN. They are signed with the database's key now: anything else is INVALID_PAGE_TOKEN."""
    import base64
    import json

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("=")

    with Registry(registry_target, timeout=10) as registry:
        for i in range(3):
            registry.create_model(f"m{i}")
    channel = grpc.insecure_channel(registry_target)
    stub = pb_grpc.ModelRegistryServiceStub(channel)
    with channel:
        token = stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=10).next_page_token
        assert stub.ListModels(pb.ListModelsRequest(page_size=1, page_token=token), timeout=10).models[0].name == "m1"
        payload, mac = token.split(".")
        forged_position = b64(json.dumps({"q": json.loads(base64.urlsafe_b64decode(payload + "==="))["q"], "a": ["m0"]}))
        other_database = store_token(tmp_path)
        for bad in [
            forged_position + "." + mac,  # a position of the caller's choosing, under the old signature
            forged_position,  # the old, unsigned form
            # one character of the signature changed (the first: a last base64 character may carry unused bits)
            f"{payload}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}",
            b64('{"q": {"q": {"q": []}}, "a": [[[[]]]]}'),
            b64('{"q": "x", "a": ["\\ud800"]}') + "." + mac,
            "abc\x00def." + mac,
            token + "." + mac,
            other_database,
            "%%%%",
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListModels(pb.ListModelsRequest(page_size=1, page_token=bad), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert from_rpc_error(refused.value).reason == "INVALID_PAGE_TOKEN", bad


def store_token(directory: Path) -> str:
    """A genuine token of another registry's database."""
    from registry_server import db as database

    db = database.connect(f"sqlite:///{directory}/other.db")
    database.migrate(db)
    try:
        with db.connection_context():
            store = RegistryStore(db)
            for name in ("a", "b"):
                store.create_model(name)
            return store.list_models(ModelQuery(), 1).next_page_token
    finally:
        db.close_all()
