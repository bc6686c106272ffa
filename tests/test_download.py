"""Downloads on the client side: files get the modes of any file the user creates, and a failed
download leaves no directory of its own behind."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelregistry.v1 import checkpoint_pb2
from modelregistry.v1 import registry_service_pb2 as pb

from registry_client import DataLossError, NotFoundError, Registry
from registry_client.transfer import receive_files


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_downloaded_files_have_the_usual_modes(registry: Registry, tmp_path: Path, umask_022: None) -> None:
    source = tmp_path / "source"
    (source / "config").mkdir(parents=True)
    (source / "model.bin").write_bytes(b"weights")
    (source / "config" / "hparams.json").write_text("{}")
    checkpoint = registry.upload_checkpoint(source)
    target = registry.download_checkpoint(checkpoint.uuid, tmp_path / "restored")
    assert _mode(target / "model.bin") == 0o644  # 0666 less the umask, as `cp` or open() would make it
    assert _mode(target / "config" / "hparams.json") == 0o644
    assert _mode(target / "config") == 0o755


def test_a_failed_download_leaves_no_directory_behind(registry: Registry, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.bin").write_bytes(b"weights")
    checkpoint = registry.upload_checkpoint(source)
    with pytest.raises(NotFoundError) as caught:
        registry.download_checkpoint(checkpoint.uuid, tmp_path / "new" / "dir", paths=["absent.bin"])
    assert caught.value.reason == "CHECKPOINT_FILE_NOT_FOUND"
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(NotFoundError):
        registry.download_checkpoint(checkpoint.uuid, existing, paths=["absent.bin"])
    assert existing.is_dir() and list(existing.iterdir()) == []  # it was there before: it stays


def _file(path: str, data: bytes, sha256: str | None = None) -> list[pb.DownloadCheckpointFilesResponse]:
    header = checkpoint_pb2.CheckpointFile(path=path, size=len(data), sha256=sha256 or hashlib.sha256(data).hexdigest())
    return [pb.DownloadCheckpointFilesResponse(file=header), pb.DownloadCheckpointFilesResponse(chunk=data)]


def test_a_file_that_fails_its_digest_takes_only_its_own_new_directories(tmp_path: Path) -> None:
    stream = _file("a/good.bin", b"good") + _file("b/c/bad.bin", b"bad", sha256="0" * 64)
    with pytest.raises(DataLossError):
        receive_files(iter(stream), tmp_path / "out", total=7, progress=None)
    assert (tmp_path / "out" / "a" / "good.bin").read_bytes() == b"good"  # checked out: kept
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]  # no b/, no b/c/, no .part file
