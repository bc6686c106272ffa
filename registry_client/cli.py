"""model-registry: the command line for models, model versions and checkpoints."""

from __future__ import annotations

import argparse
import datetime
import enum
import importlib.metadata
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from .client import Registry
from .connection import default_target
from .errors import NotFoundError, RegistryError
from .objects import (
    AliasChange,
    Checkpoint,
    CheckpointState,
    Event,
    EventKind,
    Model,
    ModelOrderBy,
    ModelSortBy,
    ModelVersion,
)

# (heading, getter) per object type: `describe` shows them all, list tables the ones named below.
Fields = Sequence[tuple[str, Callable[[Any], Any]]]
MODEL_FIELDS: list[tuple[str, Callable[[Model], Any]]] = [
    ("Name", lambda m: m.name),
    ("Description", lambda m: m.description),
    ("Metadata", lambda m: m.metadata),
    ("Labels", lambda m: m.labels),
    ("Notes", lambda m: m.notes),
    ("Archived", lambda m: m.archived),
    ("Owner", lambda m: m.owner),
    ("Created", lambda m: m.creation_time),
    ("Last updated", lambda m: m.last_updated_time),
    ("Versions", lambda m: m.num_versions),
    ("Latest version", lambda m: m.latest_version or "none"),
]
MODEL_COLUMNS = ["Name", "Description", "Labels", "Archived", "Versions", "Last updated"]

VERSION_FIELDS: list[tuple[str, Callable[[ModelVersion], Any]]] = [
    ("Model", lambda v: v.model_name),
    ("Version", lambda v: v.version),
    ("Checkpoint", lambda v: v.checkpoint.uuid),
    ("Name", lambda v: v.name),
    ("Comment", lambda v: v.comment),
    ("Labels", lambda v: v.labels),
    ("Metadata", lambda v: v.metadata),
    ("Notes", lambda v: v.notes),
    ("Owner", lambda v: v.owner),
    ("Created", lambda v: v.creation_time),
    ("Last updated", lambda v: v.last_updated_time),
    ("Aliases", lambda v: v.aliases),
    ("Metrics", lambda v: v.checkpoint.metrics),
]
VERSION_COLUMNS = ["Version", "Checkpoint", "Name", "Comment", "Labels", "Aliases", "Created"]

ALIAS_CHANGE_FIELDS: list[tuple[str, Callable[[AliasChange], Any]]] = [
    ("Time", lambda c: c.time),
    ("Alias", lambda c: c.alias),
    ("From", lambda c: c.previous_version or "-"),
    ("To", lambda c: c.version or "(deleted)"),
    ("Principal", lambda c: c.principal),
]
EVENT_FIELDS: list[tuple[str, Callable[[Event], Any]]] = [
    ("Sequence", lambda e: e.sequence),
    ("Time", lambda e: e.time),
    ("Kind", lambda e: e.kind),
    ("Model", lambda e: e.model_name + (f" -> {e.new_model_name}" if e.new_model_name else "")),
    ("Version", lambda e: e.version or ""),
    ("Alias", lambda e: e.alias),
    ("Checkpoint", lambda e: e.checkpoint_uuid),
    ("Principal", lambda e: e.principal),
]

CHECKPOINT_FIELDS: list[tuple[str, Callable[[Checkpoint], Any]]] = [
    ("UUID", lambda c: c.uuid),
    ("Experiment", lambda c: c.experiment_id),
    ("Trial", lambda c: c.trial_id),
    ("Batch", lambda c: c.batch_number),
    ("State", lambda c: c.state),
    ("Framework", lambda c: c.framework),
    ("Format", lambda c: c.format),
    ("Metrics", lambda c: c.metrics),
    ("Hparams", lambda c: c.hparams),
    ("Metadata", lambda c: c.metadata),
    ("Experiment config", lambda c: c.experiment_config),
    ("Resources", lambda c: c.resources),
    ("Storage URI", lambda c: c.storage_uri),
    ("Reported", lambda c: c.report_time),
]
CHECKPOINT_COLUMNS = ["UUID", "Experiment", "Trial", "Batch", "State", "Metrics", "Reported"]


