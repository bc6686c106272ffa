"""Checkpoint files: an upload is checked file by file and published all at once; downloads stream the
stored files. Ties what the store records (sizes, digests, storage_uri) to what the storage keeps."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from . import validation
from .errors import invalid
from .storage import PendingFile, Storage
from .store import RegistryStore
from .tables import Checkpoint

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024  # the most bytes one message of a transfer carries
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileHeader:
    """One file as it travels: path in the checkpoint, size in bytes, SHA-256 as lower-case hex."""

    path: str
    size: int
    sha256: str


def _ancestors(path: str) -> Iterator[str]:
    """"a/b/c" -> "a", "a/b": the directories a file needs."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


class Upload:
    """One upload call. Each file streams to a temporary name while its digest is computed; a file is
    checked (size, digest) when the next header or the end of the stream arrives, and `commit`
    publishes every file and records them in one transaction. Until then nothing is visible, and
    `discard` removes what was written."""

    def __init__(self, store: RegistryStore, storage: Storage, checkpoint_uuid: str, stored: Iterable[str]) -> None:
        self.store = store
        self.storage = storage
        self.checkpoint_uuid = checkpoint_uuid
        self.received: dict[str, FileHeader] = {}
        self._paths = set(stored)  # files already stored plus those received, to refuse "a" beside "a/b"
        self._directories = {d for path in self._paths for d in _ancestors(path)}
        self._pending: list[PendingFile] = []
        self._current: FileHeader | None = None
        self._written = 0
        self._digest = hashlib.sha256()

    def start_file(self, path: str, size: int, sha256: str) -> None:
        self._finish_file()
        validation.file_path(path)
        if path in self.received:
            raise invalid("DUPLICATE_FILE_PATH", f"file {path!r} was sent twice in this upload", path=path)
        if path in self._directories or any(d in self._paths for d in _ancestors(path)):
            raise invalid(
                "FILE_PATH_CONFLICT", f"{path!r} would be both a file and a directory of the checkpoint", path=path
            )
        if size < 0:
            raise invalid("INVALID_FILE_SIZE", "file size must not be negative", path=path, size=size)
        if not _SHA256_HEX.fullmatch(sha256):
            raise invalid("INVALID_FILE_DIGEST", "sha256 must be 64 lower-case hexadecimal digits", path=path)
        self._paths.add(path)
        self._directories.update(_ancestors(path))
        if len(self._paths) > validation.MAX_RESOURCES:
            raise invalid("TOO_MANY_RESOURCES", f"a checkpoint holds at most {validation.MAX_RESOURCES} files")
        self._pending.append(self.storage.create(self.checkpoint_uuid, path))
        self._current = FileHeader(path, size, sha256)
        self._written = 0
        self._digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        current = self._current
        if current is None:
            raise invalid("CHUNK_BEFORE_FILE", "a chunk came before any file header")
        if len(chunk) > CHUNK_SIZE:
            raise invalid("CHUNK_TOO_LARGE", f"chunks carry at most {CHUNK_SIZE} bytes", size=len(chunk))
        if self._written + len(chunk) > current.size:
            raise invalid(
                "FILE_SIZE_MISMATCH", f"{current.path!r} is longer than its declared {current.size} bytes",
                path=current.path, size=current.size,
            )
        self._digest.update(chunk)
        self._pending[-1].write(chunk)
        self._written += len(chunk)

    def _finish_file(self) -> None:
        current = self._current
        if current is None:
            return
        if self._written != current.size:
            raise invalid(
                "FILE_SIZE_MISMATCH", f"{current.path!r} ended after {self._written} of its {current.size} bytes",
                path=current.path, size=current.size, received=self._written,
            )
        if self._digest.hexdigest() != current.sha256:
            raise invalid(
                "FILE_DIGEST_MISMATCH", f"the bytes of {current.path!r} do not match its sha256",
                path=current.path, sha256=current.sha256, received_sha256=self._digest.hexdigest(),
            )
        self._pending[-1].seal()
        self.received[current.path] = current
        self._current = None

    def commit(self) -> Checkpoint:
        """Checks the last file, then publishes every file and records them; returns the checkpoint."""
        self._finish_file()
        files = {h.path: (h.size, h.sha256) for h in self.received.values()}

        def publish() -> None:
            for pending in self._pending:
                pending.publish()

        checkpoint = self.store.record_files(self.checkpoint_uuid, files, self.storage.uri(self.checkpoint_uuid), publish)
        self._pending = []  # published: nothing left to discard
        return checkpoint

    def discard(self) -> None:
        """Removes the temporary files that were not published."""
        for pending in self._pending:
            try:
                pending.discard()
            except OSError as error:
                log.warning("could not remove a temporary upload of %s: %s", self.checkpoint_uuid, error)


class CheckpointFiles:
    """The files of checkpoints, over the store that records them and the storage that keeps them."""

    def __init__(self, store: RegistryStore, storage: Storage) -> None:
        self.store = store
        self.storage = storage

    def begin_upload(self, checkpoint_uuid: str) -> Upload:
        checkpoint = self.store.checkpoint_for_upload(checkpoint_uuid)
        return Upload(self.store, self.storage, checkpoint.uuid, checkpoint.file_digests)

    def stored_files(self, checkpoint_uuid: str, paths: list[str]) -> tuple[str, list[FileHeader]]:
        """The canonical uuid and the headers of the named files (every stored file when none)."""
        checkpoint = self.store.get_checkpoint(checkpoint_uuid)
        return checkpoint.uuid, [
            FileHeader(path, size, sha256) for path, size, sha256 in self.store.stored_files(checkpoint, paths)
        ]

    def read(self, checkpoint_uuid: str, path: str) -> Iterator[bytes]:
        """The bytes of a stored file, in chunks of at most CHUNK_SIZE."""
        with self.storage.open(checkpoint_uuid, path) as file:
            while chunk := file.read(CHUNK_SIZE):
                yield chunk

    def delete_checkpoint(self, checkpoint_uuid: str) -> None:
        """Deletes the record, then the files: a failure in between leaves files nobody can see,
        never a record whose files are gone."""
        uuid = self.store.delete_checkpoint(checkpoint_uuid)
        try:
            self.storage.delete(uuid)
        except OSError as error:
            log.warning("checkpoint %s deleted, but not all its files: %s", uuid, error)
