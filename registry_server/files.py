"""Checkpoint files: an upload is checked file by file, its blobs are placed, then recorded all at
once; downloads stream a snapshot of the records from the blobs they name; what nothing references is
collected. Ties what the database records (checkpoint_files.py) to what the storage keeps (storage.py).

How an upload lands, and why a crash or a race never changes what a reader sees:
1. Each file streams to a temporary file while its digest is computed, and is checked (size, digest)
   when the next header or the end of the stream arrives, then made durable.
2. The upload commits holds on the blobs it will record (`blob_hold`), in a transaction of its own.
3. It places every file at its blob's name (`Storage.place`), outside any transaction: the per-file
   filesystem work holds no lock. A blob's bytes never change, so placing one that a reader is
   reading changes nothing for the reader, and a crash here leaves blobs nothing records (garbage).
4. One short transaction under the checkpoint's row lock records every file, drops the holds and
   appends the event; it re-checks what may have changed since the upload began (the checkpoint is
   still there and unregistered, paths do not conflict with what is stored, the caps). It commits
   all of the upload or none of it.
A download reads the records once (one statement) and then opens blobs by digest, so a concurrent
re-upload, which only adds blobs and moves records, never changes what it streams.

Garbage collection: a blob is deleted only by `_collect`, in three steps: (G1) move it to a trash name,
(G2) ask the database whether a stored file or a hold refers to its digest, (G3) move it back if so,
else delete the trashed copy. The upload steps that matter are (U2) commit the holds, (U3) place, (U4)
record. Claim: no recorded blob is ever deleted. G3 deletes only when G2 saw neither a record nor a
hold. An upload's digest has a hold from U2 until U4 replaces it by a record in one commit, so a G2
that saw neither ran before that upload's U2, hence before its U3; and G1 came before G2. So the
copy G3 deletes was moved aside before U3, and U3 (an atomic rename, or an existence check then a
copy) puts the blob at its name again: the recorded blob is there. A collector that moves a blob
aside after U3 has its G2 after U2, which sees the hold or the record, and moves it back.
Interleavings with a crash: a collector that dies between G1 and G3 leaves a trash entry, which
readers fall back to (`_open`) and the next sweep settles with G2/G3; an upload that dies after U2
leaves holds, which expire (HOLD_TTL_S) and, if they expired while it was in fact alive, make U4
refuse (UPLOAD_EXPIRED) instead of recording a blob that may be gone. Two collectors settling one trash
entry both decide by G2, and by the argument above either decision is safe.
A blob unreferenced since a re-upload may still be wanted by a download that read the old records a
moment before: a periodic sweep deletes only blobs it also found unreferenced one sweep earlier.
DeleteCheckpoint collects the checkpoint's blobs at once (a download of the deleted checkpoint then
ends NOT_FOUND).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from . import metrics, tracing, validation
from .checkpoint_files import CheckpointFileStore, ancestors, conflict_error
from .errors import Aborted, DataLoss, ResourceExhausted, invalid
from .storage import PendingFile, Storage, is_digest
from .store import RegistryStore
from .tables import Checkpoint, now_us

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024  # the most bytes one message of a transfer carries
DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024**3  # bytes of the files of one upload call
STALE_UPLOAD_AGE_S = 3600.0  # temporary files of an upload idle this long are removed
HOLD_TTL_S = 24 * 3600.0  # holds older than this belong to uploads that died


@dataclass(frozen=True)
class FileHeader:
    """One file as it travels: path in the checkpoint, size in bytes, SHA-256 as lower-case hex."""

    path: str
    size: int
    sha256: str


class Upload:
    """One upload call; see the module's docstring. Until `commit` nothing is visible, and `discard`
    removes what was written."""

    def __init__(self, files: CheckpointFiles, checkpoint_uuid: str, stored: dict[str, int]) -> None:
        self.files = files
        self.checkpoint_uuid = checkpoint_uuid
        self.id = uuidlib.uuid4().hex
        self.received: dict[str, FileHeader] = {}
        self._stored = set(stored)
        self._stored_directories = {d for path in stored for d in ancestors(path)}
        self._directories: set[str] = set()  # of the received files
        self._paths = set(stored)  # stored and received: what the checkpoint will hold
        self._path_bytes = sum(len(path.encode()) for path in stored)
        self._declared = 0
        self._pending: list[tuple[PendingFile, FileHeader]] = []
        self._current: FileHeader | None = None
        self._written = 0
        self._digest = hashlib.sha256()
        self._held = False
        self._counted = True  # in the uploads in progress, until discard
        metrics.upload_started()

    def start_file(self, path: str, size: int, sha256: str) -> None:
        self._finish_file()
        validation.file_path(path)
        if path in self.received:
            raise invalid("DUPLICATE_FILE_PATH", f"file {path!r} was sent twice in this upload", path=path)
        if path in self._stored_directories or any(d in self._stored for d in ancestors(path)):
            raise conflict_error(path, stored=True)
        if path in self._directories or any(d in self.received for d in ancestors(path)):
            raise conflict_error(path, stored=False)
        if size < 0:
            raise invalid("INVALID_FILE_SIZE", "file size must not be negative", path=path, size=size)
        if not is_digest(sha256):
            raise invalid("INVALID_FILE_DIGEST", "sha256 must be 64 lower-case hexadecimal digits", path=path)
        self._declared += size
        if self._declared > self.files.max_upload_bytes:
            raise ResourceExhausted(
                "UPLOAD_TOO_LARGE",
                f"one upload carries at most {self.files.max_upload_bytes} bytes (the server's --max-upload-bytes)",
                path=path,
                limit=self.files.max_upload_bytes,
            )
        if path not in self._paths:
            self._paths.add(path)
            self._path_bytes += len(path.encode())
        validation.resource_budget(len(self._paths), self._path_bytes)
        self._directories.update(ancestors(path))
        self._current = FileHeader(path, size, sha256)
        self._pending.append((self.files.storage.create(self.id), self._current))
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
        self._pending[-1][0].write(chunk)
        self._written += len(chunk)
        metrics.bytes_uploaded(len(chunk))

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
        self._pending[-1][0].seal()
        self.received[current.path] = current
        self._current = None

    def commit(self) -> Checkpoint:
        """Checks the last file, then holds, places and records every file (steps 2-4 of the
        module's docstring); returns the checkpoint."""
        self._finish_file()
        store = self.files.files_store
        files = {h.path: (h.size, h.sha256) for h in self.received.values()}
        digests = {h.sha256 for h in self.received.values()}
        if digests:
            store.hold(self.id, digests)
            self._held = True
        try:
            with tracing.span("storage.place", files=len(self._pending)):
                self.files.storage.place([(pending, header.sha256) for pending, header in self._pending])
        except FileNotFoundError:
            raise Aborted(
                "UPLOAD_EXPIRED", "the upload's temporary files were removed as stale (idle for too long); upload again"
            ) from None
        self._pending = []  # placed: no temporary file is left to discard
        checkpoint = store.record(self.checkpoint_uuid, self.id, files, len(digests), self.files.storage.uri())
        self._held = False
        return checkpoint

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def discard(self) -> None:
        """Removes the temporary files (all of them, if the upload failed), and drops its holds.
        Always called at the end of an upload (`with begin_upload(...) as upload:` does it)."""
        if self._counted:
            self._counted = False
            metrics.upload_ended()
        try:
            for pending, _ in self._pending:
                pending.discard()
            self.files.storage.remove_upload(self.id)
        except OSError as error:
            log.warning("could not remove the temporary files of an upload to %s (they are swept later): %s", self.checkpoint_uuid, error)
        if self._held:
            try:
                self.files.files_store.release(self.id)
            except Exception as error:  # a database fault: the holds expire by themselves
                log.warning("could not drop the holds of a failed upload to %s: %s", self.checkpoint_uuid, error)


class CheckpointFiles:
    """The files of checkpoints, over the database that records them and the storage that keeps them."""

    def __init__(self, store: RegistryStore, storage: Storage, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        self.store = store
        self.files_store = CheckpointFileStore(store)
        self.storage = storage
        self.max_upload_bytes = max_upload_bytes
        self._unreferenced: set[str] = set()  # blobs the last sweep found unreferenced

    def begin_upload(self, checkpoint_uuid: str) -> Upload:
        uuid, stored = self.files_store.for_upload(checkpoint_uuid)
        return Upload(self, uuid, stored)

    def stored_files(self, checkpoint_uuid: str, paths: list[str]) -> tuple[str, list[FileHeader]]:
        """The canonical uuid and the headers of the named files (every stored file when none): a
        snapshot, which `read` streams whatever happens to the checkpoint meanwhile."""
        uuid, rows = self.files_store.snapshot(checkpoint_uuid, paths)
        return uuid, [FileHeader(*row) for row in rows]

    def read(self, checkpoint_uuid: str, header: FileHeader) -> Iterator[bytes]:
        """The bytes of a file of a snapshot, in chunks of at most CHUNK_SIZE."""
        with tracing.span("storage.open"):
            file = self._open(header.sha256)
        if file is None:
            raise self._missing(checkpoint_uuid, header)
        with file:
            while chunk := file.read(CHUNK_SIZE):
                metrics.bytes_downloaded(len(chunk))
                yield chunk

    def _open(self, digest: str) -> BinaryIO | None:
        """The blob, else the copy a collector set aside (and may be putting back just now)."""
        for attempt in (self.storage.open, self.storage.open_trashed, self.storage.open):
            try:
                file = attempt(digest)
            except (FileNotFoundError, ValueError):  # ValueError: not a digest (a damaged record)
                continue
            if file is not None:
                return file
        return None

    def _missing(self, checkpoint_uuid: str, header: FileHeader) -> Exception:
        """Why a blob of a snapshot is gone: the checkpoint was deleted (NOT_FOUND, raised by the
        lookup) or the file replaced since the snapshot (ABORTED, download again), else its bytes are
        lost (DATA_LOSS: retrying will not help)."""
        with self.store.db.connection_context():
            digest = self.files_store.digest_at(checkpoint_uuid, header.path)
        if digest != header.sha256:
            return Aborted(
                "CHECKPOINT_FILES_CHANGED",
                f"{header.path!r} of checkpoint {checkpoint_uuid} was replaced during the download; download again",
                checkpoint_uuid=checkpoint_uuid,
                path=header.path,
            )
        return DataLoss(
            "CHECKPOINT_FILE_MISSING",
            f"the bytes of {header.path!r} of checkpoint {checkpoint_uuid} are missing from the registry's storage",
            checkpoint_uuid=checkpoint_uuid,
            path=header.path,
            sha256=header.sha256,
        )

    def delete_checkpoint(self, checkpoint_uuid: str) -> None:
        """Deletes the record, then the blobs nothing else refers to: a failure in between leaves
        blobs nobody sees (collected by a later sweep), never a record whose files are gone."""
        uuid = self.store.get_checkpoint(checkpoint_uuid).uuid
        digests = {digest for _, digest in self.files_store.files_of(uuid)}
        self.store.delete_checkpoint(uuid)
        try:
            self._collect(digests)
        except OSError as error:
            log.warning("checkpoint %s deleted, but not all its files: %s", uuid, error)

    def _collect(self, digests: Iterable[str]) -> int:
        """Deletes the blobs of `digests` that nothing refers to (G1-G3 of the module's docstring);
        returns how many went."""
        digests = set(digests)
        trashed = {}
        try:
            for digest in sorted(digests - self.files_store.referenced(digests)):
                name = self.storage.move_to_trash(digest)
                if name is not None:
                    trashed[name] = digest
        finally:
            deleted = self._settle(trashed)  # what was moved aside, also when moving the rest failed
        return deleted

    def _settle(self, trashed: dict[str, str]) -> int:
        """G2 and G3 for trash entries (name -> digest): back to their names if referenced, else gone."""
        live = self.files_store.referenced(set(trashed.values()))
        for name, digest in trashed.items():
            if digest in live:
                self.storage.restore(name)
            else:
                self.storage.delete_trashed(name)
        return sum(digest not in live for digest in trashed.values())

    def sweep(self, *, collect: bool = True) -> dict[str, int]:
        """Storage upkeep, at start-up (`collect` False) and periodically: removes the temporary files
        of dead uploads and their expired holds, settles what a collector left in the trash, adopts an
        earlier release's files, and (with `collect`) deletes blobs unreferenced at this sweep and the
        one before. A storage failure skips one step, not the others. Returns counts, for the log."""
        steps = {
            "stale uploads": lambda: self.storage.sweep_uploads(time.time() - STALE_UPLOAD_AGE_S),
            "expired holds": lambda: self.files_store.expire_holds(now_us() - int(HOLD_TTL_S * 1e6)),
            "trash entries settled": self._settle_trash,
            "adopted": self.adopt_legacy_files,
        }
        if collect:
            steps["collected"] = self._collect_garbage
        done = {}
        for name, step in steps.items():
            try:
                done[name] = step()
            except OSError as error:
                log.warning("storage sweep: %s failed (tried again at the next sweep): %s", name, error)
        return done

    def _settle_trash(self) -> int:
        """Settles the trash entries a collector left (it died, or is at work in another server)."""
        trashed = {name: name.split(".", 1)[0] for name in self.storage.trashed()}
        self._settle(trashed)
        return len(trashed)

    def _collect_garbage(self) -> int:
        """Deletes the blobs nothing has referred to at this sweep and the one before."""
        unreferenced: set[str] = set()
        for batch in self.storage.blobs():
            unreferenced.update(set(batch) - self.files_store.referenced(batch))
        doomed = unreferenced & self._unreferenced
        self._unreferenced = unreferenced - doomed
        return self._collect(doomed)

    def adopt_legacy_files(self) -> int:
        """Moves the files an earlier release kept at <root>/<uuid>/<path> into blobs, once their
        bytes match their records; idempotent, and safe when several servers do it at once. A file
        that does not match (bytes of an upload a crash interrupted) is dropped, with a warning:
        downloading it fails DATA_LOSS, as its record's bytes are gone. Returns the directories done."""
        directories = self.storage.legacy_checkpoints()
        for uuid in directories:
            for path, digest in self.files_store.files_of(uuid):
                if not self.storage.adopt(uuid, path, digest):
                    log.warning(
                        "checkpoint %s: the stored bytes of %r are missing or do not match their record "
                        "(an upload interrupted by a crash of an earlier release); downloading it fails DATA_LOSS",
                        uuid, path,
                    )
            root = self.storage.uri()
            self.files_store.move_storage_uri(uuid, f"{root}/{uuid}", root)
            self.storage.remove_legacy(uuid)
        if directories:
            log.info("adopted the files of %d checkpoints into content-addressed storage", len(directories))
        return len(directories)
