"""End-to-end tests of the Python client against a real registry server."""

from __future__ import annotations

import datetime
import json
import socket
import uuid

import grpc
import pytest

from registry_client import (
    AlreadyExistsError,
    Checkpoint,
    CheckpointState,
    EventKind,
    FailedPreconditionError,
    InvalidArgumentError,
    Model,
    ModelOrderBy,
    ModelSortBy,
    ModelVersion,
    NotFoundError,
    Registry,
    RegistryError,
    UnavailableError,
)


def _checkpoint(r: Registry, **fields) -> Checkpoint:
    fields.setdefault("experiment_id", 1)
    fields.setdefault("trial_id", 1)
    fields.setdefault("batch_number", 100)
    return r.create_checkpoint(**fields)


def test_seed_workflow(registry: Registry) -> None:
    model = registry.create_model(
        "mnist_cnn",
        description="a character recognition model",
        metadata={
            "dataset_url": "http://yann.lecun.com/exdb/mnist/",
            "git_url": "http://github.com/user/repo",
        },
    )
    assert isinstance(model, Model)
    assert (model.name, model.description) == ("mnist_cnn", "a character recognition model")
    assert model.metadata == {
        "dataset_url": "http://yann.lecun.com/exdb/mnist/",
        "git_url": "http://github.com/user/repo",
    }
    assert model.num_versions == 0 and model.latest_version == 0 and model.archived is False
    assert model.creation_time.tzinfo is not None

    model = registry.get_model("mnist_cnn")
    model.remove_metadata(["dataset_url", "git_url"])
    assert model.metadata == {}

    # The SEED's metadata sequence, with its {"key", "value"} typo read as the dict it meant.
    model.add_metadata({"key": "value"})
    model.add_metadata({"metrics": {"test_set_loss": 0.091}})
    assert model.metadata == {"key": "value", "metrics": {"test_set_loss": 0.091}}
    model.add_metadata({"metrics": {"test_set_acc": 0.97}})  # replaces, does not deep-merge
    assert model.metadata == {"key": "value", "metrics": {"test_set_acc": 0.97}}
    model.remove_metadata(["key"])
    assert model.metadata == {"metrics": {"test_set_acc": 0.97}}
    assert registry.get_model("mnist_cnn").metadata == {"metrics": {"test_set_acc": 0.97}}

    checkpoint = registry.create_checkpoint(
        uuid=None, experiment_id=1, trial_id=1, batch_number=100, metrics={"loss": 0.25}
    )
    first = model.register_version(checkpoint.uuid)
    assert isinstance(first, ModelVersion)
    assert (first.model_name, first.version, first.checkpoint.uuid) == ("mnist_cnn", 1, checkpoint.uuid)
    assert first.checkpoint.metrics == {"loss": 0.25}
    second = model.register_version(checkpoint.uuid, name="again", comment="same weights")
    assert second.version == 2

    assert model.get_version(1).version == 1
    latest = model.get_version()
    assert (latest.version, latest.name, latest.comment) == (2, "again", "same weights")
    assert [v.version for v in model.get_versions()] == [2, 1]
    assert model.reload().num_versions == 2 and model.latest_version == 2


def test_get_models_sorts_orders_and_filters(registry: Registry) -> None:
    registry.create_model("mnist_pytorch", description="Digits, OCR style", labels=["vision"])
    registry.create_model("resnet", description="image classifier", labels=["vision", "prod"])
    registry.create_model("MNIST_cnn", description="plain digits")
    registry.get_model("resnet").archive()

    def names(**kwargs) -> list[str]:
        return [m.name for m in registry.get_models(**kwargs)]

    assert names() == ["MNIST_cnn", "mnist_pytorch", "resnet"]  # by name, ascending, by default
    assert names(sort_by=ModelSortBy.CREATION_TIME) == ["mnist_pytorch", "resnet", "MNIST_cnn"]
    assert names(sort_by=ModelSortBy.CREATION_TIME, order_by=ModelOrderBy.DESC) == [
        "MNIST_cnn",
        "resnet",
        "mnist_pytorch",
    ]
    assert names(sort_by=ModelSortBy.DESCRIPTION) == ["mnist_pytorch", "resnet", "MNIST_cnn"]
    assert set(names(name="mnist")) == {"mnist_pytorch", "MNIST_cnn"}  # case-insensitive substring
    assert names(description="ocr") == ["mnist_pytorch"]
    assert set(names(labels=["vision"])) == {"mnist_pytorch", "resnet"}
    assert names(labels=["vision", "prod"]) == ["resnet"]
    assert names(archived=True) == ["resnet"]
    assert set(names(archived=False)) == {"mnist_pytorch", "MNIST_cnn"}
    assert len(registry.get_models(limit=2)) == 2


