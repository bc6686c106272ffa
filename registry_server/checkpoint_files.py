"""Queries and transactions of checkpoint files: which blob (by SHA-256) each path of a checkpoint
holds, and the holds uploads put on the blobs they are about to record. Knows nothing of gRPC or of
the storage; files.py ties them together."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import peewee as pw
from modelregistry.v1 import checkpoint_pb2, event_pb2

from . import validation
from .errors import Aborted, FailedPrecondition, NotFound, checkpoint_not_found, invalid
from .prepared import tuples
from .rows import CheckpointRow
from .store import RegistryStore, _checkpoint_uuid, _refuse_in_use
from .tables import BlobHold, Checkpoint, CheckpointFile, now_us

log = logging.getLogger(__name__)

BATCH = 500  # rows per INSERT, values per IN list


def _batches(values: Iterable[object]) -> Iterator[list[object]]:
    values = list(values)
    for start in range(0, len(values), BATCH):
        yield values[start : start + BATCH]


def ancestors(path: str) -> Iterator[str]:
    """"a/b/c" -> "a", "a/b": the directories a file needs."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


def path_conflict(stored: Iterable[str], new: Iterable[str]) -> str | None:
    """The first new path that would be a file where a stored one needs a directory, or the reverse."""
    files = set(stored)
    directories = {d for path in files for d in ancestors(path)}
    for path in new:
        if path in directories or any(d in files for d in ancestors(path)):
            return path
    return None


def conflict_error(path: str, stored: bool) -> Exception:
    """A path that is both a file and a directory: within one upload an invalid request; against the
    stored files a state the request cannot change (retrying will not help)."""
    message = f"{path!r} would be both a file and a directory of the checkpoint"
    if stored:
        return FailedPrecondition("FILE_PATH_CONFLICT", message + " (with a stored file)", path=path)
    return invalid("FILE_PATH_CONFLICT", message, path=path)


