"""Every client method and every CLI command carries the token, against a real server with
authentication on, over plaintext and over TLS: credentials belong to the channel, so no call can
forget them (streams included)."""

from __future__ import annotations

import argparse
import inspect
import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry_client import Checkpoint, EventKind, Model, ModelVersion, Registry
from registry_client.cli import build_parser, main
from registry_server.server import RegistryServer, TlsFiles, build_server
from registry_server.storage import LocalStorage

from .certs import CertificateAuthority
from .conftest import TOKENS

ADMIN = TOKENS["admin"][0]


@pytest.fixture(params=["plaintext", "tls"])
def secured(request: pytest.FixtureRequest, database_url: str, tokens_file: str, tmp_path: Path, storage_dir: str
            ) -> Iterator[tuple[RegistryServer, dict[str, str]]]:
    """A server with tokens on, and the connection options (Registry's keyword arguments) to reach it."""
    tls, options = None, {}
    if request.param == "tls":
        ca = CertificateAuthority(tmp_path)
        cert = ca.issue("registry server", server=True)
        tls, options = TlsFiles(cert.cert, cert.key), {"tls_ca": ca.path}
    running = build_server(database_url, "127.0.0.1", 0, auth_tokens=tokens_file, tls=tls,
                           storage=LocalStorage(storage_dir))
    try:
        yield running, options
    finally:
        running.stop(grace=None)


def _public_methods(cls: type) -> set[str]:
    return {f"{cls.__name__}.{name}" for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in ("from_proto", "to_dict", "close")}


class Recorder:
    """Calls a method and notes its qualified name, so the test can check it called them all."""

    def __init__(self) -> None:
        self.called: set[str] = set()

    def __call__(self, method: Callable[..., object], *args: object, **kwargs: object) -> object:
        self.called.add(method.__qualname__)
        return method(*args, **kwargs)


def test_every_client_method_sends_the_token(secured: tuple[RegistryServer, dict[str, str]], tmp_path: Path) -> None:
    server, options = secured
    files = tmp_path / "upload"
    files.mkdir()
    (files / "model.pkl").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    call = Recorder()
    with Registry(f"127.0.0.1:{server.port}", token=ADMIN, timeout=10, **options) as r:
        call(r.check_connection)
        model: Model = call(r.create_model, "m", description="d")  # type: ignore[assignment]
        call(r.get_model, "m")
        call(r.get_models)
        call(r.get_model_labels)
        call(r.server_info)
        checkpoint: Checkpoint = call(r.create_checkpoint, experiment_id=1, metrics={"loss": 0.5})  # type: ignore[assignment]
        call(r.get_checkpoint, checkpoint.uuid)
        call(r.get_checkpoints, experiment_id=1)
        call(r.top_checkpoint, experiment_id=1, metric="loss")
        uploaded: Checkpoint = call(r.upload_checkpoint, files, experiment_id=1, metrics={"loss": 0.1})  # type: ignore[assignment]
        call(r.upload_checkpoint_files, checkpoint.uuid, files)
        call(r.download_checkpoint, uploaded.uuid, tmp_path / "down")
        assert (tmp_path / "down" / "model.pkl").exists()
        call(uploaded.download, tmp_path / "down2")
        assert call(uploaded.load, tmp_path / "down3") == {"weights": [1, 2, 3]}
        version: ModelVersion = call(model.register_version, uploaded.uuid)  # type: ignore[assignment]
        call(version.download, tmp_path / "down4")
        assert call(version.load, tmp_path / "down5") == {"weights": [1, 2, 3]}
        call(r.register_version, "m", checkpoint.uuid)
        call(model.reload)
        call(model.add_metadata, {"k": 1})
        call(model.remove_metadata, ["k"])
        call(model.set_description, "e")
        call(model.set_labels, ["a"])
        call(model.set_notes, "n")
        call(model.set_editors, ["bob"])
        call(model.get_version)
        call(r.get_version, "m", 1)
        call(model.update, description="f", labels=["c"])
        call(version.update, name="w", comment="d")
        call(model.get_versions)
        call(model.set_alias, "production", 1)
        call(model.get_alias_history)
        call(model.delete_alias, "production")
        call(version.set_name, "v")
        call(version.set_comment, "c")
        call(version.set_labels, ["b"])
        call(version.set_metadata, {"x": 1})
        call(version.set_notes, "n")
        events = call(r.watch, models=["m"], kinds=[EventKind.MODEL_CREATED])
        assert next(events).model_name == "m"  # type: ignore[call-overload]
        events.close()  # type: ignore[attr-defined]
        call(version.delete)
        call(model.archive)
        call(model.unarchive)
        call(model.rename, "renamed")
        call(model.delete)
        call(r.create_model, "gone")
        call(r.delete_model, "gone")
        spare: Checkpoint = call(r.create_checkpoint)  # type: ignore[assignment]
        call(spare.delete)
        call(r.delete_checkpoint, checkpoint.uuid)
    expected = set().union(*(_public_methods(cls) for cls in (Registry, Model, ModelVersion, Checkpoint)))
    assert call.called == expected


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command of the parser, e.g. ("model", "alias", "set")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))
    if prefix and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        yield prefix