def test_get_models_follows_every_page(registry: Registry) -> None:
    for i in range(12):
        registry.create_model(f"model-{i:02d}")
    registry.page_size = 5
    models = registry.get_models(sort_by=ModelSortBy.NAME, order_by=ModelOrderBy.DESC)
    assert [m.name for m in models] == [f"model-{i:02d}" for i in reversed(range(12))]
    assert [m.name for m in registry.get_models(sort_by=ModelSortBy.NAME, limit=7)] == [
        f"model-{i:02d}" for i in range(7)
    ]


def test_get_versions_newest_first_across_pages(registry: Registry) -> None:
    model = registry.create_model("many")
    checkpoint = _checkpoint(registry)
    for _ in range(120):
        model.register_version(checkpoint.uuid)
    versions = model.get_versions()  # page_size 100: two pages
    assert [v.version for v in versions] == list(range(120, 0, -1))
    registry.page_size = 50
    assert [v.version for v in model.get_versions(order_by=ModelOrderBy.ASC)] == list(range(1, 121))
    assert [v.version for v in model.get_versions(limit=3)] == [120, 119, 118]


def test_get_version_none_without_versions_but_errors_otherwise(registry: Registry) -> None:
    model = registry.create_model("empty")
    assert model.get_version() is None

    with pytest.raises(NotFoundError) as caught:
        model.get_version(3)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.reason == "MODEL_VERSION_NOT_FOUND"

    model.delete()
    with pytest.raises(NotFoundError) as caught:
        model.get_version()
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert caught.value.metadata.get("model_name") == "empty"


def test_archived_model_refuses_versions_and_edits(registry: Registry) -> None:
    model = registry.create_model("frozen")
    checkpoint = _checkpoint(registry)
    assert model.archive() is model and model.archived is True

    with pytest.raises(FailedPreconditionError) as caught:
        model.register_version(checkpoint.uuid)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "MODEL_ARCHIVED"
    with pytest.raises(FailedPreconditionError) as caught:
        model.set_description("new")
    assert caught.value.reason == "MODEL_ARCHIVED"
    assert registry.get_model("frozen").description == ""  # reads still work, nothing written

    model.unarchive()
    assert model.archived is False
    assert model.register_version(checkpoint.uuid).version == 1


def test_model_setters_update_the_object_in_place(registry: Registry) -> None:
    model = registry.create_model("editable", labels=["a"])
    created = model.last_updated_time
    assert model.set_description("described") is model
    model.set_notes("# Notes")
    model.set_labels(["b", "c"])
    assert (model.description, model.notes, model.labels) == ("described", "# Notes", ["b", "c"])
    assert model.last_updated_time >= created
    again = registry.get_model("editable")
    assert (again.description, again.notes, again.labels) == ("described", "# Notes", ["b", "c"])


def test_rename_moves_versions(registry: Registry) -> None:
    model = registry.create_model("old_name")
    model.register_version(_checkpoint(registry).uuid)
    registry.create_model("taken")

    with pytest.raises(AlreadyExistsError) as caught:
        model.rename("taken")
    assert caught.value.reason == "MODEL_ALREADY_EXISTS"

    model.rename("new_name")
    assert model.name == "new_name"
    assert model.get_version().model_name == "new_name"
    with pytest.raises(NotFoundError) as caught:
        registry.get_model("old_name")
    assert caught.value.reason == "MODEL_NOT_FOUND"


def test_labels_most_used_first(registry: Registry) -> None:
    registry.create_model("one", labels=["rare", "common"])
    registry.create_model("two", labels=["common", "common", "medium"])
    registry.create_model("three", labels=["medium", "common"])
    assert registry.get_model("two").labels == ["common", "medium"]  # duplicates dropped, order kept
    assert registry.get_model_labels() == ["common", "medium", "rare"]