def escape(text: str) -> str:
    """text with every character that is not printable escaped as in Python (\\x1b, \\u202e, \\n): C0
    and C1 controls, DEL, bidi and other format controls, line separators. Stored text comes from other
    people, and an escape sequence printed raw could rewrite the terminal or disguise what it shows."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _text(value: Any) -> str:
    """Render one value for a human: dicts as compact JSON, lists comma-separated, times in UTC; escaped."""
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")) if value else ""  # ASCII: escapes everything else
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return escape(str(value))


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None) -> None:
    """Print rows as left-aligned columns, under headers when given."""
    lines = [[_text(cell) for cell in row] for row in rows]
    if headers:
        lines.insert(0, list(headers))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip())


def _print_list(objects: Sequence[Any], fields: Fields, columns: list[str]) -> None:
    getters = [dict(fields)[heading] for heading in columns]
    print_table([[get(o) for get in getters] for o in objects], columns)


def _print_object(obj: Any, fields: Fields) -> None:
    print_table([(f"{heading}:", get(obj)) for heading, get in fields])


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _show(args: argparse.Namespace, obj: Any, fields: Fields) -> None:
    if args.json:
        _print_json(obj.to_dict())
    else:
        _print_object(obj, fields)


def _show_list(
    args: argparse.Namespace, objects: Sequence[Any], fields: Fields, columns: list[str]
) -> None:
    if args.json:
        _print_json([o.to_dict() for o in objects])
    else:
        _print_list(objects, fields, columns)


def _done(args: argparse.Namespace, message: str) -> None:
    # Scripts get valid (empty) JSON to parse even from commands that return nothing.
    print("{}" if args.json else message)


# Commands: each takes the connected Registry and the parsed arguments.


def model_create(r: Registry, args: argparse.Namespace) -> None:
    model = r.create_model(args.name, args.description, args.metadata, args.label, args.notes)
    _show(args, model, MODEL_FIELDS)


def model_list(r: Registry, args: argparse.Namespace) -> None:
    models = r.get_models(
        sort_by=args.sort_by,
        order_by=args.order_by,
        name=args.name,
        description=args.description,
        labels=args.label,
        archived=args.archived,
        owner=args.owner,
    )
    _show_list(args, models, MODEL_FIELDS, MODEL_COLUMNS)


def model_describe(r: Registry, args: argparse.Namespace) -> None:
    model = r.get_model(args.name)
    version = model.get_version()
    if args.json:
        _print_json({"model": model.to_dict(), "model_version": version.to_dict() if version else None})
        return
    _print_object(model, MODEL_FIELDS)
    print()
    if version is None:
        print(f"Model {model.name} has no versions.")
    else:
        print(f"Latest version ({version.version}):")
        _print_object(version, VERSION_FIELDS)


def model_update(r: Registry, args: argparse.Namespace) -> None:
    model = r.get_model(args.name).update(description=args.description, labels=_labels(args), notes=args.notes)
    _show(args, model, MODEL_FIELDS)


def _labels(args: argparse.Namespace) -> list[str] | None:
    """The labels an update sets: those of --label, none with --no-labels, else unchanged (None)."""
    return [] if args.no_labels else args.label


def model_version_describe(r: Registry, args: argparse.Namespace) -> None:
    version = r.get_version(args.name, args.version, args.alias)
    if version is None:
        raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"model {args.name} has no versions", "MODEL_VERSION_NOT_FOUND")
    _show(args, version, VERSION_FIELDS)


def _version(r: Registry, args: argparse.Namespace) -> ModelVersion:
    version = r.get_version(args.name, args.version)
    assert version is not None  # a version number was given: a missing one raised NotFoundError
    return version


def model_version_update(r: Registry, args: argparse.Namespace) -> None:
    version = _version(r, args).update(
        name=args.version_name, comment=args.comment, labels=_labels(args), metadata=args.metadata, notes=args.notes
    )
    _show(args, version, VERSION_FIELDS)


def model_version_delete(r: Registry, args: argparse.Namespace) -> None:
    _version(r, args).delete()
    _done(args, f"Deleted version {args.version} of model {args.name}.")


def model_register(r: Registry, args: argparse.Namespace) -> None:
    version = r.get_model(args.name).register_version(
        args.checkpoint_uuid, args.version_name, args.comment, args.label, args.metadata, args.notes, aliases=args.alias
    )
    _show(args, version, VERSION_FIELDS)


def model_alias_set(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_model(args.name).set_alias(args.alias, args.version), VERSION_FIELDS)


def model_alias_delete(r: Registry, args: argparse.Namespace) -> None:
    r.get_model(args.name).delete_alias(args.alias)
    _done(args, f"Deleted alias {args.alias} of model {args.name}.")


def model_alias_history(r: Registry, args: argparse.Namespace) -> None:
    changes = r.get_model(args.name).get_alias_history(args.alias)
    _show_list(args, changes, ALIAS_CHANGE_FIELDS, [heading for heading, _ in ALIAS_CHANGE_FIELDS])


# Events are printed as they come, so their columns have fixed widths (the widest kind, a uuid...).
EVENT_WIDTHS = [8, 25, max(len(k.name) for k in EventKind), 20, 7, 16, 36, 0]


def registry_watch(r: Registry, args: argparse.Namespace) -> None:
    """One line per event as it happens (JSON Lines with --json), until --limit events, the end of the
    history (--no-follow) or Ctrl-C."""
    events = r.watch(args.model, args.kind, args.after, follow=not args.no_follow, reconnect=not args.no_reconnect)

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, EVENT_WIDTHS, strict=False)).rstrip()

    if not args.json:
        print(line([heading for heading, _ in EVENT_FIELDS]), flush=True)
    try:
        for count, event in enumerate(events, start=1):
            if args.json:
                print(json.dumps(event.to_dict()), flush=True)
            else:
                print(line([_text(get(event)) for _, get in EVENT_FIELDS]), flush=True)
            if args.limit and count >= args.limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        events.close()


def model_list_versions(r: Registry, args: argparse.Namespace) -> None:
    _show_list(args, r.get_model(args.name).get_versions(), VERSION_FIELDS, VERSION_COLUMNS)


def model_archive(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_model(args.name).archive(), MODEL_FIELDS)


def model_unarchive(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_model(args.name).unarchive(), MODEL_FIELDS)


def model_delete(r: Registry, args: argparse.Namespace) -> None:
    r.delete_model(args.name)
    _done(args, f"Deleted model {args.name}.")


def model_add_metadata(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_model(args.name).add_metadata(args.metadata), MODEL_FIELDS)


def model_remove_metadata(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_model(args.name).remove_metadata(args.keys), MODEL_FIELDS)


def model_rename(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_model(args.name).rename(args.new_name), MODEL_FIELDS)


def model_labels(r: Registry, args: argparse.Namespace) -> None:
    labels = r.get_model_labels()
    if args.json:
        _print_json(labels)
    else:
        for label in labels:
            print(escape(label))


def _checkpoint_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint fields given by the options of _add_checkpoint_field_options."""
    return dict(
        uuid=args.uuid,
        experiment_id=args.experiment_id,
        trial_id=args.trial_id,
        batch_number=args.batch_number,
        experiment_config=args.experiment_config,
        hparams=args.hparams,
        metadata=args.metadata,
        framework=args.framework,
        format=args.format,
        metrics=args.metrics,
        **({"state": args.state} if args.state else {}),
    )


