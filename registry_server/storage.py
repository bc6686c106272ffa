"""Where checkpoint files live: a local directory, or any fsspec URL (s3://bucket/prefix, file://...).

Storage is content-addressed: the bytes of a file are one blob named by their SHA-256,
`<root>/blobs/<sha256[:2]>/<sha256>`, whichever checkpoints and paths hold them (the database maps
each (checkpoint, path) to a digest). A blob is written under a temporary name in
`<root>/.uploads/<upload id>/`, checked against its digest, made durable, and only then moved to its
name (`place`), so a blob's name only ever holds the whole of the bytes it names, and a blob is
never rewritten with other bytes. `<root>/.trash/` holds blobs the garbage collector has set aside
while it checks that nothing references them (files.py, "Garbage collection").

Every name this module touches is built from a digest it has checked, an upload id, or a listing of
its own directories; the paths of checkpoint files never reach the filesystem (except once, to adopt
the files of an earlier release, where they are confined to the checkpoint's old directory).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid as uuidlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from . import validation
from .db import sqlite_path
from .errors import InvalidArgument

BLOBS = "blobs"
UPLOADS = ".uploads"  # temporary names, one directory (key prefix) per upload
TRASH = ".trash"  # blobs set aside by the garbage collector, as <sha256>.<random>
# Bytes an object store's writer buffers before sending a part: bounds the memory of one upload.
OBJECT_PART_SIZE = 8 * 1024 * 1024
BATCH = 1000  # digests listed at a time
_DIGEST = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_digest(value: str) -> bool:
    """A SHA-256 as 64 lower-case hex digits: the only names blobs get."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def checked_digest(sha256: str) -> str:
    if not is_digest(sha256):
        raise ValueError(f"not a SHA-256 digest: {str(sha256)[:80]!r}")
    return sha256


def _trash_digest(name: str) -> str | None:
    digest, _, rest = name.partition(".")
    return digest if _DIGEST.fullmatch(digest) and rest else None


def _sha256_of(file: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


class PendingFile(abc.ABC):
    """A file being written under a temporary name."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def seal(self) -> None:
        """Completes the temporary file, durably, once its bytes checked out."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Removes the temporary file, whatever closing it does (a full disk makes the close of a
        buffered file fail too); harmless once the file was placed."""


class Storage(abc.ABC):
    """The blobs of every checkpoint file, and the temporary files of uploads."""

    @abc.abstractmethod
    def uri(self) -> str:
        """The storage root as a URL: the storage_uri of every checkpoint with files stored here."""

    @abc.abstractmethod
    def create(self, upload_id: str) -> PendingFile:
        """Starts writing one file of an upload under a temporary name."""

    @abc.abstractmethod
    def place(self, files: list[tuple[PendingFile, str]]) -> None:
        """Moves sealed temporary files to the blobs of their digests (already checked), durably.
        A blob that exists already has those very bytes: it stays, or is replaced by an equal one."""

    @abc.abstractmethod
    def remove_upload(self, upload_id: str) -> None:
        """Removes what is left of an upload's temporary files (call `discard` on open ones first)."""

    @abc.abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """Opens a blob for reading; FileNotFoundError when there is none."""

    @abc.abstractmethod
    def open_trashed(self, sha256: str) -> BinaryIO | None:
        """A copy of the blob the garbage collector has set aside, if any."""

    @abc.abstractmethod
    def blobs(self) -> Iterator[list[str]]:
        """The digests of every stored blob, in batches."""

    @abc.abstractmethod
    def move_to_trash(self, sha256: str) -> str | None:
        """Moves a blob aside under a new trash name, returned; None when there is no such blob."""

    @abc.abstractmethod
    def trashed(self) -> list[str]:
        """Names in the trash (each starts with the digest of its blob)."""

    @abc.abstractmethod
    def restore(self, name: str) -> None:
        """Moves a trashed blob back to its name; nothing happens when it is gone already."""

    @abc.abstractmethod
    def delete_trashed(self, name: str) -> None:
        """Deletes a trashed blob; nothing happens when it is gone already."""

    @abc.abstractmethod
    def sweep_uploads(self, older_than: float) -> int:
        """Removes the temporary files of uploads that changed nothing since `older_than` (seconds
        since the epoch): those of uploads that died with their server. Returns how many."""

    # The layout of earlier releases: <root>/<checkpoint uuid>/<path>.

    @abc.abstractmethod
    def legacy_checkpoints(self) -> list[str]:
        """The uuids of checkpoint directories an earlier release left."""

    @abc.abstractmethod
    def adopt(self, checkpoint_uuid: str, path: str, sha256: str) -> bool:
        """Makes the blob of `sha256` from <root>/<uuid>/<path>, if its bytes have that digest; True
        when the blob exists afterwards. Links and paths leading elsewhere are never followed."""

    @abc.abstractmethod
    def remove_legacy(self, checkpoint_uuid: str) -> None:
        """Removes an earlier release's directory of a checkpoint, with whatever it still holds."""


