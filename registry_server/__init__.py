"""The model registry server: a gRPC servicer over a peewee store."""

from importlib import metadata

try:
    __version__ = metadata.version("model-registry")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