def test_every_cli_command_sends_the_token(
    secured: tuple[RegistryServer, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, options = secured
    files = tmp_path / "upload"
    files.mkdir()
    (files / "weights.bin").write_bytes(b"\0" * 1000)
    connection = ["--target", f"127.0.0.1:{server.port}", "--timeout", "10"]
    if "tls_ca" in options:
        connection += ["--tls-ca", options["tls_ca"]]
    monkeypatch.setenv("MODEL_REGISTRY_TOKEN", ADMIN)
    ran: set[tuple[str, ...]] = set()

    def cli(*argv: str) -> object:
        command = tuple(a for a in argv if not a.startswith("-"))
        ran.add(next(c for c in sorted(_commands(build_parser()), key=len, reverse=True)
                      if command[:len(c)] == c))
        status = main([*connection, "--json", *argv])
        out, err = capsys.readouterr()
        assert (status, err) == (0, ""), (argv, err)
        return json.loads(out) if out.strip() else None

    cli("model", "create", "m", "--label", "x")
    cli("model", "list")
    cli("model", "labels")
    uuid = cli("checkpoint", "create", "--experiment-id", "1")["uuid"]  # type: ignore[index]
    cli("checkpoint", "describe", uuid)
    cli("checkpoint", "list")
    uploaded = cli("checkpoint", "upload", str(files), "--experiment-id", "1")["uuid"]  # type: ignore[index]
    cli("checkpoint", "download", uploaded, str(tmp_path / "down"))
    assert (tmp_path / "down" / "weights.bin").read_bytes() == b"\0" * 1000
    cli("model", "register", "m", uploaded, "--alias", "production")
    cli("model", "describe", "m")
    cli("model", "update", "m", "--description", "d")
    cli("model", "register", "m", uploaded)
    cli("model", "version", "describe", "m", "1")
    cli("model", "version", "update", "m", "1", "--comment", "c")
    cli("model", "version", "delete", "m", "2")
    cli("model", "list-versions", "m")
    cli("model", "add-metadata", "m", '{"k": 1}')
    cli("model", "remove-metadata", "m", "k")
    cli("model", "alias", "set", "m", "staging", "1")
    cli("model", "alias", "history", "m")
    cli("model", "alias", "delete", "m", "staging")
    cli("model", "alias", "delete", "m", "production")
    cli("watch", "--limit", "1")
    cli("info")
    cli("model", "archive", "m")
    cli("model", "unarchive", "m")
    cli("model", "rename", "m", "n")
    cli("model", "delete", "n")
    cli("checkpoint", "delete", uuid)
    assert ran == set(_commands(build_parser()))
