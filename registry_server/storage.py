"""Where checkpoint files live: a local directory, or any fsspec URL (s3://bucket/prefix, file://...).

Every file is first written under a temporary name outside the checkpoints' tree, and only reaches its
final name (`<root>/<checkpoint uuid>/<path>`) through `PendingFile.publish`, once its size and digest
have checked out. Readers therefore never see a partial file, and a failed upload leaves at most a
temporary file behind, which `discard` removes.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import urlparse

from .errors import invalid

UPLOADS = ".uploads"  # temporary names, beside (never inside) the checkpoints' directories
# Bytes an object store's writer buffers before sending a part: bounds the memory of one upload.
OBJECT_PART_SIZE = 8 * 1024 * 1024


class PendingFile(abc.ABC):
    """A file being written under a temporary name."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def seal(self) -> None:
        """Completes the temporary file, durably, once its bytes checked out (outside any transaction:
        for a large file this takes a while)."""

    @abc.abstractmethod
    def publish(self) -> None:
        """Moves the sealed file to its final name, replacing a file of the same path."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Removes the temporary file; harmless after publish."""


class Storage(abc.ABC):
    """The files of every checkpoint, one directory (or key prefix) per checkpoint uuid."""

    @abc.abstractmethod
    def uri(self, checkpoint_uuid: str) -> str:
        """Where the checkpoint's files are, as a URL (the checkpoint's storage_uri)."""

    @abc.abstractmethod
    def create(self, checkpoint_uuid: str, path: str) -> PendingFile:
        """Starts writing one file of a checkpoint under a temporary name."""

    @abc.abstractmethod
    def open(self, checkpoint_uuid: str, path: str) -> BinaryIO:
        """Opens a published file for reading."""

    @abc.abstractmethod
    def delete(self, checkpoint_uuid: str) -> None:
        """Removes every file of a checkpoint; nothing happens when it has none."""


class _LocalPendingFile(PendingFile):
    def __init__(self, file: IO[bytes], final: Path, checkpoint_dir: Path) -> None:
        self.file = file
        self.final = final
        self.checkpoint_dir = checkpoint_dir

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def seal(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # the bytes are on disk before a name points at them
        self.file.close()

    def publish(self) -> None:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # Paths are validated before this point; this guards against a link an operator left in
        # the tree pointing elsewhere.
        if not self.final.parent.resolve().is_relative_to(self.checkpoint_dir.resolve()):
            raise invalid("INVALID_FILE_PATH", "the file's directory leads outside the checkpoint")
        os.replace(self.file.name, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # and the new name is on disk too
        finally:
            os.close(directory)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file.name)


class LocalStorage(Storage):
    """Files in a local directory; a temporary file is renamed into place (atomic on one filesystem)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        (self.root / UPLOADS).mkdir(parents=True, exist_ok=True)

    def _dir(self, checkpoint_uuid: str) -> Path:
        return self.root / checkpoint_uuid

    def uri(self, checkpoint_uuid: str) -> str:
        return self._dir(checkpoint_uuid).as_uri()

    def create(self, checkpoint_uuid: str, path: str) -> PendingFile:
        file = tempfile.NamedTemporaryFile(dir=self.root / UPLOADS, prefix=checkpoint_uuid + ".", delete=False)
        return _LocalPendingFile(file, self._dir(checkpoint_uuid) / path, self._dir(checkpoint_uuid))

    def open(self, checkpoint_uuid: str, path: str) -> BinaryIO:
        return open(self._dir(checkpoint_uuid) / path, "rb")

    def delete(self, checkpoint_uuid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._dir(checkpoint_uuid))


class _FsspecPendingFile(PendingFile):
    def __init__(self, fs: Any, temporary: str, final: str) -> None:
        self.fs = fs
        self.temporary = temporary
        self.final = final
        self.file = fs.open(temporary, "wb", block_size=OBJECT_PART_SIZE)

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def seal(self) -> None:
        self.file.close()  # on an object store: completes the multipart upload of the temporary key

    def publish(self) -> None:
        # On object stores a server-side copy, then the temporary key goes: no byte passes through
        # the registry again, and readers see the old object or the whole new one.
        self.fs.mv(self.temporary, self.final)

    def discard(self) -> None:
        if not self.file.closed:
            from fsspec.spec import AbstractBufferedFile

            if isinstance(self.file, AbstractBufferedFile):
                # An object store's writer: abort its multipart upload rather than complete it.
                self.file.discard()
                self.file.closed = True
            else:
                self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.temporary)


class FsspecStorage(Storage):
    """Files under any fsspec URL, e.g. s3://bucket/prefix. Each file streams to a temporary key under
    `<prefix>/.uploads/` and is moved to its final key once checked; see _FsspecPendingFile."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:
            raise ValueError("--storage-url needs the fsspec package: pip install 'model-registry[s3]'") from None
        options = dict(options or {})
        if fsspec.utils.get_protocol(url) in ("file", "local"):
            options.setdefault("auto_mkdir", True)  # object stores have no directories to make
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as error:
            # fsspec names the missing package, e.g. "Install s3fs to access S3".
            raise ValueError(f"--storage-url {url}: {error}; for S3: pip install 'model-registry[s3]'") from None
        self.root = root.rstrip("/")

    def _key(self, checkpoint_uuid: str, path: str = "") -> str:
        return f"{self.root}/{checkpoint_uuid}" + (f"/{path}" if path else "")

    def uri(self, checkpoint_uuid: str) -> str:
        return self.fs.unstrip_protocol(self._key(checkpoint_uuid))

    def create(self, checkpoint_uuid: str, path: str) -> PendingFile:
        temporary = f"{self.root}/{UPLOADS}/{checkpoint_uuid}.{uuidlib.uuid4().hex}"
        return _FsspecPendingFile(self.fs, temporary, self._key(checkpoint_uuid, path))

    def open(self, checkpoint_uuid: str, path: str) -> BinaryIO:
        return self.fs.open(self._key(checkpoint_uuid, path), "rb")

    def delete(self, checkpoint_uuid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._key(checkpoint_uuid), recursive=True)


def default_storage_dir(database_url: str) -> str:
    """Beside the SQLite file (registry.db -> registry-files/), else ./registry-files."""
    parsed = urlparse(database_url)
    if parsed.scheme == "sqlite":
        return os.path.join(os.path.dirname(database_url[len("sqlite:///"):]) or ".", "registry-files")
    return "registry-files"


def open_storage(
    database_url: str, storage_dir: str | None = None, storage_url: str | None = None, storage_options: str | None = None
) -> Storage:
    """The storage named by the server's flags: --storage-url (with --storage-options, JSON), else
    --storage-dir, else a directory beside the SQLite file."""
    if storage_url and storage_dir:
        raise ValueError("give --storage-dir or --storage-url, not both")
    if storage_url:
        try:
            options = json.loads(storage_options) if storage_options else {}
        except ValueError as error:
            raise ValueError(f"--storage-options is not JSON: {error}") from None
        if not isinstance(options, dict):
            raise ValueError('--storage-options must be a JSON object, e.g. {"endpoint_url": "http://..."}')
        return FsspecStorage(storage_url, options)
    return LocalStorage(storage_dir or default_storage_dir(database_url))