def checkpoint_create(r: Registry, args: argparse.Namespace) -> None:
    checkpoint = r.create_checkpoint(
        resources=args.resources, storage_uri=args.storage_uri, **_checkpoint_fields(args)
    )
    _show(args, checkpoint, CHECKPOINT_FIELDS)


class _ProgressBar:
    """A progress callback drawing a tqdm bar (bytes, rate, time left) on stderr when it is a
    terminal, and nothing otherwise (stdout, tables or JSON, stays clean either way)."""

    def __init__(self, description: str) -> None:
        self.enabled = sys.stderr.isatty()
        self.description = description
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=self.description, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
            )
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()


def checkpoint_upload(r: Registry, args: argparse.Namespace) -> None:
    with _ProgressBar("upload") as progress:
        checkpoint = r.upload_checkpoint(args.directory, progress=progress, **_checkpoint_fields(args))
    _show(args, checkpoint, CHECKPOINT_FIELDS)


def checkpoint_download(r: Registry, args: argparse.Namespace) -> None:
    with _ProgressBar("download") as progress:
        directory = r.download_checkpoint(args.uuid, args.directory, args.path, progress=progress)
    if args.json:
        _print_json({"uuid": args.uuid, "directory": str(directory)})
    else:
        print(directory)


INFO_FIELDS: Fields = [
    ("Server version", lambda i: i.version),
    ("Client version", lambda i: _version_of_package()),
    ("Database", lambda i: i.database_kind),
    ("Schema version", lambda i: f"{i.schema_version} ({i.schema_migration})"),
    ("Started", lambda i: i.start_time.isoformat(timespec="seconds")),
    ("Uptime", lambda i: f"{i.uptime_seconds:.0f} s"),
    ("Process id", lambda i: i.pid),
    ("Caller", lambda i: i.caller or "(no tokens: everyone may do everything)"),
    ("Role", lambda i: i.caller_role),
]