def test_model_version_setters_and_delete(registry: Registry) -> None:
    model = registry.create_model("versioned")
    checkpoint = _checkpoint(registry)
    version = model.register_version(checkpoint.uuid, labels=["x"], metadata={"epochs": 10})
    assert version.metadata == {"epochs": 10} and isinstance(version.metadata["epochs"], int)

    version.set_name("v-one")
    version.set_comment("first try")
    version.set_labels(["candidate", "prod"])
    version.set_metadata({"accuracy": 0.9})
    version.set_notes("notes")
    fetched = model.get_version(1)
    assert (fetched.name, fetched.comment, fetched.labels, fetched.metadata, fetched.notes) == (
        "v-one",
        "first try",
        ["candidate", "prod"],
        {"accuracy": 0.9},
        "notes",
    )
    assert version.name == "v-one" and version.metadata == {"accuracy": 0.9}

    model.register_version(checkpoint.uuid)
    model.get_version(2).delete()
    assert model.get_version().version == 1
    assert model.register_version(checkpoint.uuid).version == 3  # numbers are never reused


def test_delete_model_keeps_checkpoints(registry: Registry) -> None:
    model = registry.create_model("doomed")
    checkpoint = _checkpoint(registry)
    model.register_version(checkpoint.uuid)

    with pytest.raises(FailedPreconditionError) as caught:
        checkpoint.delete()
    assert caught.value.reason == "CHECKPOINT_IN_USE"

    registry.delete_model("doomed")
    with pytest.raises(NotFoundError):
        registry.get_model("doomed")
    assert registry.get_checkpoint(checkpoint.uuid).uuid == checkpoint.uuid

    checkpoint.delete()
    with pytest.raises(NotFoundError) as caught:
        registry.get_checkpoint(checkpoint.uuid)
    assert caught.value.reason == "CHECKPOINT_NOT_FOUND"


def test_checkpoint_fields_round_trip(registry: Registry) -> None:
    checkpoint_uuid = str(uuid.uuid4())
    reported = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    checkpoint = registry.create_checkpoint(
        uuid=checkpoint_uuid,
        experiment_id=7,
        trial_id=3,
        batch_number=1200,
        experiment_config={"searcher": {"name": "single", "max_length": {"batches": 1200}}},
        hparams={"lr": 0.01, "layers": [64, 32]},
        resources={"model.h5": 1024, "code/train.py": 10},
        metadata={"note": None},
        framework="tensorflow-1.14.0",
        format="h5",
        metrics={"loss": 0.091, "epochs": 10},
        storage_uri="s3://bucket/prefix",
        report_time=reported,
    )
    fetched = registry.get_checkpoint(checkpoint_uuid)
    for got in (checkpoint, fetched):
        assert got.uuid == checkpoint_uuid
        assert (got.experiment_id, got.trial_id, got.batch_number) == (7, 3, 1200)
        assert got.experiment_config == {"searcher": {"name": "single", "max_length": {"batches": 1200}}}
        assert got.hparams == {"lr": 0.01, "layers": [64, 32]}
        assert got.resources == {"model.h5": 1024, "code/train.py": 10}
        assert got.metadata == {"note": None}
        assert (got.framework, got.format) == ("tensorflow-1.14.0", "h5")
        assert got.storage_uri == "s3://bucket/prefix"
        assert got.metrics == {"loss": 0.091, "epochs": 10}
        assert type(got.metrics["epochs"]) is int
        assert got.state is CheckpointState.COMPLETED
        assert got.report_time == reported

    # Python-side dicts: the attribute names (snake_case), enums by name, times in ISO 8601.
    as_dict = fetched.to_dict()
    assert as_dict["uuid"] == checkpoint_uuid
    assert as_dict["experiment_id"] == 7 and as_dict["batch_number"] == 1200
    assert as_dict["experiment_config"]["searcher"]["name"] == "single"
    assert as_dict["state"] == "COMPLETED"
    assert as_dict["report_time"] == "2024-05-01T12:30:00+00:00"
    assert json.loads(json.dumps(as_dict)) == as_dict

    with pytest.raises(AlreadyExistsError) as caught:
        registry.create_checkpoint(uuid=checkpoint_uuid)
    assert caught.value.reason == "CHECKPOINT_ALREADY_EXISTS"


def test_only_completed_checkpoints_become_versions(registry: Registry) -> None:
    model = registry.create_model("strict")
    active = _checkpoint(registry, state=CheckpointState.ACTIVE)
    assert active.state is CheckpointState.ACTIVE
    with pytest.raises(FailedPreconditionError) as caught:
        model.register_version(active.uuid)
    assert caught.value.reason == "CHECKPOINT_NOT_COMPLETED"
    with pytest.raises(NotFoundError) as caught:
        model.register_version(str(uuid.uuid4()))
    assert caught.value.reason == "CHECKPOINT_NOT_FOUND"


