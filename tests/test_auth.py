"""Bearer tokens and roles on a real server: who may do what, owners, the token file and its reload,
safe defaults, and the audit trail."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from modelregistry.v1 import registry_service_pb2 as pb

from registry_client import Registry
from registry_client.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    from_rpc_error,
)
from registry_server import auth
from registry_server.server import RegistryServer, build_server

from .conftest import TOKENS, write_tokens
from .servers import ServerProcess, console_script

SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]
# What each role may call, written out rather than derived from the server's table.
READS = {"GetModel", "ListModels", "ListModelLabels", "GetModelVersion", "ListModelVersions", "GetCheckpoint",
         "ListCheckpoints", "ListAliasHistory", "WatchEvents", "DownloadCheckpointFiles", "GetServerInfo"}
EDITS = {"CreateModel", "UpdateModel", "RenameModel", "UpdateModelMetadata", "ArchiveModel", "UnarchiveModel",
         "DeleteModel", "CreateModelVersion", "UpdateModelVersion", "DeleteModelVersion", "CreateCheckpoint",
         "DeleteCheckpoint", "SetModelAlias", "DeleteModelAlias", "UploadCheckpointFiles"}
ALLOWED = {"viewer": READS, "editor": READS | EDITS, "admin": READS | EDITS}


@pytest.fixture
def secured(database_url: str, tokens_file: str) -> Iterator[RegistryServer]:
    running = build_server(database_url, "127.0.0.1", 0, auth_tokens=tokens_file)
    try:
        yield running
    finally:
        running.stop(grace=None)


def client(server: RegistryServer, who: str | None) -> Registry:
    return Registry(f"127.0.0.1:{server.port}", token=TOKENS[who][0] if who else "", timeout=10)


def call(server: RegistryServer, method: str, token: str | None) -> grpc.StatusCode:
    """Calls `method` with an empty request: the code says whether the caller got past the gate.
    (A watch that got in waits for events until its deadline: DEADLINE_EXCEEDED.)"""
    request_type = getattr(pb, method + "Request")
    descriptor = SERVICE.methods_by_name[method]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                (True, False): channel.stream_unary}[descriptor.client_streaming, descriptor.server_streaming]
        rpc = kind(
            f"/{SERVICE.full_name}/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=getattr(pb, method + "Response").FromString,
        )
        request = iter([request_type()]) if descriptor.client_streaming else request_type()
        try:
            answer = rpc(request, metadata=metadata, timeout=10 if not descriptor.server_streaming else 1)
            if descriptor.server_streaming:
                list(answer)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                assert from_rpc_error(error).reason in ("ROLE_NOT_ALLOWED", "MISSING_TOKEN", "INVALID_TOKEN")
            return error.code()


def test_the_role_table_covers_every_rpc() -> None:
    assert READS | EDITS == {m.name for m in SERVICE.methods}


@pytest.mark.parametrize("who", ["viewer", "alice", "admin"])
def test_each_role_is_allowed_and_refused_the_rpcs_it_should(secured: RegistryServer, who: str) -> None:
    token, _, role = TOKENS[who]
    refused = {m.name for m in SERVICE.methods if call(secured, m.name, token) == grpc.StatusCode.PERMISSION_DENIED}
    assert refused == {m.name for m in SERVICE.methods} - ALLOWED[role]


@pytest.mark.parametrize(
    "token, reason",
    [(None, "MISSING_TOKEN"), ("not-a-token", "INVALID_TOKEN"), (TOKENS["admin"][0][:-1], "INVALID_TOKEN")],
)
def test_missing_or_wrong_token_is_unauthenticated(secured: RegistryServer, token: str | None, reason: str) -> None:
    with Registry(f"127.0.0.1:{secured.port}", token=token or "", timeout=10) as registry:
        with pytest.raises(UnauthenticatedError) as refused:
            registry.get_models()
        assert refused.value.reason == reason
        with pytest.raises(UnauthenticatedError):
            registry.create_model("m")
    with client(secured, "admin") as admin:
        assert admin.get_models() == []


def test_other_schemes_are_unauthenticated(secured: RegistryServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        stub = channel.unary_unary(
            f"/{SERVICE.full_name}/ListModels", request_serializer=pb.ListModelsRequest.SerializeToString
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub(pb.ListModelsRequest(), metadata=(("authorization", f"Basic {TOKENS['admin'][0]}"),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert from_rpc_error(refused.value).reason == "MISSING_TOKEN"


def test_token_from_the_environment(secured: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN", TOKENS["alice"][0])
    with Registry(f"127.0.0.1:{secured.port}", timeout=10) as registry:
        assert registry.create_model("m").owner == "alice"


def test_health_and_reflection_need_no_token(secured: RegistryServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        answer = next(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )
    assert SERVICE.full_name in {s.name for s in answer.list_services_response.service}


def test_the_principal_is_the_owner_and_only_owners_and_named_editors_change_a_model(secured: RegistryServer) -> None:
    """The ownership rule (README, Security): a model is changed by its owner, the editors it names, or
    an admin; renamed, archived, deleted and given editors by its owner or an admin. A checkpoint's
    files are uploaded, and it is deleted, by its owner or an admin. (Before: any editor could rename
    another's model and take its name, repoint its aliases, or overwrite anyone's checkpoint files.)"""

    def refused(reason: str, attempt) -> None:
        with pytest.raises(PermissionDeniedError) as refusal:
            attempt()
        assert refusal.value.reason == reason

    with client(secured, "alice") as alice, client(secured, "bob") as bob, client(secured, "admin") as admin:
        checkpoint = alice.create_checkpoint()
        assert checkpoint.owner == "alice"
        mine = alice.create_model("alices")
        theirs = bob.create_model("bobs")
        assert (mine.owner, theirs.owner) == ("alice", "bob")
        assert alice.get_models(owner="bob")[0].name == "bobs"
        version = theirs.register_version(checkpoint.uuid)
        theirs.set_alias("production", version.version)

        # Alice is not an editor of bob's model: she changes nothing of it.
        bobs = alice.get_model("bobs")
        refused("NOT_MODEL_EDITOR", lambda: bobs.set_description("edited by alice"))
        refused("NOT_MODEL_EDITOR", lambda: bobs.add_metadata({"k": "v"}))
        refused("NOT_MODEL_EDITOR", lambda: bobs.register_version(checkpoint.uuid))
        refused("NOT_MODEL_EDITOR", lambda: bobs.set_alias("production", 1))
        refused("NOT_MODEL_EDITOR", lambda: bobs.delete_alias("production"))
        refused("NOT_MODEL_EDITOR", lambda: bobs.get_version(1).set_comment("mine now"))
        refused("NOT_OWNER", lambda: bobs.rename("bobs-old"))  # and then take over the name: no
        refused("NOT_OWNER", lambda: bobs.archive())
        refused("NOT_OWNER", lambda: alice.delete_model("bobs"))
        refused("NOT_OWNER", lambda: bobs.get_version(1).delete())

        # Bob names her an editor: she may change the model and register, not rename, archive,
        # delete it or name editors.
        refused("NOT_MODEL_EDITOR", lambda: bobs.set_editors(["alice"]))
        assert theirs.set_editors(["alice", "alice"]).editors == ["alice"]
        bobs.set_description("edited by alice")
        alices_version = bobs.register_version(checkpoint.uuid, aliases=["staging"])
        assert alices_version.owner == "alice"
        bobs.set_alias("production", alices_version.version)
        refused("NOT_OWNER", lambda: bobs.rename("bobs-old"))
        refused("NOT_OWNER", lambda: bobs.set_editors(["alice", "carol"]))
        refused("NOT_OWNER", lambda: alice.delete_model("bobs"))
        bobs.set_alias("production", 1)
        bobs.delete_alias("staging")
        bobs.get_version(alices_version.version).delete()  # her own version in bob's model

        # Bob may not delete alice's version in alice's model.
        mine.register_version(checkpoint.uuid)
        refused("NOT_OWNER", lambda: bob.get_model("alices").get_version(1).delete())

        # Checkpoints have owners: uploads and deletes are the owner's (or an admin's).
        spare = alice.create_checkpoint(state=1)
        refused("NOT_OWNER", lambda: bob.delete_checkpoint(spare.uuid))
        refused("NOT_OWNER", lambda: upload_as(secured, "bob", spare.uuid))
        upload_as(secured, "alice", spare.uuid)
        alice.delete_checkpoint(spare.uuid)
        admins_spare = alice.create_checkpoint()
        admin.delete_checkpoint(admins_spare.uuid)

        alice.delete_model("alices")
        admin.delete_model("bobs")
        assert admin.get_models() == []


def upload_as(server: RegistryServer, who: str, uuid: str) -> None:
    """One small file uploaded to checkpoint `uuid` by `who`, through the raw stub."""
    import hashlib

    from modelregistry.v1 import checkpoint_pb2
    from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

    data = b"weights"
    header = checkpoint_pb2.CheckpointFile(path="w.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    messages = [
        pb.UploadCheckpointFilesRequest(checkpoint_uuid=uuid),
        pb.UploadCheckpointFilesRequest(file=header),
        pb.UploadCheckpointFilesRequest(chunk=data),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        try:
            pb_grpc.ModelRegistryServiceStub(channel).UploadCheckpointFiles(
                iter(messages), timeout=10, metadata=(("authorization", f"Bearer {TOKENS[who][0]}"),)
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error


def test_servers_without_tokens_record_no_owner(registry_target: str) -> None:
    with Registry(registry_target, token="ignored", timeout=10) as registry:
        model = registry.create_model("m")
        assert model.owner == ""
        registry.delete_model("m")


def test_token_file_format_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\n  tok1  alice editor  # trailing comment\ntok2 root admin\n")
    tokens = auth.TokenFile(str(path))
    assert tokens.authenticate("Bearer tok1")[0] == auth.Principal("alice", "editor")
    assert tokens.authenticate("bearer tok2")[0] == auth.Principal("root", "admin")
    for text, message in [
        ("secret-token alice\n", "line 1: expected TOKEN PRINCIPAL ROLE"),
        ("ok bob viewer\nsecret-token alice owner\n", "line 2: the third field is not a role"),
        # Written in the wrong order, the token stands where the role should: it must not be echoed.
        ("ok bob viewer\nalice editor secret-token\n", "line 2: the third field is not a role"),
        ("secret-token a viewer\nsecret-token b admin\n", "line 2: the same token appears twice"),
        ("# nothing but comments\n\n", "no tokens"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message) as refused:
            auth.TokenFile(str(path))
        assert "secret-token" not in str(refused.value)


def test_reload_replaces_tokens_and_keeps_them_when_the_file_is_bad(
    secured: RegistryServer, tokens_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Registry(f"127.0.0.1:{secured.port}", token="dave-token", timeout=10) as dave:
        with pytest.raises(UnauthenticatedError):
            dave.get_models()
        write_tokens(Path(tokens_file), {"dave": ("dave-token", "dave", "viewer")})
        assert secured.reload_tokens()
        assert dave.get_models() == []
        with client(secured, "admin") as old_admin, pytest.raises(UnauthenticatedError):
            old_admin.get_models()
        Path(tokens_file).write_text("dave-token dave\n")
        with caplog.at_level(logging.ERROR):
            assert not secured.reload_tokens()
        assert "line 1" in caplog.text and "dave-token" not in caplog.text
        assert dave.get_models() == []


def test_sighup_reloads_the_token_file_of_the_server_process(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"alice": TOKENS["alice"]})
    with ServerProcess(f"sqlite:///{tmp_path}/registry.db", "--auth-tokens", tokens) as server:
        with Registry(server.target, token="erin-token", timeout=10) as erin:
            with pytest.raises(UnauthenticatedError):
                erin.get_models()
            write_tokens(Path(tokens), {"erin": ("erin-token", "erin", "editor")})
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any("reloaded" in line for line in server.lines):
                time.sleep(0.05)
            assert erin.create_model("m").owner == "erin"
        assert server.stop() == 0
    log = "".join(server.lines)
    assert "erin-token" not in log and TOKENS["alice"][0] not in log


def test_without_tokens_only_loopback_is_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="--auth-tokens"):
        build_server(f"sqlite:///{tmp_path}/registry.db", "0.0.0.0", 0)
    assert not (tmp_path / "registry.db").exists()  # refused before touching anything
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        auth.check_exposure(host, False, False)
    auth.check_exposure("0.0.0.0", True, False)
    with caplog.at_level(logging.WARNING):
        auth.check_exposure("192.0.2.1", False, True)
    assert len(caplog.records) == 1 and "WITHOUT authentication" in caplog.records[0].getMessage()


def test_the_server_process_refuses_in_one_log_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [console_script("model-registry-server"), "--host", "0.0.0.0", "--port", "0",
         "--database-url", f"sqlite:///{tmp_path}/registry.db"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve 0.0.0.0 without authentication" in lines[0]
    assert not (tmp_path / "registry.db").exists()


def test_every_mutation_is_audited_and_no_token_is_logged(
    secured: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        with client(secured, "alice") as alice, client(secured, "viewer") as viewer, client(secured, "bob") as bob:
            checkpoint = alice.create_checkpoint()
            model = alice.create_model("m")
            model.register_version(checkpoint.uuid)
            model.set_alias("production", 1)
            model.delete_alias("production")
            alice.get_model("m")  # reads are not audited
            with pytest.raises(PermissionDeniedError):
                viewer.delete_model("m")
            with pytest.raises(PermissionDeniedError):
                bob.delete_checkpoint(checkpoint.uuid)
            with pytest.raises(InvalidArgumentError):  # a name holding a line separator: one line all the same
                alice.create_model("m\u2028{\"forged\": 1}\x85")
            with pytest.raises(PermissionDeniedError):  # a failed upload names its checkpoint
                upload_as(secured, "bob", checkpoint.uuid)
        with Registry(f"127.0.0.1:{secured.port}", token="wrong", timeout=10) as stranger:
            with pytest.raises(UnauthenticatedError):
                stranger.create_model("x")
    messages = [r.getMessage() for r in caplog.records if r.name == "registry_server.audit"]
    assert all(len(message.splitlines()) == 1 for message in messages)
    lines = [json.loads(message) for message in messages]
    assert lines == [
        {"principal": "alice", "rpc": "CreateCheckpoint", "object": f"checkpoints/{checkpoint.uuid}",
         "outcome": "OK", "reason": ""},
        {"principal": "alice", "rpc": "CreateModel", "object": "models/m", "outcome": "OK", "reason": ""},
        {"principal": "alice", "rpc": "CreateModelVersion", "object": "models/m/versions/1", "outcome": "OK",
         "reason": ""},
        {"principal": "alice", "rpc": "SetModelAlias", "object": "models/m/versions/1", "outcome": "OK", "reason": ""},
        {"principal": "alice", "rpc": "DeleteModelAlias", "object": "models/m/aliases/production", "outcome": "OK",
         "reason": ""},
        {"principal": "carol", "rpc": "DeleteModel", "object": "models/m", "outcome": "PERMISSION_DENIED",
         "reason": "ROLE_NOT_ALLOWED"},
        {"principal": "bob", "rpc": "DeleteCheckpoint", "object": f"checkpoints/{checkpoint.uuid}",
         "outcome": "PERMISSION_DENIED", "reason": "NOT_OWNER"},
        {"principal": "alice", "rpc": "CreateModel", "object": "models/m\u2028{\"forged\": 1}\x85",
         "outcome": "INVALID_ARGUMENT", "reason": "INVALID_NAME"},
        {"principal": "bob", "rpc": "UploadCheckpointFiles", "object": f"checkpoints/{checkpoint.uuid}",
         "outcome": "PERMISSION_DENIED", "reason": "NOT_OWNER"},
        {"principal": "", "rpc": "CreateModel", "object": "", "outcome": "UNAUTHENTICATED",
         "reason": "INVALID_TOKEN"},
    ]
    every_message = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(token in every_message for token, _, _ in TOKENS.values())


def test_sighup_reaches_every_worker(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens")
    with ServerProcess(f"sqlite:///{tmp_path}/registry.db", "--auth-tokens", tokens, workers=2) as server:
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum("tokens reloaded" in line for line in server.lines) < 2:
            time.sleep(0.05)
        assert sum("tokens reloaded" in line for line in server.lines) == 2
        assert server.stop() == 0


def test_request_ids_are_scoped_by_principal_and_deleted_results_are_not_found(secured: RegistryServer) -> None:
    """A request_id is the caller's own: another principal who sends it first neither blocks the
    owner's call (REQUEST_ID_REUSED) nor is handed the owner's object by replaying the same request.
    A retry whose object was deleted since is NOT_FOUND REQUEST_RESULT_DELETED (it was UNKNOWN, with
    SQL text in the details, for models and checkpoints)."""
    from registry_client.errors import AlreadyExistsError, NotFoundError

    with client(secured, "alice") as alice, client(secured, "bob") as bob:
        bobs = bob.create_model("squatted", request_id="pipeline-run-1")  # bob guessed alice's next id
        assert bobs.owner == "bob"
        alices = alice.create_model("fraud", request_id="pipeline-run-1")
        assert (alices.name, alices.owner) == ("fraud", "alice")
        assert alice.create_model("fraud", request_id="pipeline-run-1").owner == "alice"  # her retry
        with pytest.raises(AlreadyExistsError) as refused:  # the same request, replayed by bob
            bob.create_model("fraud", request_id="pipeline-run-1")
        assert refused.value.reason == "REQUEST_ID_REUSED"
        with pytest.raises(AlreadyExistsError) as refused:
            bob.create_model("fraud", request_id="bobs-own")
        assert refused.value.reason == "MODEL_ALREADY_EXISTS"

        checkpoint = alice.create_checkpoint(request_id="ckpt-1")
        alice.delete_checkpoint(checkpoint.uuid)
        alice.delete_model("fraud")
        for retry in (
            lambda: alice.create_checkpoint(request_id="ckpt-1"),
            lambda: alice.create_model("fraud", request_id="pipeline-run-1"),
        ):
            with pytest.raises(NotFoundError) as gone:
                retry()
            assert gone.value.reason == "REQUEST_RESULT_DELETED"
            assert "SELECT" not in gone.value.message