def registry_info(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.server_info(), INFO_FIELDS)


def checkpoint_describe(r: Registry, args: argparse.Namespace) -> None:
    _show(args, r.get_checkpoint(args.uuid), CHECKPOINT_FIELDS)


def checkpoint_list(r: Registry, args: argparse.Namespace) -> None:
    checkpoints = r.get_checkpoints(
        experiment_id=args.experiment_id,
        trial_id=args.trial_id,
        sort_by_metric=args.sort_by_metric,
        smaller_is_better=args.smaller_is_better,
    )
    _show_list(args, checkpoints, CHECKPOINT_FIELDS, CHECKPOINT_COLUMNS)


def checkpoint_delete(r: Registry, args: argparse.Namespace) -> None:
    r.delete_checkpoint(args.uuid)
    _done(args, f"Deleted checkpoint {args.uuid}.")


# Argument parsing


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({err.msg} at column {err.colno}): {text!r}"
        ) from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object like {{"key": "value"}}, got {text!r}')
    return value


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def json_sizes(text: str) -> dict[str, int]:
    """argparse type: a JSON object mapping file paths to sizes in bytes."""
    value = json_object(text)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of path -> size in bytes, got {text!r}")
    return value


# Options passed on to Registry() as they are.
CONNECTION_OPTIONS = ("token", "tls", "tls_ca", "tls_cert", "tls_key")


def _global_options() -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand.

    SUPPRESS keeps a subcommand's parser from resetting a value already given before it.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--target", default=argparse.SUPPRESS, help="server host:port "
                        "(default: $MODEL_REGISTRY_TARGET, else localhost:50051)")
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts instead of tables")
    parent.add_argument("--timeout", type=seconds, default=argparse.SUPPRESS,
                        help="seconds to wait for each call (default: 30)")
    parent.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token (default: $MODEL_REGISTRY_TOKEN; prefer it: arguments show in `ps`)")
    parent.add_argument("--tls", action="store_true", default=argparse.SUPPRESS,
                        help="connect with TLS, trusting the system's root certificates")
    parent.add_argument("--tls-ca", metavar="PEM", default=argparse.SUPPRESS,
                        help="connect with TLS, trusting the CA in this file")
    parent.add_argument("--tls-cert", metavar="PEM", default=argparse.SUPPRESS,
                        help="client certificate for mutual TLS (with --tls-key)")
    parent.add_argument("--tls-key", metavar="PEM", default=argparse.SUPPRESS,
                        help="private key of --tls-cert")
    return parent


def _add_checkpoint_field_options(p: argparse.ArgumentParser, state_help: str = "default: completed") -> None:
    p.add_argument("--uuid", help="generated by the server when omitted")
    p.add_argument("--experiment-id", type=int, default=0)
    p.add_argument("--trial-id", type=int, default=0)
    p.add_argument("--batch-number", type=int, default=0)
    p.add_argument("--framework", default="")
    p.add_argument("--format", default="")
    for option in ("--metrics", "--hparams", "--metadata", "--experiment-config"):
        p.add_argument(option, type=json_object, metavar="JSON")
    p.add_argument("--state", type=str.lower, help=state_help,
                   choices=[s.name.lower() for s in CheckpointState if s != CheckpointState.UNSPECIFIED])


