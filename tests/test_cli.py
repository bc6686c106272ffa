"""End-to-end tests of the model-registry command line against a real registry server."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from registry_client import Registry
from registry_client.cli import main

from .servers import console_script


@pytest.fixture
def cli(registry_target: str, capsys: pytest.CaptureFixture[str]):
    """Run main() against the test server; returns (exit status, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        status = main(["--target", registry_target, *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def cli_json(cli):
    """Run a command with --json after the subcommand, expect success, return the parsed output."""

    def run(*argv: str):
        status, out, err = cli(*argv, "--json")
        assert (status, err) == (0, ""), err
        return json.loads(out)

    return run


def _new_checkpoint(cli_json, **options: str) -> str:
    argv = ["checkpoint", "create", "--experiment-id", "1", "--trial-id", "1"]
    for option, value in options.items():
        argv += [f"--{option.replace('_', '-')}", value]
    return cli_json(*argv)["uuid"]


def test_model_create_list_describe(cli, cli_json) -> None:
    created = cli_json(
        "model", "create", "mnist_cnn", "--description", "a character recognition model",
        "--metadata", '{"dataset_url": "http://yann.lecun.com/exdb/mnist/"}',
        "--label", "vision", "--label", "ocr", "--notes", "hi",
    )
    assert created["name"] == "mnist_cnn"
    assert created["metadata"] == {"dataset_url": "http://yann.lecun.com/exdb/mnist/"}
    assert created["labels"] == ["vision", "ocr"]
    assert created["notes"] == "hi"
    cli_json("model", "create", "resnet", "--description", "image classifier")

    status, out, err = cli("model", "list")
    assert (status, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["Name", "Description"]
    assert [row.split()[0] for row in rows] == ["mnist_cnn", "resnet"]
    # Columns line up: every row's second column starts where the header's does.
    assert all(row.index(desc) == header.index("Description")
               for row, desc in zip(rows, ["a character", "image"], strict=True))

    # --json accepted before the subcommand as well as after it.
    status, out, _ = cli("--json", "model", "list", "--sort-by", "name", "--order-by", "desc")
    assert status == 0
    assert [m["name"] for m in json.loads(out)] == ["resnet", "mnist_cnn"]
    assert [m["name"] for m in cli_json("model", "list", "--name", "MNIST")] == ["mnist_cnn"]
    assert [m["name"] for m in cli_json("model", "list", "--description", "classif")] == ["resnet"]
    assert [m["name"] for m in cli_json("model", "list", "--label", "ocr")] == ["mnist_cnn"]
    by_age = cli_json("model", "list", "--sort-by", "creation_time")
    assert [m["name"] for m in by_age] == ["mnist_cnn", "resnet"]

    status, out, _ = cli("model", "describe", "mnist_cnn")
    assert status == 0
    assert "a character recognition model" in out
    assert "Model mnist_cnn has no versions." in out
    described = cli_json("model", "describe", "mnist_cnn")
    assert described["model"]["name"] == "mnist_cnn" and described["model_version"] is None


def test_model_register_and_list_versions(cli, cli_json) -> None:
    cli_json("model", "create", "mnist_cnn")
    checkpoint_uuid = _new_checkpoint(cli_json, metrics='{"loss": 0.25}')

    first = cli_json(
        "model", "register", "mnist_cnn", checkpoint_uuid, "--name", "v1", "--comment", "first",
        "--label", "candidate", "--metadata", '{"epochs": 10}', "--notes", "n",
    )
    assert first["version"] == 1 and first["checkpoint"]["uuid"] == checkpoint_uuid
    assert (first["name"], first["comment"], first["labels"]) == ("v1", "first", ["candidate"])
    assert first["metadata"] == {"epochs": 10}
    status, out, _ = cli("model", "register", "mnist_cnn", checkpoint_uuid)
    assert status == 0 and ["Version:", "2"] in [line.split() for line in out.splitlines()]

    status, out, _ = cli("model", "list-versions", "mnist_cnn")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["Version", "Checkpoint"]
    assert [row.split()[:2] for row in rows] == [["2", checkpoint_uuid], ["1", checkpoint_uuid]]
    assert [v["version"] for v in cli_json("model", "list-versions", "mnist_cnn")] == [2, 1]

    status, out, _ = cli("model", "describe", "mnist_cnn")
    assert status == 0 and "Latest version (2):" in out and checkpoint_uuid in out
    described = cli_json("model", "describe", "mnist_cnn")
    assert described["model_version"]["version"] == 2
    assert described["model"]["num_versions"] == 2


def test_model_metadata_archive_rename_labels_delete(cli, cli_json) -> None:
    cli_json("model", "create", "m", "--label", "a")
    assert cli_json("model", "add-metadata", "m", '{"key": "value", "metrics": {"loss": 1}}')["metadata"] == {
        "key": "value",
        "metrics": {"loss": 1},
    }
    assert cli_json("model", "add-metadata", "m", '{"metrics": {"acc": 0.97}}')["metadata"] == {
        "key": "value",
        "metrics": {"acc": 0.97},
    }
    removed = cli_json("model", "remove-metadata", "m", "key", "absent")
    assert removed["metadata"] == {"metrics": {"acc": 0.97}}

    assert cli_json("model", "archive", "m")["archived"] is True
    assert [m["name"] for m in cli_json("model", "list", "--archived")] == ["m"]
    assert cli_json("model", "list", "--unarchived") == []
    status, _, err = cli("model", "register", "m", _new_checkpoint(cli_json))
    assert status == 1
    assert err.startswith("error: FAILED_PRECONDITION MODEL_ARCHIVED: ")
    assert cli_json("model", "unarchive", "m")["archived"] is False

    assert cli_json("model", "rename", "m", "n")["name"] == "n"
    assert cli_json("model", "labels") == ["a"]
    status, out, _ = cli("model", "labels")
    assert (status, out) == (0, "a\n")

    status, out, _ = cli("model", "delete", "n")
    assert (status, out) == (0, "Deleted model n.\n")
    assert cli_json("model", "list") == []


def test_checkpoint_commands(cli, cli_json) -> None:
    checkpoint_uuid = str(uuid.uuid4())
    created = cli_json(
        "checkpoint", "create", "--uuid", checkpoint_uuid, "--experiment-id", "3", "--trial-id", "4",
        "--batch-number", "100", "--framework", "torch-2.3", "--format", "pt",
        "--metrics", '{"loss": 0.5}', "--hparams", '{"lr": 0.01}', "--metadata", '{"k": "v"}',
        "--experiment-config", '{"searcher": {"name": "single"}}', "--resources", '{"model.pt": 2048}',
        "--storage-uri", "s3://bucket/x", "--state", "completed",
    )
    assert created["uuid"] == checkpoint_uuid
    assert (created["experiment_id"], created["trial_id"], created["batch_number"]) == (3, 4, 100)
    assert created["metrics"] == {"loss": 0.5} and created["hparams"] == {"lr": 0.01}
    assert created["experiment_config"] == {"searcher": {"name": "single"}}
    assert created["resources"] == {"model.pt": 2048}
    assert created["state"] == "COMPLETED" and created["storage_uri"] == "s3://bucket/x"
    better = _new_checkpoint(cli_json, experiment_id="3", metrics='{"loss": 0.1}', state="ACTIVE")

    status, out, _ = cli("checkpoint", "describe", checkpoint_uuid)
    assert status == 0 and "torch-2.3" in out and "s3://bucket/x" in out
    assert cli_json("checkpoint", "describe", better)["state"] == "ACTIVE"

    status, out, _ = cli("checkpoint", "list", "--experiment-id", "3", "--sort-by-metric", "loss",
                         "--smaller-is-better")
    assert status == 0
    assert [row.split()[0] for row in out.splitlines()[1:]] == [better, checkpoint_uuid]
    assert [c["uuid"] for c in cli_json("checkpoint", "list", "--experiment-id", "3", "--trial-id", "4")] == [
        checkpoint_uuid
    ]

    status, out, _ = cli("checkpoint", "delete", checkpoint_uuid)
    assert (status, out) == (0, f"Deleted checkpoint {checkpoint_uuid}.\n")
    status, _, err = cli("checkpoint", "describe", checkpoint_uuid)
    assert status == 1 and err.startswith("error: NOT_FOUND CHECKPOINT_NOT_FOUND: ")


def test_errors_exit_nonzero_without_traceback(cli) -> None:
    status, out, err = cli("model", "describe", "absent")
    assert (status, out) == (1, "")
    assert err.startswith("error: NOT_FOUND MODEL_NOT_FOUND: ") and "Traceback" not in err

    assert cli("model", "create", "dup")[0] == 0
    status, _, err = cli("model", "create", "dup")
    assert status == 1 and err.startswith("error: ALREADY_EXISTS MODEL_ALREADY_EXISTS: ")
    status, _, err = cli("model", "create", "123")
    assert status == 1 and err.startswith("error: INVALID_ARGUMENT INVALID_NAME: ")

    status, out, err = cli("model", "create", "x", "--metadata", "{not json")
    assert status == 2 and "--metadata: not valid JSON" in err and "Traceback" not in err
    status, _, err = cli("model", "add-metadata", "dup", "[1, 2]")
    assert status == 2 and "expected a JSON object" in err
    status, _, err = cli("checkpoint", "create", "--resources", '{"a": "big"}')
    assert status == 2 and "path -> size" in err
    assert cli("model", "list", "--sort-by", "colour")[0] == 2
    assert cli("model", "list", "--archived", "--unarchived")[0] == 2


def test_target_from_environment(registry_target: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_TARGET", registry_target)
    assert main(["model", "create", "from_env"]) == 0
    assert "from_env" in capsys.readouterr().out
    with Registry(registry_target) as r:
        assert r.get_model("from_env").name == "from_env"


def test_console_script_subprocess(registry_target: str) -> None:
    # The script of the environment running the tests, not whichever one PATH finds first.
    command = [console_script("model-registry")]
    env = {**os.environ, "MODEL_REGISTRY_TARGET": registry_target}

    created = subprocess.run(
        [*command, "--json", "model", "create", "from_shell", "--metadata", '{"epochs": 10}'],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    metadata = json.loads(created.stdout)["metadata"]
    assert metadata == {"epochs": 10} and type(metadata["epochs"]) is int  # printed as 10, not 10.0

    missing = subprocess.run(
        [*command, "model", "describe", "nope"], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("error: NOT_FOUND MODEL_NOT_FOUND: ")


def test_model_alias_set_history_delete_and_register_with_alias(cli, cli_json) -> None:
    cli_json("model", "create", "mnist")
    uuid = _new_checkpoint(cli_json)
    assert cli_json("model", "register", "mnist", uuid, "--alias", "production")["aliases"] == ["production"]
    cli_json("model", "register", "mnist", uuid)
    moved = cli_json("model", "alias", "set", "mnist", "production", "2")
    assert (moved["version"], moved["aliases"]) == (2, ["production"])
    history = cli_json("model", "alias", "history", "mnist", "--alias", "production")
    assert [(c["previous_version"], c["version"]) for c in history] == [(0, 1), (1, 2)]
    status, out, _ = cli("model", "alias", "history", "mnist")
    assert status == 0 and out.splitlines()[0].split() == ["Time", "Alias", "From", "To", "Principal"]
    assert cli_json("model", "alias", "delete", "mnist", "production") == {}
    status, _, err = cli("model", "alias", "set", "mnist", "123", "1")
    assert status == 1 and "INVALID_ALIAS" in err


def test_watch_prints_events_as_json_lines(cli, cli_json) -> None:
    cli_json("model", "create", "a")
    cli_json("model", "create", "b")
    uuid = _new_checkpoint(cli_json)
    cli_json("model", "register", "b", uuid, "--alias", "production")
    status, out, err = cli("watch", "--model", "b", "--kind", "alias_set", "--limit", "1", "--json")
    assert (status, err) == (0, "")
    event = json.loads(out)
    assert (event["sequence"], event["kind"], event["model_name"], event["version"], event["alias"]) == (
        5, "ALIAS_SET", "b", 1, "production"
    )
    status, out, _ = cli("watch", "--after", "1", "--limit", "2")
    assert status == 0
    rows = [line.split() for line in out.splitlines()[1:]]  # under the header
    assert [(row[0], row[2], row[3:4]) for row in rows] == [("2", "MODEL_CREATED", ["b"]), ("3", "CHECKPOINT_CREATED", [uuid])]


def test_model_version_describe_update_delete(cli, cli_json) -> None:
    cli_json("model", "create", "m")
    uuid = _new_checkpoint(cli_json)
    cli_json("model", "register", "m", uuid, "--alias", "production")
    cli_json("model", "register", "m", uuid)

    assert cli_json("model", "version", "describe", "m")["version"] == 2  # the latest
    assert cli_json("model", "version", "describe", "m", "1")["aliases"] == ["production"]
    shown = cli_json("model", "version", "describe", "m", "--alias", "production")
    assert (shown["version"], shown["model_name"], shown["checkpoint"]["uuid"]) == (1, "m", uuid)
    status, out, _ = cli("model", "version", "describe", "m", "1")
    assert status == 0 and ["Version:", "1"] in [line.split() for line in out.splitlines()]
    status, _, err = cli("model", "version", "describe", "m", "7")
    assert status == 1 and err.startswith("error: NOT_FOUND MODEL_VERSION_NOT_FOUND: ")
    assert cli("model", "version", "describe", "m", "1", "--alias", "production")[0] == 2

    updated = cli_json("model", "version", "update", "m", "1", "--name", "first", "--comment", "c",
                       "--label", "a", "--label", "b", "--metadata", '{"epochs": 10}', "--notes", "n")
    assert (updated["name"], updated["comment"], updated["labels"], updated["metadata"], updated["notes"]) == (
        "first", "c", ["a", "b"], {"epochs": 10}, "n"
    )
    cleared = cli_json("model", "version", "update", "m", "1", "--no-labels", "--metadata", "{}")
    assert (cleared["labels"], cleared["metadata"], cleared["name"]) == ([], {}, "first")  # the rest stays
    status, _, err = cli("model", "version", "update", "m", "1")
    assert status == 2 and "nothing to update" in err
    assert cli("model", "version", "update", "m", "1", "--label", "x", "--no-labels")[0] == 2

    status, out, _ = cli("model", "version", "delete", "m", "2")
    assert (status, out) == (0, "Deleted version 2 of model m.\n")
    assert cli_json("model", "version", "describe", "m")["version"] == 1
    status, _, err = cli("model", "version", "delete", "m", "1")  # production points at it
    assert status == 1 and "VERSION_HAS_ALIASES" in err


def test_model_update_and_a_model_without_versions(cli, cli_json) -> None:
    cli_json("model", "create", "m", "--label", "old", "--description", "d0")
    status, out, _ = cli("model", "describe", "m")
    assert status == 0 and ["Latest", "version:", "none"] in [line.split() for line in out.splitlines()]
    status, _, err = cli("model", "version", "describe", "m")
    assert status == 1 and "model m has no versions" in err

    updated = cli_json("model", "update", "m", "--description", "d1", "--label", "a", "--notes", "n")
    assert (updated["description"], updated["labels"], updated["notes"]) == ("d1", ["a"], "n")
    assert cli_json("model", "update", "m", "--no-labels")["labels"] == []
    assert cli_json("model", "describe", "m")["model"]["description"] == "d1"
    status, _, err = cli("model", "update", "m")
    assert status == 2 and "nothing to update" in err


HOSTILE = "ok\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\u202etxt.exe\u2028\n\tend"


def test_tables_escape_control_characters_of_stored_text(cli, cli_json) -> None:
    cli_json("model", "create", "m", "--description", HOSTILE, "--notes", HOSTILE)
    uuid = _new_checkpoint(cli_json, framework=HOSTILE)
    cli_json("model", "register", "m", uuid, "--comment", HOSTILE, "--metadata", json.dumps({HOSTILE: HOSTILE}))
    outputs = [cli(*argv)[1] for argv in [
        ("model", "list"), ("model", "describe", "m"), ("model", "list-versions", "m"),
        ("model", "version", "describe", "m"), ("checkpoint", "describe", uuid), ("checkpoint", "list"),
    ]]
    for out in outputs:
        assert not any(c in out for c in "\x1b\x07\x9b\x7f\u202e\u2028\t"), out
    for out in outputs[:-1]:  # (checkpoint list shows no text field)
        assert "ok\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x7f\\u202etxt.exe\\u2028\\n\\tend" in out, out
    assert cli_json("model", "describe", "m")["model"]["description"] == HOSTILE  # JSON keeps the text exact


def test_watch_no_follow_stops_at_the_end_with_a_header(cli, cli_json) -> None:
    cli_json("model", "create", "a")
    cli_json("model", "create", "b")
    status, out, err = cli("watch", "--no-follow", "--limit", "10")  # fewer than 10 events: ends anyway
    assert (status, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["Sequence", "Time", "Kind", "Model", "Version", "Alias", "Checkpoint", "Principal"]
    assert [(row.split()[0], row.split()[2], row.split()[3]) for row in rows] == [
        ("1", "MODEL_CREATED", "a"), ("2", "MODEL_CREATED", "b")
    ]
    assert rows[1].index("MODEL_CREATED") == header.index("Kind")  # columns line up under the header
    status, out, _ = cli("watch", "--no-follow", "--json", "--kind", "MODEL_CREATED", "--after", "1")
    assert status == 0 and [json.loads(line)["model_name"] for line in out.splitlines()] == ["b"]


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata
    from pathlib import Path

    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("model-registry") == declared
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"model-registry {declared}\n"
