"""Checkpoint files to and from the registry as streams of 1 MiB chunks: no file is ever held whole,
every file is checked against its SHA-256, and a download only puts complete, checked files in place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import grpc
from modelregistry.v1 import checkpoint_pb2
from modelregistry.v1 import registry_service_pb2 as pb

from .errors import DataLossError

CHUNK_SIZE = 1024 * 1024  # the server refuses larger chunks
Progress = Callable[[int, int], None]
"""Called as bytes move: progress(bytes done so far, bytes in all)."""


def _no_progress(done: int, total: int) -> None:
    pass


def local_files(local_dir: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(path relative to local_dir with "/" separators, file) for every file under local_dir, sorted.
    Links are refused: a checkpoint holds regular files only, and a link could point anywhere."""
    root = Path(local_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    files: list[tuple[str, Path]] = []
    for directory, subdirectories, names in os.walk(root):
        for name in subdirectories + names:
            path = Path(directory, name)
            if path.is_symlink():
                raise ValueError(f"{path} is a symbolic link; a checkpoint holds regular files only")
            if name in names and not path.is_file():
                raise ValueError(f"{path} is not a regular file")
        files.extend((Path(directory, name).relative_to(root).as_posix(), Path(directory, name)) for name in names)
    return sorted(files)


def _sha256(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(CHUNK_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


class UploadStream:
    """The request messages of one upload, read from disk as gRPC asks for them. An error reading a
    file is kept in `error` (gRPC would only report the call as cancelled)."""

    def __init__(self, checkpoint_uuid: str, files: list[tuple[str, Path]], progress: Progress | None) -> None:
        self.checkpoint_uuid = checkpoint_uuid
        self.files = files
        self.progress = progress or _no_progress
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[pb.UploadCheckpointFilesRequest]:
        try:
            yield pb.UploadCheckpointFilesRequest(checkpoint_uuid=self.checkpoint_uuid)
            total = sum(path.stat().st_size for _, path in self.files)
            done = 0
            self.progress(done, total)
            for name, path in self.files:
                with open(path, "rb") as file:
                    size = os.fstat(file.fileno()).st_size
                    header = checkpoint_pb2.CheckpointFile(path=name, size=size, sha256=_sha256(file))
                    file.seek(0)
                    yield pb.UploadCheckpointFilesRequest(file=header)
                    while chunk := file.read(CHUNK_SIZE):
                        yield pb.UploadCheckpointFilesRequest(chunk=chunk)
                        done += len(chunk)
                        self.progress(done, total)
        except Exception as error:
            self.error = error
            raise


def _confined(directory: Path, path: str) -> Path:
    """directory/path, refusing a path from the server that would lead outside the directory."""
    target = (directory / path).resolve()
    root = directory.resolve()
    if not path or os.path.isabs(path) or target == root or not target.is_relative_to(root):
        raise DataLossError(
            grpc.StatusCode.DATA_LOSS, f"the server sent a file path outside the checkpoint: {path!r}",
            "INVALID_FILE_PATH", {"path": path},
        )
    return target


class _Directories:
    """The directories a download creates, so that a failed download removes those it left empty (and
    never one that was there before)."""

    def __init__(self) -> None:
        self.created: list[Path] = []

    def make(self, directory: Path) -> None:
        missing = []
        while not directory.exists() and directory != directory.parent:
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            self.created.append(new)

    def remove_empty(self) -> None:
        for directory in reversed(self.created):
            with contextlib.suppress(OSError):  # not empty (a file that checked out), or gone
                directory.rmdir()


class _IncomingFile:
    """One downloaded file: written beside its final name, renamed into place once size and digest match."""

    def __init__(self, directory: Path, header: checkpoint_pb2.CheckpointFile, directories: _Directories) -> None:
        self.header = header
        self.target = _confined(directory, header.path)
        directories.make(self.target.parent)
        # os.open with 0o666, not tempfile (always 0o600): the file gets the mode of any file the user
        # makes, the umask applied, and keeps it once renamed into place.
        self.part = self.target.with_name(f".{self.target.name}.{secrets.token_hex(8)}.part")
        self.file = os.fdopen(os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)

    def finish(self) -> None:
        self.file.close()
        if self.size != self.header.size or self.digest.hexdigest() != self.header.sha256:
            self.discard()
            raise DataLossError(
                grpc.StatusCode.DATA_LOSS,
                f"{self.header.path}: received {self.size} bytes with sha256 {self.digest.hexdigest()}, "
                f"expected {self.header.size} bytes with sha256 {self.header.sha256}",
                "FILE_DIGEST_MISMATCH",
                {"path": self.header.path},
            )
        os.replace(self.part, self.target)

    def discard(self) -> None:
        self.file.close()
        self.part.unlink(missing_ok=True)


def receive_files(
    responses: Iterable[pb.DownloadCheckpointFilesResponse], directory: Path, total: int, progress: Progress | None
) -> list[str]:
    """Writes the files of a download stream under directory; returns their paths. Each file appears
    only once it checked out; on failure, the directories this call created and left empty go too."""
    progress = progress or _no_progress
    directories = _Directories()
    directories.make(directory)
    received: list[str] = []
    current: _IncomingFile | None = None
    done = 0
    progress(done, total)
    try:
        for message in responses:
            if message.WhichOneof("content") == "file":
                if current is not None:
                    current.finish()
                    received.append(current.header.path)
                current = _IncomingFile(directory, message.file, directories)
            elif current is not None:
                current.write(message.chunk)
                done += len(message.chunk)
                progress(done, total)
        if current is not None:
            current.finish()
            received.append(current.header.path)
            current = None
    except BaseException:
        if current is not None:
            current.discard()
        directories.remove_empty()
        raise
    return received
