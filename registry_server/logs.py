"""One logging set-up for the server and its workers (the workers inherit it when they are forked):
`--log-format text` (a line of text a record) or `json` (one JSON object a line: time, level, logger,
message, the trace and span ids while tracing, and the fields of an audit record). Nothing here
adds a secret: tokens are never logged, database URLs only as db.redacted gives them."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from . import tracing

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line (ASCII: no character of a message can break the line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):  # the audit record's fields stand in the object itself
            entry["message"] = "audit"
            entry.update({key: value for key, value in audit.items() if key not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Replaces the root logger's handlers with one on stderr in the format asked for."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