def test_get_checkpoints_filters_and_top_checkpoint(registry: Registry) -> None:
    losses = {(1, 1): 0.5, (1, 2): 0.1, (2, 1): 0.3}
    created = {key: _checkpoint(registry, experiment_id=key[0], trial_id=key[1], metrics={"loss": loss})
               for key, loss in losses.items()}
    _checkpoint(registry, experiment_id=1, trial_id=1, metrics={})  # no loss: sorts last

    assert len(registry.get_checkpoints()) == 4
    assert len(registry.get_checkpoints(experiment_id=1)) == 3
    assert [c.uuid for c in registry.get_checkpoints(experiment_id=1, trial_id=2)] == [created[1, 2].uuid]
    best_first = registry.get_checkpoints(experiment_id=1, sort_by_metric="loss", smaller_is_better=True)
    assert [c.metrics.get("loss") for c in best_first] == [0.1, 0.5, None]
    top = registry.get_checkpoints(sort_by_metric="loss", smaller_is_better=False, limit=1)
    assert [c.uuid for c in top] == [created[1, 1].uuid]


def test_typed_errors_carry_code_reason_and_metadata(registry: Registry) -> None:
    registry.create_model("dup")
    with pytest.raises(AlreadyExistsError) as caught:
        registry.create_model("dup")
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.reason == "MODEL_ALREADY_EXISTS"
    assert caught.value.metadata == {"model_name": "dup"}
    assert "dup" in caught.value.message

    for bad_name in ("12345", "a/b", " padded"):
        with pytest.raises(InvalidArgumentError) as caught:
            registry.create_model(bad_name)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.reason == "INVALID_NAME"

    with pytest.raises(NotFoundError) as caught:
        registry.delete_model("absent")
    assert isinstance(caught.value, RegistryError)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")

    with pytest.raises(TypeError):
        registry.create_model("set_typo", metadata={"key", "value"})


def test_unreachable_server_raises_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Registry(f"127.0.0.1:{port}", timeout=10) as r:
        with pytest.raises(UnavailableError) as caught:
            r.get_model("anything")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == ""


def test_target_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_TARGET", "registry.example:1234")
    with Registry() as r:
        assert r.target == "registry.example:1234"
    monkeypatch.delenv("MODEL_REGISTRY_TARGET")
    with Registry() as r:
        assert r.target == "localhost:50051"
    with Registry("elsewhere:1") as r:
        assert r.target == "elsewhere:1"


def _snake_case(keys: object) -> bool:
    return all(key == key.lower() for key in keys)  # type: ignore[attr-defined]


def test_to_dict_keys_are_the_attribute_names_everywhere(registry: Registry) -> None:
    model = registry.create_model("m", metadata={"camelKey": 1})
    checkpoint = _checkpoint(registry, metrics={"loss": 0.5})
    version = model.register_version(checkpoint.uuid, aliases=["production"])
    model.reload()
    change = model.get_alias_history()[0]
    event = next(registry.watch(kinds=[EventKind.ALIAS_SET]))
    for obj in (model, version, checkpoint, change, event):
        as_dict = obj.to_dict()
        public = {name for name in vars(obj) if not name.startswith("_")}
        assert set(as_dict) == public, type(obj).__name__
        assert json.loads(json.dumps(as_dict)) == as_dict
    assert model.to_dict()["metadata"] == {"camelKey": 1}  # user keys stay as they are
    assert model.to_dict()["num_versions"] == 1 and model.to_dict()["latest_version"] == 1
    assert version.to_dict()["checkpoint"] == checkpoint.to_dict()
    assert version.to_dict()["model_name"] == "m" and version.to_dict()["aliases"] == ["production"]
    assert change.to_dict()["previous_version"] == 0
    assert event.to_dict()["kind"] == "ALIAS_SET" and event.to_dict()["model_name"] == "m"
    assert _snake_case(version.to_dict()) and _snake_case(version.to_dict()["checkpoint"])