def _fsync_directory(path: Path) -> None:
    """Makes the names created in a directory durable (a rename is only on disk once its
    directory is)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _LocalPendingFile(PendingFile):
    def __init__(self, directory: Path) -> None:
        self.file = tempfile.NamedTemporaryFile(dir=directory, delete=False)
        self.path = Path(self.file.name)

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def seal(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # the bytes are on disk before a name points at them
        self.file.close()

    def discard(self) -> None:
        # Closing flushes what is buffered, which fails again on a full disk: the file goes anyway.
        with contextlib.suppress(OSError):
            self.file.close()
        self.path.unlink(missing_ok=True)


class LocalStorage(Storage):
    """Blobs in a local directory; a checked temporary file is renamed into place (atomic on one
    filesystem)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        for name in (UPLOADS, BLOBS, TRASH):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def _blob(self, sha256: str) -> Path:
        return self.root / BLOBS / sha256[:2] / checked_digest(sha256)

    def uri(self) -> str:
        return self.root.as_uri()

    def create(self, upload_id: str) -> PendingFile:
        directory = self.root / UPLOADS / upload_id
        directory.mkdir(exist_ok=True)
        return _LocalPendingFile(directory)

    def place(self, files: list[tuple[PendingFile, str]]) -> None:
        directories: set[Path] = set()
        for pending, sha256 in files:
            assert isinstance(pending, _LocalPendingFile)
            target = self._blob(sha256)
            if target.parent not in directories:
                target.parent.mkdir(exist_ok=True)
                directories.add(target.parent)
            os.replace(pending.path, target)
        for directory in [*directories, self.root / BLOBS]:
            _fsync_directory(directory)

    def remove_upload(self, upload_id: str) -> None:
        shutil.rmtree(self.root / UPLOADS / upload_id, ignore_errors=True)

    def open(self, sha256: str) -> BinaryIO:
        return open(self._blob(sha256), "rb")

    def open_trashed(self, sha256: str) -> BinaryIO | None:
        for path in (self.root / TRASH).glob(checked_digest(sha256) + ".*"):
            with contextlib.suppress(FileNotFoundError):
                return open(path, "rb")
        return None

    def blobs(self) -> Iterator[list[str]]:
        for shard in sorted(os.scandir(self.root / BLOBS), key=lambda entry: entry.name):
            if shard.is_dir(follow_symlinks=False):
                names = [entry.name for entry in os.scandir(shard.path) if _DIGEST.fullmatch(entry.name)]
                for start in range(0, len(names), BATCH):
                    yield names[start : start + BATCH]

    def move_to_trash(self, sha256: str) -> str | None:
        name = f"{checked_digest(sha256)}.{uuidlib.uuid4().hex}"
        try:
            os.replace(self._blob(sha256), self.root / TRASH / name)
        except FileNotFoundError:
            return None
        return name

    def trashed(self) -> list[str]:
        return [entry.name for entry in os.scandir(self.root / TRASH) if _trash_digest(entry.name)]

    def restore(self, name: str) -> None:
        digest = _trash_digest(name)
        if digest is None:
            raise ValueError(f"not a trash name: {name[:80]!r}")
        target = self._blob(digest)
        target.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.root / TRASH / name, target)
            _fsync_directory(target.parent)

    def delete_trashed(self, name: str) -> None:
        if _trash_digest(name) is None:
            raise ValueError(f"not a trash name: {name[:80]!r}")
        (self.root / TRASH / name).unlink(missing_ok=True)

    def sweep_uploads(self, older_than: float) -> int:
        removed = 0
        for entry in os.scandir(self.root / UPLOADS):
            try:
                if entry.is_dir(follow_symlinks=False):
                    # A live upload keeps changing its directory (a file created) or a file in it
                    # (bytes written): only an upload idle since `older_than` goes.
                    times = [entry.stat(follow_symlinks=False).st_mtime]
                    times += [item.stat(follow_symlinks=False).st_mtime for item in os.scandir(entry.path)]
                    if max(times) < older_than:
                        shutil.rmtree(entry.path)
                        removed += 1
                elif entry.stat(follow_symlinks=False).st_mtime < older_than:  # an earlier release's
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # removed meanwhile, by its upload or another server's sweep
        return removed

    def legacy_checkpoints(self) -> list[str]:
        return sorted(
            entry.name for entry in os.scandir(self.root) if _UUID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    def adopt(self, checkpoint_uuid: str, path: str, sha256: str) -> bool:
        target = self._blob(sha256)
        if target.exists():
            return True
        directory = (self.root / checkpoint_uuid).resolve()
        source = directory / path
        try:
            # The resolved path is the joined one only when no link and no ".." lies on the way.
            if not _UUID.fullmatch(checkpoint_uuid) or os.path.isabs(path) or source.resolve(strict=True) != source:
                return False
            if not source.is_file():
                return False
            with open(source, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW)) as file:
                if _sha256_of(file) != sha256:
                    return False
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
        except FileNotFoundError:
            return target.exists()  # another server adopted it meanwhile
        except (OSError, ValueError):
            return False  # e.g. ELOOP (a link), or a NUL in an imported path
        _fsync_directory(target.parent)
        return True

    def remove_legacy(self, checkpoint_uuid: str) -> None:
        if _UUID.fullmatch(checkpoint_uuid):
            shutil.rmtree(self.root / checkpoint_uuid, ignore_errors=True)


