"""The servicer's translation and error mapping, through grpcio-testing (no network, no interceptors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from modelregistry.v1 import checkpoint_pb2, model_pb2
from modelregistry.v1 import registry_service_pb2 as pb

from registry_server.servicer import ModelRegistryServicer
from registry_server.storage import LocalStorage
from registry_server.store import RegistryStore

SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]


class Call:
    """One finished unary call: response, code and the ErrorInfo of its status."""

    def __init__(self, response: Any, trailing: Any, code: grpc.StatusCode, details: str) -> None:
        self.response, self.code, self.details = response, code, details
        self.reason, self.metadata = "", {}
        for key, value in trailing or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                info = error_details_pb2.ErrorInfo()
                assert status.details[0].Unpack(info)
                self.reason, self.metadata = info.reason, dict(info.metadata)


@pytest.fixture
def call(store: RegistryStore, tmp_path) -> Iterator[Any]:
    server = grpc_testing.server_from_dictionary(
        {SERVICE: ModelRegistryServicer(store, LocalStorage(tmp_path / "files"))}, grpc_testing.strict_real_time()
    )

    def invoke(method: str, request: Any) -> Call:
        rpc = server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
        return Call(*rpc.termination())

    yield invoke


def struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def test_create_get_and_json_numbers(call: Any) -> None:
    created = call("CreateModel", pb.CreateModelRequest(name="m", metadata=struct({"epochs": 10, "lr": 0.1})))
    assert created.code == grpc.StatusCode.OK
    got = call("GetModel", pb.GetModelRequest(name="m")).response.model
    assert got.name == "m" and dict(got.metadata) == {"epochs": 10.0, "lr": 0.1}
    assert got.creation_time.seconds > 0 and got.latest_version == 0


@pytest.mark.parametrize(
    "method,request_,code,reason",
    [
        ("GetModel", pb.GetModelRequest(name="absent"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
        ("CreateModel", pb.CreateModelRequest(name="123"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        ("CreateModel", pb.CreateModelRequest(name="taken"), grpc.StatusCode.ALREADY_EXISTS, "MODEL_ALREADY_EXISTS"),
        ("ListModels", pb.ListModelsRequest(page_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_SIZE"),
        ("ListModels", pb.ListModelsRequest(sort_by=99), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM_VALUE"),
        ("ListModels", pb.ListModelsRequest(order_by=7), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM_VALUE"),
        ("ListModels", pb.ListModelsRequest(page_token="!!"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"),
        ("UpdateModel", pb.UpdateModelRequest(name="taken"), grpc.StatusCode.INVALID_ARGUMENT, "UPDATE_MASK_REQUIRED"),
        (
            "UpdateModel",
            pb.UpdateModelRequest(name="taken", update_mask=field_mask_pb2.FieldMask(paths=["owner"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_UPDATE_MASK",
        ),
        (
            "CreateCheckpoint",
            pb.CreateCheckpointRequest(checkpoint=checkpoint_pb2.Checkpoint(state=42)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ENUM_VALUE",
        ),
        (
            "CreateModelVersion",
            pb.CreateModelVersionRequest(model_name="taken", checkpoint_uuid="6a24d772-f1f7-4655-9061-22d582afd96c"),
            grpc.StatusCode.NOT_FOUND,
            "CHECKPOINT_NOT_FOUND",
        ),
        ("GetModelVersion", pb.GetModelVersionRequest(model_name="taken"), grpc.StatusCode.NOT_FOUND, "MODEL_VERSION_NOT_FOUND"),
        ("GetModelVersion", pb.GetModelVersionRequest(model_name="taken", version=-2), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VERSION"),
        ("GetCheckpoint", pb.GetCheckpointRequest(uuid="x"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UUID"),
        ("DeleteModel", pb.DeleteModelRequest(name="absent"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
        ("ArchiveModel", pb.ArchiveModelRequest(name="absent"), grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
    ],
)
def test_errors_carry_code_and_reason(call: Any, method: str, request_: Any, code: grpc.StatusCode, reason: str) -> None:
    call("CreateModel", pb.CreateModelRequest(name="taken"))
    result = call(method, request_)
    assert (result.code, result.reason) == (code, reason), result.details
    assert result.details


def test_error_metadata_names_the_offending_value(call: Any) -> None:
    result = call("GetModel", pb.GetModelRequest(name="absent"))
    assert result.metadata == {"model_name": "absent"}


def test_update_masks_and_archive(call: Any) -> None:
    call("CreateModel", pb.CreateModelRequest(name="m", description="a", labels=["x"]))
    mask = field_mask_pb2.FieldMask(paths=["description", "labels"])
    updated = call(
        "UpdateModel", pb.UpdateModelRequest(name="m", model=model_pb2.Model(description="b", notes="ignored"), update_mask=mask)
    ).response.model
    assert (updated.description, list(updated.labels), updated.notes) == ("b", [], "")
    assert call("ArchiveModel", pb.ArchiveModelRequest(name="m")).response.model.archived
    refused = call("UpdateModelMetadata", pb.UpdateModelMetadataRequest(name="m", merge=struct({"a": 1})))
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_ARCHIVED")
    assert not call("UnarchiveModel", pb.UnarchiveModelRequest(name="m")).response.model.archived


def test_version_flow_through_the_servicer(call: Any) -> None:
    call("CreateModel", pb.CreateModelRequest(name="m"))
    ckpt = call(
        "CreateCheckpoint",
        pb.CreateCheckpointRequest(checkpoint=checkpoint_pb2.Checkpoint(experiment_id=1, resources={"w.pt": 5})),
    ).response.checkpoint
    assert ckpt.state == checkpoint_pb2.CHECKPOINT_STATE_COMPLETED and ckpt.report_time.seconds > 0
    v1 = call("CreateModelVersion", pb.CreateModelVersionRequest(model_name="m", checkpoint_uuid=ckpt.uuid)).response
    v2 = call("CreateModelVersion", pb.CreateModelVersionRequest(model_name="m", checkpoint_uuid=ckpt.uuid)).response
    assert (v1.model_version.version, v2.model_version.version) == (1, 2)
    latest = call("GetModelVersion", pb.GetModelVersionRequest(model_name="m")).response.model_version
    assert latest.version == 2 and latest.checkpoint.resources["w.pt"] == 5 and latest.model_name == "m"
    listed = call("ListModelVersions", pb.ListModelVersionsRequest(model_name="m", page_size=1)).response
    assert [v.version for v in listed.model_versions] == [2] and listed.total_size == 2 and listed.next_page_token
    mask = field_mask_pb2.FieldMask(paths=["comment"])
    updated = call(
        "UpdateModelVersion",
        pb.UpdateModelVersionRequest(model_name="m", version=1, model_version=model_pb2.ModelVersion(comment="c"), update_mask=mask),
    ).response.model_version
    assert updated.comment == "c"
    in_use = call("DeleteCheckpoint", pb.DeleteCheckpointRequest(uuid=ckpt.uuid))
    assert (in_use.code, in_use.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKPOINT_IN_USE")
    assert call("DeleteModelVersion", pb.DeleteModelVersionRequest(model_name="m", version=2)).code == grpc.StatusCode.OK
    assert call("GetModel", pb.GetModelRequest(name="m")).response.model.latest_version == 1


def test_database_fault_is_unavailable_not_internal(call: Any, store: RegistryStore) -> None:
    store.db.execute_sql("DROP TABLE model_version")
    result = call("ListModelVersions", pb.ListModelVersionsRequest(model_name="x"))
    assert result.code != grpc.StatusCode.INTERNAL
    call("CreateModel", pb.CreateModelRequest(name="m"))
    result = call("GetModelVersion", pb.GetModelVersionRequest(model_name="m"))
    assert (result.code, result.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