def test_the_wire_speaks_proto3_json() -> None:
    from google.protobuf import json_format
    from modelregistry.v1 import checkpoint_pb2

    message = checkpoint_pb2.Checkpoint(experiment_id=1)
    message.experiment_config.update({"searcher": "single"})
    assert set(json_format.MessageToDict(message)) == {"experimentId", "experimentConfig"}
    for spelling in ("experimentConfig", "experiment_config"):  # proto3 JSON parsers accept both on input
        parsed = json_format.Parse(f'{{"{spelling}": {{"searcher": "single"}}}}', checkpoint_pb2.Checkpoint())
        assert parsed.experiment_config == message.experiment_config


def test_enums_are_taken_by_member_name_or_number(registry: Registry) -> None:
    for name in ("b", "a", "c"):
        registry.create_model(name)
    names = lambda models: [m.name for m in models]  # noqa: E731
    assert names(registry.get_models(sort_by="name")) == ["a", "b", "c"]
    assert names(registry.get_models(sort_by="NAME", order_by="Desc")) == ["c", "b", "a"]
    assert names(registry.get_models(sort_by="MODEL_SORT_BY_NAME", order_by=ModelOrderBy.DESC)) == ["c", "b", "a"]
    assert names(registry.get_models(sort_by=ModelSortBy.CREATION_TIME, order_by="asc")) == ["b", "a", "c"]
    assert names(registry.get_models(sort_by=int(ModelSortBy.NAME))) == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"sort_by: 'colour' is not a ModelSortBy; expected one of name, "):
        registry.get_models(sort_by="colour")
    with pytest.raises(ValueError, match="order_by: 7 is not a ModelOrderBy"):
        registry.get_models(order_by=7)  # type: ignore[arg-type]
    checkpoint = registry.create_checkpoint(state="active")
    assert checkpoint.state is CheckpointState.ACTIVE
    with pytest.raises(ValueError, match="state: 'done' is not a CheckpointState"):
        registry.create_checkpoint(state="done")
    assert next(registry.watch(kinds="checkpoint_created")).checkpoint_uuid == checkpoint.uuid


def test_the_client_enums_mirror_the_generated_ones() -> None:
    from modelregistry.v1 import event_pb2, model_pb2

    from registry_client.objects import _Choice, _mirrors

    assert {f"EVENT_KIND_{k.name}" for k in EventKind} == set(event_pb2.EventKind.keys()) - {"EVENT_KIND_UNSPECIFIED"}
    with pytest.raises(ImportError, match="ORDER_BY_DESC"):

        @_mirrors(model_pb2.OrderBy, "ORDER_BY_")
        class Partial(_Choice):
            ASC = model_pb2.ORDER_BY_ASC