class CheckpointFileStore:
    """Checkpoint files in the registry's database, through the transactions of a RegistryStore."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.db = store.db

    def for_upload(self, uuid: str) -> tuple[str, dict[str, int]]:
        """The canonical uuid of a checkpoint files may be uploaded to (the files of a registered
        checkpoint stay as they were registered), and its stored files: path -> size."""
        checkpoint = self.store.get_checkpoint(uuid)
        self._must_own(checkpoint)
        _refuse_in_use(checkpoint)
        query = CheckpointFile.select(CheckpointFile.path, CheckpointFile.size).where(CheckpointFile.checkpoint == checkpoint.id)
        return checkpoint.uuid, dict(tuples(query))

    def _must_own(self, checkpoint: Checkpoint | CheckpointRow) -> None:
        """A checkpoint's files are uploaded by its owner or an admin."""
        self.store.must_own(f"upload files to checkpoint {checkpoint.uuid!r}", checkpoint, checkpoint_uuid=checkpoint.uuid)

    def hold(self, upload: str, digests: set[str]) -> None:
        """Records that `upload` is about to place and record these blobs (committed before it
        places any: see files.py, "Garbage collection")."""
        now = now_us()
        inserts = [
            BlobHold.insert_many([{"upload": upload, "sha256": d, "creation_time": now} for d in batch]).sql()
            for batch in _batches(sorted(digests))
        ]
        with self.store.tx.write():
            for sql, params in inserts:
                self.db.execute_sql(sql, params)

    def release(self, upload: str) -> None:
        """Drops the holds of an upload that will not record its files."""
        with self.db.connection_context():
            BlobHold.delete().where(BlobHold.upload == upload).execute()

    def expire_holds(self, before_us: int) -> int:
        """Drops holds older than `before_us` (their uploads died); an upload that outlived its hold
        then fails to record (UPLOAD_EXPIRED) rather than record a blob that may be gone."""
        return BlobHold.delete().where(BlobHold.creation_time < before_us).execute()

    def record(
        self, uuid: str, upload: str, files: dict[str, tuple[int, str]], held: int, storage_uri: str
    ) -> Checkpoint:
        """Records uploaded files (path -> (size, sha256)), whose blobs are in place, in one short
        transaction under the checkpoint's row lock: registration (which takes that lock too) and
        other uploads of the checkpoint come strictly before or after, and path conflicts and caps
        are checked against what is stored at that moment. `held` is the number of holds `upload`
        committed; they are dropped here. Once a checkpoint has stored files, its resources list
        exactly those; an ACTIVE checkpoint becomes COMPLETED."""
        # The statements are built first: for 10,000 files, building them in Python takes several
        # times as long as running them, and the write lock (SQLite's, for every writer) is held only
        # while they run. They name the checkpoint by id, checked under the lock to be the same row.
        checkpoint_id = self.store.get_checkpoint(uuid).id
        rows = [{"checkpoint": checkpoint_id, "path": p, "size": s, "sha256": d} for p, (s, d) in files.items()]
        upserts = [
            CheckpointFile.insert_many(batch)
            .on_conflict(
                conflict_target=[CheckpointFile.checkpoint, CheckpointFile.path],
                preserve=[CheckpointFile.size, CheckpointFile.sha256],
            )
            .sql()
            for batch in _batches(rows)
        ]
        started = time.perf_counter()
        with self.store.tx.write():
            query = Checkpoint.update(storage_uri=storage_uri).where(Checkpoint.uuid == uuid).returning(Checkpoint)
            checkpoint = next(iter(query.execute()), None)
            if checkpoint is None or checkpoint.id != checkpoint_id:
                raise checkpoint_not_found(uuid)  # deleted while its files were uploading
            self._must_own(checkpoint)
            _refuse_in_use(checkpoint)
            if held and BlobHold.delete().where(BlobHold.upload == upload).execute() != held:
                raise Aborted(
                    "UPLOAD_EXPIRED", "the upload took so long that its hold on its files expired; upload again"
                )
            stored = {
                path: (size, digest)
                for path, size, digest in tuples(
                    CheckpointFile.select(CheckpointFile.path, CheckpointFile.size, CheckpointFile.sha256)
                    .where(CheckpointFile.checkpoint == checkpoint.id)
                )
            }
            conflict = path_conflict(stored, files)
            if conflict is not None:
                raise conflict_error(conflict, stored=True)
            merged = {**stored, **files}
            validation.resource_budget(len(merged), sum(len(path.encode()) for path in merged))
            for sql, params in upserts:
                self.db.execute_sql(sql, params)
            checkpoint.resources = {path: size for path, (size, _) in sorted(merged.items())}
            if checkpoint.state == checkpoint_pb2.CHECKPOINT_STATE_ACTIVE:
                checkpoint.state = checkpoint_pb2.CHECKPOINT_STATE_COMPLETED
            Checkpoint.update(resources=checkpoint.resources, state=checkpoint.state).where(
                Checkpoint.id == checkpoint.id
            ).execute()
            self.store.tx.event(event_pb2.EVENT_KIND_CHECKPOINT_FILES_UPLOADED, checkpoint_uuid=checkpoint.uuid)
        log.debug(
            "recorded %d files of checkpoint %s in a transaction of %.1f ms",
            len(files), uuid, (time.perf_counter() - started) * 1000,
        )
        return checkpoint

    def snapshot(self, uuid: str, paths: list[str]) -> tuple[str, list[tuple[str, int, str]]]:
        """The canonical uuid and (path, size, sha256) of the named stored files, in the order given
        (every one, by path, when none are named), read in one statement: one consistent state."""
        uuid = _checkpoint_uuid(uuid)
        paths = list(dict.fromkeys(paths))
        for path in paths:
            validation.file_path(path, portable=False)
        rows = tuples(
            Checkpoint.select(CheckpointFile.path, CheckpointFile.size, CheckpointFile.sha256)
            .join(CheckpointFile, pw.JOIN.LEFT_OUTER, on=(CheckpointFile.checkpoint == Checkpoint.id))
            .where(Checkpoint.uuid == uuid)
        )
        if not rows:
            raise checkpoint_not_found(uuid)
        stored = {path: (path, size, digest) for path, size, digest in rows if path is not None}
        for path in paths:
            if path not in stored:
                raise NotFound(
                    "CHECKPOINT_FILE_NOT_FOUND",
                    f"checkpoint {uuid!r} has no stored file {path!r}",
                    checkpoint_uuid=uuid,
                    path=path,
                )
        return uuid, [stored[path] for path in (paths or sorted(stored))]

    def digest_at(self, uuid: str, path: str) -> str | None:
        """The digest a checkpoint's path holds now; None when it holds none. NotFound when the
        checkpoint is gone."""
        checkpoint = self.store.get_checkpoint(uuid)
        row = CheckpointFile.get_or_none(CheckpointFile.checkpoint == checkpoint.id, CheckpointFile.path == path)
        return row.sha256 if row is not None else None

    def files_of(self, uuid: str) -> list[tuple[str, str]]:
        """(path, sha256) of a checkpoint's stored files; none when there is no such checkpoint."""
        query = (
            CheckpointFile.select(CheckpointFile.path, CheckpointFile.sha256)
            .join(Checkpoint)
            .where(Checkpoint.uuid == uuid)
            .order_by(CheckpointFile.path)
        )
        return tuples(query)

    def referenced(self, digests: Iterable[str]) -> set[str]:
        """Which of these blobs a stored file or an upload's hold refers to, now."""
        found: set[str] = set()
        for batch in _batches(digests):
            for table in (CheckpointFile, BlobHold):
                found.update(row[0] for row in tuples(table.select(table.sha256).where(table.sha256.in_(batch)).distinct()))
        return found

    def move_storage_uri(self, uuid: str, old: str, new: str) -> None:
        """The storage_uri of a checkpoint whose files an earlier release kept under `old`."""
        Checkpoint.update(storage_uri=new).where(Checkpoint.uuid == uuid, Checkpoint.storage_uri == old).execute()