def _add_label_options(p: argparse.ArgumentParser) -> None:
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--label", action="append", help="the new labels, replacing the old; repeatable")
    labels.add_argument("--no-labels", action="store_true", help="remove every label")


def _version_of_package() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    try:
        return importlib.metadata.version("model-registry")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser."""
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="model-registry", description="Manage models, model versions and checkpoints.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version_of_package()}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{model,checkpoint,info,watch}")

    def command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Callable[..., Any],
                help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    models = groups.add_parser("model", help="models and their versions").add_subparsers(
        dest="command", required=True
    )
    p = command(models, "create", model_create, "Create a model with no versions.")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--metadata", type=json_object, metavar="JSON")
    p.add_argument("--label", action="append", default=[], help="repeat for several labels")
    p.add_argument("--notes", default="")

    p = command(models, "list", model_list, "List models.")
    p.add_argument("--sort-by", choices=[s.name.lower() for s in ModelSortBy])
    p.add_argument("--order-by", choices=[o.name.lower() for o in ModelOrderBy])
    p.add_argument("--name", default="", help="only names containing this (ignoring case)")
    p.add_argument("--description", default="", help="only descriptions containing this (ignoring case)")
    p.add_argument("--label", action="append", default=[], help="only models with this label; repeatable")
    archived = p.add_mutually_exclusive_group()
    archived.add_argument("--archived", dest="archived", action="store_const", const=True, default=None)
    archived.add_argument("--unarchived", dest="archived", action="store_const", const=False)
    p.add_argument("--owner", default="")

    p = command(models, "describe", model_describe,
                "Show a model and its latest version (another version: model version describe).")
    p.add_argument("name")

    p = command(models, "update", model_update, "Replace a model's description, labels or notes (those given).")
    p.add_argument("name")
    p.add_argument("--description")
    _add_label_options(p)
    p.add_argument("--notes")

    versions = models.add_parser("version", help="show, edit or delete one version of a model").add_subparsers(
        dest="version_command", required=True
    )
    p = command(versions, "describe", model_version_describe,
                "Show one version: VERSION, the one --alias points at, or the latest.")
    p.add_argument("name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("version", nargs="?", type=int, help="version number (default: the latest)")
    which.add_argument("--alias", help="the version this alias points at, e.g. production")
    p = command(versions, "update", model_version_update,
                "Replace a version's name, comment, labels, metadata or notes (those given).")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--name", dest="version_name", help="name of the version")
    p.add_argument("--comment")
    _add_label_options(p)
    p.add_argument("--metadata", type=json_object, metavar="JSON", help="replaces the whole metadata")
    p.add_argument("--notes")
    p = command(versions, "delete", model_version_delete, "Delete a version (its number is never reused).")
    p.add_argument("name")
    p.add_argument("version", type=int)

    p = command(models, "register", model_register, "Register a checkpoint as the model's next version.")
    p.add_argument("name")
    p.add_argument("checkpoint_uuid")
    p.add_argument("--name", dest="version_name", default="", help="name of the version")
    p.add_argument("--comment", default="")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--metadata", type=json_object, metavar="JSON")
    p.add_argument("--notes", default="")
    p.add_argument("--alias", action="append", default=[],
                   help="point this alias at the new version in the same step; repeatable")

    aliases = models.add_parser("alias", help="aliases naming a model's versions, e.g. production").add_subparsers(
        dest="alias_command", required=True
    )
    p = command(aliases, "set", model_alias_set, "Point an alias at a version (creating or moving it).")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    p = command(aliases, "delete", model_alias_delete, "Remove an alias (its history stays).")
    p.add_argument("name")
    p.add_argument("alias")
    p = command(aliases, "history", model_alias_history, "Show every move of a model's aliases, oldest first.")
    p.add_argument("name")
    p.add_argument("--alias", help="only this alias")

    p = command(models, "list-versions", model_list_versions, "List a model's versions, newest first.")
    p.add_argument("name")
    for name, handler, help_text in [
        ("archive", model_archive, "Archive a model: it refuses new versions and edits."),
        ("unarchive", model_unarchive, "Unarchive a model."),
        ("delete", model_delete, "Delete a model and all its versions (checkpoints stay)."),
    ]:
        command(models, name, handler, help_text).add_argument("name")

    p = command(models, "add-metadata", model_add_metadata, "Merge top-level keys into a model's metadata.")
    p.add_argument("name")
    p.add_argument("metadata", type=json_object, metavar="JSON")

    p = command(models, "remove-metadata", model_remove_metadata, "Remove top-level metadata keys.")
    p.add_argument("name")
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = command(models, "rename", model_rename, "Rename a model; its versions follow.")
    p.add_argument("name")
    p.add_argument("new_name")

    command(models, "labels", model_labels, "List every label in use, most used first.")

    checkpoints = groups.add_parser("checkpoint", help="checkpoints").add_subparsers(
        dest="command", required=True
    )
    p = command(checkpoints, "create", checkpoint_create, "Record a checkpoint.")
    _add_checkpoint_field_options(p)
    p.add_argument(
        "--resources", type=json_sizes, metavar="JSON", help='path -> bytes, e.g. {"model.h5": 1024}'
    )
    p.add_argument("--storage-uri", default="")

    p = command(
        checkpoints, "upload", checkpoint_upload,
        "Create a checkpoint and upload every file under DIR (progress on a terminal).",
    )
    p.add_argument("directory", metavar="DIR")
    _add_checkpoint_field_options(p, state_help="default: active, completed once the files are stored")

    p = command(
        checkpoints, "download", checkpoint_download,
        "Download a checkpoint's files into DIR, checking every SHA-256 (progress on a terminal).",
    )
    p.add_argument("uuid")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--path", action="append", default=[], help="only this file of the checkpoint; repeatable")

    p = command(checkpoints, "describe", checkpoint_describe, "Show one checkpoint.")
    p.add_argument("uuid")

    p = command(checkpoints, "list", checkpoint_list, "List checkpoints, optionally best first by a metric.")
    p.add_argument("--experiment-id", type=int)
    p.add_argument("--trial-id", type=int)
    p.add_argument("--sort-by-metric", default="", metavar="KEY")
    p.add_argument("--smaller-is-better", action="store_true")

    p = command(checkpoints, "delete", checkpoint_delete, "Delete a checkpoint not used by any version.")
    p.add_argument("uuid")

    command(groups, "info", registry_info, "Show the server's version, database, schema version and uptime.")

    p = command(groups, "watch", registry_watch, "Print the registry's events as they happen, oldest first.")
    p.add_argument("--model", action="append", default=[], help="only events of this model; repeatable")
    p.add_argument("--kind", action="append", default=[], type=str.lower, choices=[k.name.lower() for k in EventKind],
                   help="only events of this kind; repeatable")
    p.add_argument("--after", type=int, default=0, metavar="SEQUENCE",
                   help="start after this event's sequence number (default 0: the whole history)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many events (default: never)")
    p.add_argument("--no-follow", action="store_true",
                   help="stop at the end of the stored history instead of waiting for new events")
    p.add_argument("--no-reconnect", action="store_true", help="exit with an error when the stream is lost")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit status 0 on success, 1 on a registry error, 2 on bad usage."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # argparse exits on --help (0) and on bad arguments (2); callers of main() get the status.
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    args.json = getattr(args, "json", False)
    target = getattr(args, "target", None) or default_target()
    try:
        connection = {key: getattr(args, key) for key in CONNECTION_OPTIONS if hasattr(args, key)}
        with Registry(target, timeout=getattr(args, "timeout", 30.0), **connection) as registry:
            registry.check_connection()  # one clear line at once when the server cannot be reached
            args.handler(registry, args)
    except (RegistryError, OSError) as err:
        print(f"error: {escape(str(err))}", file=sys.stderr)
        return 1
    except (TypeError, ValueError) as err:
        # e.g. a JSON value the protobuf Struct cannot hold, or a number out of range.
        print(f"error: {escape(str(err))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