def test_bad_arguments_are_typed_errors_naming_the_argument_and_key(registry: Registry) -> None:
    model = registry.create_model("m")
    with pytest.raises(TypeError, match=r"metadata\['a'\]\['b'\]: set \{1\} is not a JSON value"):
        registry.create_model("n", metadata={"a": {"b": {1}}})
    with pytest.raises(TypeError, match=r"hparams\['layers'\]\[1\]: object"):
        registry.create_checkpoint(hparams={"layers": [1, object()]})
    with pytest.raises(TypeError, match="metadata: keys must be strings, got int 1"):
        model.add_metadata({1: "x"})
    with pytest.raises(ValueError, match=r"metrics\['steps'\]: 9007199254740993 is beyond 2\*\*53"):
        registry.create_checkpoint(metrics={"steps": 2**53 + 1})
    with pytest.raises(ValueError, match=r"metadata\['x'\]: nan is not a JSON number"):
        model.add_metadata({"x": float("nan")})
    assert registry.create_checkpoint(metrics={"steps": 2**53}).metrics == {"steps": 2**53}
    assert [m.name for m in registry.get_models()] == ["m"]  # nothing refused reached the server
    assert len(registry.get_checkpoints()) == 1

    with pytest.raises(TypeError, match="version: expected int, got str '1'"):
        model.get_version("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="experiment_id: expected int, got str '7'"):
        registry.create_checkpoint(experiment_id="7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="experiment_id: 1099511627776 is out of range"):
        registry.create_checkpoint(experiment_id=2**40)
    with pytest.raises(TypeError, match="name: expected str, got int 5"):
        registry.create_model(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="labels: expected a list of str, got list"):
        registry.create_model("n", labels=[1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="limit"):
        registry.get_models(limit=-1)
    assert registry.create_model("labelled", labels="vision").labels == ["vision"]  # one label, not six


def test_the_seeds_get_version_load_and_download(registry: Registry, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    files = tmp_path / "trained"
    files.mkdir()
    (files / "model.pkl").write_bytes(pickle.dumps({"weights": [0.5, 0.25]}))
    checkpoint = registry.upload_checkpoint(files, experiment_id=1, format="pkl")
    model = registry.create_model("mnist_cnn")
    model.register_version(checkpoint.uuid)
    monkeypatch.chdir(tmp_path)

    latest_version = model.get_version()
    assert latest_version.load() == {"weights": [0.5, 0.25]}  # the seed's line
    assert (tmp_path / "checkpoints" / checkpoint.uuid / "model.pkl").exists()
    assert model.get_version(1).download(tmp_path / "here") == tmp_path / "here"
    assert (tmp_path / "here" / "model.pkl").read_bytes() == (files / "model.pkl").read_bytes()


def test_top_checkpoint_is_the_best_reporting_the_metric_or_an_error(registry: Registry) -> None:
    for trial, loss in enumerate([0.5, 0.1, 0.3], start=1):
        _checkpoint(registry, experiment_id=1, trial_id=trial, metrics={"loss": loss, "acc": 1 - loss})
    _checkpoint(registry, experiment_id=1, trial_id=9, metrics={"loss": "n/a"})  # not a number: never the top
    _checkpoint(registry, experiment_id=2, metrics={"acc": 0.9})

    best = registry.top_checkpoint(experiment_id=1, metric="loss", smaller_is_better=True)
    assert (best.trial_id, best.metrics["loss"]) == (2, 0.1)
    assert registry.top_checkpoint(experiment_id=1, metric="loss").trial_id == 1  # larger is better by default
    assert registry.top_checkpoint(metric="acc").metrics["acc"] == 0.9  # over every experiment
    for experiment, metric in [(2, "loss"), (3, "loss"), (1, "f1")]:
        with pytest.raises(NotFoundError) as caught:
            registry.top_checkpoint(experiment_id=experiment, metric=metric)
        assert caught.value.reason == "METRIC_NOT_REPORTED"
        assert f"reports the metric {metric!r}" in caught.value.message


def test_watch_without_follow_ends_at_the_end_of_history(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from registry_server import events

    monkeypatch.setattr(events, "WATCH_BATCH", 2)  # several reads before the end
    for name in "abcde":
        registry.create_model(name)
    registry.create_checkpoint()
    assert [e.sequence for e in registry.watch(follow=False)] == [1, 2, 3, 4, 5, 6]
    assert [e.model_name for e in registry.watch(after=2, follow=False)] == ["c", "d", "e", ""]
    assert [e.model_name for e in registry.watch(models=["d", "b"], follow=False)] == ["b", "d"]
    assert list(registry.watch(kinds=["alias_set"], follow=False)) == []
    assert list(registry.watch(after=6, follow=False)) == []


def test_watch_resumes_after_a_stream_the_server_cancelled() -> None:
    """A server that is shutting down may cut a stream with CANCELLED (HTTP/2 RST_STREAM CANCEL, e.g.
    a call that arrived just before its GOAWAY): the client never cancels inside the loop, so a watch
    resumes after the last event it yielded, as it does on UNAVAILABLE, with no gap or duplicate."""
    from concurrent import futures

    from modelregistry.v1 import event_pb2
    from modelregistry.v1 import registry_service_pb2 as pb
    from modelregistry.v1 import registry_service_pb2_grpc as pb_grpc

    asked: list[int] = []

    class Cutting(pb_grpc.ModelRegistryServiceServicer):
        def WatchEvents(self, request, context):  # type: ignore[no-untyped-def]
            asked.append(request.after_sequence)
            for sequence in range(request.after_sequence + 1, 6):
                yield pb.WatchEventsResponse(event=event_pb2.Event(
                    sequence=sequence, model_name="m", kind=event_pb2.EVENT_KIND_MODEL_CREATED))
                if request.after_sequence == 0 and sequence == 2:
                    context.abort(grpc.StatusCode.CANCELLED, "the server is shutting down")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ModelRegistryServiceServicer_to_server(Cutting(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Registry(f"127.0.0.1:{port}", timeout=10) as r:
            assert [e.sequence for e in r.watch(follow=False)] == [1, 2, 3, 4, 5]
            with pytest.raises(RegistryError) as caught:
                list(r.watch(follow=False, reconnect=False))
            assert caught.value.code == grpc.StatusCode.CANCELLED
    finally:
        server.stop(None)
    assert asked == [0, 2, 0]
