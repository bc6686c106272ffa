"""`model-registry-server export|import` as a user runs them: a registry with files moved SQLite ->
PostgreSQL -> SQLite onto fresh storage, downloads working after each move; every failure one line
and exit 1, with nothing created."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from registry_client import Registry
from registry_server import backup
from tests.conftest import empty_database
from tests.servers import console_script
from tests.test_file_integrity import server_on
from tests.test_files import make_tree, tree_of

FILES = {"model.pt": os.urandom(3 * 1024 * 1024 + 5), "config/hparams.json": b'{"lr": 0.01}', "empty": b""}


def server_command(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [console_script("model-registry-server"), *args], capture_output=True, timeout=120, cwd=cwd, input=stdin,
        env={k: v for k, v in os.environ.items() if not k.startswith("MODEL_REGISTRY_")}, check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The failure as a user sees it: exit 1, one line on stderr, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_registry_with_files_moves_to_postgresql_and_back(tmp_path: Path) -> None:
    """The README's migration, on fresh storage each time: every record and file arrives, and
    downloads return the same bytes."""
    with empty_database("postgresql", tmp_path) as postgresql:
        sqlite_a, sqlite_b = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
        with server_on(sqlite_a, tmp_path / "files-a") as running, Registry(f"127.0.0.1:{running.port}") as registry:
            checkpoint = registry.upload_checkpoint(make_tree(tmp_path / "upload", FILES), metrics={"loss": 0.5})
            registry.create_model("mnist").register_version(checkpoint.uuid, aliases=["production"])
        steps = [
            (sqlite_a, tmp_path / "files-a", postgresql, tmp_path / "files-pg", "pg.tar.gz"),
            (postgresql, tmp_path / "files-pg", sqlite_b, tmp_path / "files-b", "b.tar"),
        ]
        for source, source_files, target, target_files, archive in steps:
            exported = server_command("export", "--database-url", source, "--storage-dir", str(source_files), "--output", str(tmp_path / archive))
            assert exported.returncode == 0, exported.stderr
            assert b"Exported 1 models, 1 model versions, 1 checkpoints" in exported.stdout
            assert exported.stderr == b""
            imported = server_command("import", "--database-url", target, "--storage-dir", str(target_files), "--input", str(tmp_path / archive))
            assert imported.returncode == 0, imported.stderr
            assert b"Imported 1 models, 1 model versions, 1 checkpoints" in imported.stdout and b"3 files" in imported.stdout
            with server_on(target, target_files) as running, Registry(f"127.0.0.1:{running.port}") as registry:
                version = registry.get_model("mnist").get_version(alias="production")
                assert version.checkpoint.uuid == checkpoint.uuid and version.checkpoint.metrics == {"loss": 0.5}
                downloaded = registry.download_checkpoint(checkpoint.uuid, tmp_path / f"download-{archive}")
                assert tree_of(downloaded) == FILES
        assert (tmp_path / "pg.tar.gz").read_bytes()[:2] == b"\x1f\x8b"  # .gz: compressed


def test_records_only_export_warns_loudly_and_names_the_copy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    with server_on(url, tmp_path / "files") as running, Registry(f"127.0.0.1:{running.port}") as registry:
        registry.upload_checkpoint(make_tree(tmp_path / "upload", {"a": b"a"}))
    result = server_command("export", "--database-url", url, "--storage-dir", str(tmp_path / "files"), "--no-files", "--output", "-")
    assert result.returncode == 0
    warning = result.stderr.decode()
    assert "WARNING" in warning and "NOT the checkpoint files" in warning
    assert f"rsync -a {tmp_path / 'files'}/blobs/ " in warning
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert tar.getnames() == [backup.DOCUMENT]


def test_export_of_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    result = server_command("export", "--database-url", "sqlite:///registyr.db", "--output", "out.tar", cwd=tmp_path)
    assert one_error_line(result) == "error: no SQLite database at registyr.db\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("sqlit:///registry.db", "unsupported database URL scheme 'sqlit'"),
        ("postgresql://nobody:secret@127.0.0.1:1/registry", "cannot be used"),
    ],
)
def test_a_bad_database_url_is_one_line(tmp_path: Path, url: str, message: str) -> None:
    for command in (["export", "--output", "out.tar"], ["import", "--input", "in.tar"]):
        (tmp_path / "in.tar").write_bytes(b"")
        result = server_command(*command, "--database-url", url, cwd=tmp_path)
        err = one_error_line(result)
        assert message in err, err
        assert "secret" not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tar"]


def test_missing_input_and_output_places_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    with server_on(url, tmp_path / "files"):
        pass
    assert "no directory" in one_error_line(server_command("export", "--database-url", url, "--storage-dir", str(tmp_path / "files"), "--output", str(tmp_path / "nope" / "x.tar")))
    assert "no storage directory" in one_error_line(server_command("export", "--database-url", url, "--storage-dir", str(tmp_path / "filse"), "--output", str(tmp_path / "x.tar")))
    assert "no file" in one_error_line(server_command("import", "--database-url", f"sqlite:///{tmp_path}/new.db", "--input", str(tmp_path / "absent.tar")))
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "new.db").exists() and not (tmp_path / "filse").exists()


def test_export_into_a_closed_pipe_ends_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    with server_on(url, tmp_path / "files") as running, Registry(f"127.0.0.1:{running.port}") as registry:
        registry.upload_checkpoint(make_tree(tmp_path / "upload", {"big": os.urandom(4 * 1024 * 1024)}))
    script = (
        f"'{console_script('model-registry-server')}' export --database-url {url} --storage-dir {tmp_path / 'files'} "
        "--output - 2>err | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    err = (tmp_path / "err").read_text()
    assert result.stdout.strip() == "1", err
    assert err == "error: the output was closed before the export was complete\n"


def test_a_refused_import_is_one_line_and_leaves_no_database(tmp_path: Path) -> None:
    document = {"format": "model-registry-export", "format_version": 4, "last_event_sequence": 0,
                "models": [{"name": "a/b", "creation_time": 1, "last_updated_time": 1, "last_assigned_version": 0}]}
    (tmp_path / "hostile.json").write_text(json.dumps(document))
    result = server_command("import", "--database-url", f"sqlite:///{tmp_path}/new.db", "--storage-dir", str(tmp_path / "files"),
                            "--input", str(tmp_path / "hostile.json"))
    assert one_error_line(result).startswith("error: models[0].name: name must not contain '/'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.json"]


def test_import_from_stdin_and_not_twice(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    with server_on(source, tmp_path / "files") as running, Registry(f"127.0.0.1:{running.port}") as registry:
        registry.create_model("m")
    archive = server_command("export", "--database-url", source, "--storage-dir", str(tmp_path / "files"), "--output", "-").stdout
    assert hashlib.sha256(archive).hexdigest()  # bytes on stdout, the summary on stderr
    for expected in (0, 1):
        result = server_command("import", "--database-url", target, "--storage-dir", str(tmp_path / "files-b"), "--input", "-", stdin=archive)
        assert result.returncode == expected, result.stderr
    assert one_error_line(result) == "error: import loads into an empty registry only\n"


def test_export_of_a_damaged_blob_fails_and_leaves_no_archive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    with server_on(url, tmp_path / "files") as running, Registry(f"127.0.0.1:{running.port}") as registry:
        registry.upload_checkpoint(make_tree(tmp_path / "upload", {"a": b"original bytes"}))
    blob = next(p for p in (tmp_path / "files" / "blobs").rglob("*") if p.is_file())
    blob.write_bytes(b"rotten bytes!!")  # same size, other bytes
    result = server_command("export", "--database-url", url, "--storage-dir", str(tmp_path / "files"), "--output", str(tmp_path / "out.tar"))
    assert f"blob {blob.name} in the storage" in one_error_line(result)
    assert not any(p.name.startswith((".out.tar", "out.tar")) for p in tmp_path.iterdir())