class _FsspecPendingFile(PendingFile):
    def __init__(self, fs: Any, name: str) -> None:
        self.fs = fs
        self.name = name
        self.file = fs.open(name, "wb", block_size=OBJECT_PART_SIZE)

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def seal(self) -> None:
        self.file.close()  # on an object store: completes the multipart upload of the temporary key

    def discard(self) -> None:
        if not self.file.closed:
            from fsspec.spec import AbstractBufferedFile

            with contextlib.suppress(OSError):
                if isinstance(self.file, AbstractBufferedFile):
                    # An object store's writer: abort its multipart upload rather than complete it.
                    self.file.discard()
                    self.file.closed = True
                else:
                    self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.name)


def _modified(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch of an fsspec listing entry's last change (local files and object
    stores spell it differently), or None when the filesystem does not say."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


class FsspecStorage(Storage):
    """Blobs under any fsspec URL, e.g. s3://bucket/prefix. A file streams to a temporary key under
    `<prefix>/.uploads/<upload>/` and, once checked, is moved to its blob's key (on object stores a
    server-side copy, then the temporary key goes), unless that blob exists already."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
        except ImportError:
            raise ValueError("--storage-url needs the fsspec package: pip install 'model-registry[s3]'") from None
        options = dict(options or {})
        if fsspec.utils.get_protocol(url) in ("file", "local"):
            options.setdefault("auto_mkdir", True)  # object stores have no directories to make
        else:
            # A cached listing would hide blobs other servers placed or collected since, and
            # `place` and `open` must see the store as it is.
            options.setdefault("use_listings_cache", False)
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as error:
            # fsspec names the missing package, e.g. "Install s3fs to access S3".
            raise ValueError(f"--storage-url {url}: {error}; for S3: pip install 'model-registry[s3]'") from None
        self.root = root.rstrip("/")

    def _blob(self, sha256: str) -> str:
        return f"{self.root}/{BLOBS}/{sha256[:2]}/{checked_digest(sha256)}"

    def _find(self, prefix: str, **kwargs: Any) -> Any:
        self.fs.invalidate_cache()  # other servers change the same prefixes
        try:
            return self.fs.find(f"{self.root}/{prefix}", **kwargs)
        except FileNotFoundError:
            return {} if kwargs.get("detail") else []

    def uri(self) -> str:
        return self.fs.unstrip_protocol(self.root)

    def create(self, upload_id: str) -> PendingFile:
        return _FsspecPendingFile(self.fs, f"{self.root}/{UPLOADS}/{upload_id}/{uuidlib.uuid4().hex}")

    def place(self, files: list[tuple[PendingFile, str]]) -> None:
        for pending, sha256 in files:
            assert isinstance(pending, _FsspecPendingFile)
            target = self._blob(sha256)
            if self.fs.exists(target):
                self.fs.rm(pending.name)  # the same bytes are stored already: no copy
            else:
                self.fs.mv(pending.name, target)

    def remove_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(f"{self.root}/{UPLOADS}/{upload_id}", recursive=True)

    def open(self, sha256: str) -> BinaryIO:
        return self.fs.open(self._blob(sha256), "rb")

    def open_trashed(self, sha256: str) -> BinaryIO | None:
        for name in self.fs.glob(f"{self.root}/{TRASH}/{checked_digest(sha256)}.*"):
            with contextlib.suppress(FileNotFoundError):
                return self.fs.open(name, "rb")
        return None

    def blobs(self) -> Iterator[list[str]]:
        names = [key.rsplit("/", 1)[-1] for key in self._find(BLOBS)]
        names = [name for name in names if _DIGEST.fullmatch(name)]
        for start in range(0, len(names), BATCH):
            yield names[start : start + BATCH]

    def move_to_trash(self, sha256: str) -> str | None:
        name = f"{checked_digest(sha256)}.{uuidlib.uuid4().hex}"
        try:
            self.fs.mv(self._blob(sha256), f"{self.root}/{TRASH}/{name}")
        except FileNotFoundError:
            return None
        return name

    def trashed(self) -> list[str]:
        return [name for name in (key.rsplit("/", 1)[-1] for key in self._find(TRASH)) if _trash_digest(name)]

    def restore(self, name: str) -> None:
        digest = _trash_digest(name)
        if digest is None:
            raise ValueError(f"not a trash name: {name[:80]!r}")
        with contextlib.suppress(FileNotFoundError):
            self.fs.mv(f"{self.root}/{TRASH}/{name}", self._blob(digest))

    def delete_trashed(self, name: str) -> None:
        if _trash_digest(name) is None:
            raise ValueError(f"not a trash name: {name[:80]!r}")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(f"{self.root}/{TRASH}/{name}")

    def sweep_uploads(self, older_than: float) -> int:
        newest: dict[str, float | None] = {}
        prefix = f"{self.root}/{UPLOADS}/"
        for key, info in self._find(UPLOADS, detail=True).items():
            upload = key[len(prefix):].split("/", 1)[0] if key.startswith(prefix) else ""
            if upload:
                modified, known = _modified(info), newest.get(upload, 0.0)
                # An entry of unknown age keeps its upload: better a leftover than a lost upload.
                newest[upload] = None if modified is None or known is None else max(known, modified)
        removed = 0
        for upload, modified in newest.items():
            if modified is not None and modified < older_than:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(prefix + upload, recursive=True)
                    removed += 1
        return removed

    def legacy_checkpoints(self) -> list[str]:
        self.fs.invalidate_cache()
        try:
            keys = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:  # nothing stored under the prefix yet
            return []
        names = (key.rstrip("/").rsplit("/", 1)[-1] for key in keys)
        return sorted(name for name in names if _UUID.fullmatch(name))

    def adopt(self, checkpoint_uuid: str, path: str, sha256: str) -> bool:
        target = self._blob(sha256)
        if self.fs.exists(target):
            return True
        try:
            validation.file_path(path, portable=False)  # relative, no "." or "..": confined to the prefix
        except InvalidArgument:
            return False
        source = f"{self.root}/{checkpoint_uuid}/{path}"
        if not _UUID.fullmatch(checkpoint_uuid):
            return False
        try:
            with self.fs.open(source, "rb") as file:
                if _sha256_of(file) != sha256:
                    return False
            self.fs.mv(source, target)
        except FileNotFoundError:
            return self.fs.exists(target)
        return True

    def remove_legacy(self, checkpoint_uuid: str) -> None:
        if _UUID.fullmatch(checkpoint_uuid):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(f"{self.root}/{checkpoint_uuid}", recursive=True)


def default_storage_dir(database_url: str) -> str:
    """Beside the SQLite file (registry.db -> registry-files/), else ./registry-files."""
    path = sqlite_path(database_url)
    return os.path.join(os.path.dirname(path) or ".", "registry-files") if path else "registry-files"


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
