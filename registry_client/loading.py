"""Loading a downloaded checkpoint into the framework that wrote it. The frameworks are optional: each
is imported only when a checkpoint needs it, and its absence is reported by the package to install."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# Module -> what to `pip install` for it, where the names differ.
PIP_NAMES = {"sklearn": "scikit-learn", "tensorflow": "tensorflow", "torch": "torch", "onnx": "onnx"}


def _module(name: str, file: Path) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise _missing(name, file) from None


def _missing(module: str, file: Path) -> ModuleNotFoundError:
    package = PIP_NAMES.get(module, module)
    return ModuleNotFoundError(
        f"loading {file.name} needs the {package!r} package, which is not installed: pip install {package}",
        name=module,
    )


def _torch(file: Path) -> Any:
    # weights_only: tensors and plain containers only, never arbitrary code from the file.
    return _module("torch", file).load(file, weights_only=True, map_location="cpu")


def _pickle(file: Path) -> Any:
    try:
        with open(file, "rb") as stream:
            return pickle.load(stream)
    except ModuleNotFoundError as error:
        # e.g. a scikit-learn model unpickled without scikit-learn installed.
        raise _missing((error.name or "").split(".")[0], file) from error


def _joblib(file: Path) -> Any:
    joblib = _module("joblib", file)
    try:
        return joblib.load(file)
    except ModuleNotFoundError as error:
        raise _missing((error.name or "").split(".")[0], file) from error


def _keras(file: Path) -> Any:
    return _module("tensorflow", file).keras.models.load_model(file)


def _saved_model(file: Path) -> Any:
    return _module("tensorflow", file).saved_model.load(str(file.parent))


def _onnx(file: Path) -> Any:
    return _module("onnx", file).load(str(file))


LOADERS: dict[str, Callable[[Path], Any]] = {
    ".pt": _torch,
    ".pth": _torch,
    ".joblib": _joblib,
    ".pkl": _pickle,
    ".pickle": _pickle,
    ".keras": _keras,
    ".h5": _keras,
    ".onnx": _onnx,
}


def _loader(file: Path) -> Callable[[Path], Any] | None:
    return _saved_model if file.name == "saved_model.pb" else LOADERS.get(file.suffix.lower())


def load_checkpoint_dir(directory: Path, *, file: str | None = None, format: str = "") -> Any:
    """Loads the one loadable file of a checkpoint directory (or `file`); with several, the one whose
    suffix is the checkpoint's format (e.g. "pt")."""
    if file is not None:
        chosen = directory / file
        loader = _loader(chosen)
        if loader is None:
            raise ValueError(f"{file}: no loader for this kind of file; known: {', '.join(sorted(LOADERS))}")
        return loader(chosen)
    candidates = sorted(p for p in directory.rglob("*") if p.is_file() and _loader(p) is not None)
    if len(candidates) > 1 and format:
        candidates = [p for p in candidates if p.suffix.lower() == "." + format.lower().lstrip(".")] or candidates
    if not candidates:
        raise ValueError(f"no loadable file in {directory}; known kinds: {', '.join(sorted(LOADERS))}, saved_model.pb")
    if len(candidates) > 1:
        names = ", ".join(str(p.relative_to(directory)) for p in candidates)
        raise ValueError(f"several loadable files in {directory} ({names}): choose one with load(file=...)")
    return _loader(candidates[0])(candidates[0])  # type: ignore[misc]
