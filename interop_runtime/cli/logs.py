"""Logging set-up: readable text by default, one JSON object per line for log collectors.

Records about a run, a node or a worker carry ``run``, ``graph``, ``node``, ``worker`` and
``code`` as fields (``extra=``): top-level keys in JSON, a ``[key=value ...]`` suffix in text.

Warnings that a peer can trigger at will (refused messages, bad frames) are rate-limited
per message template, so a flood cannot fill the disk through the log."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
FIELDS = ("run", "graph", "node", "worker", "code")  # what a record may locate itself by


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in record.__dict__.items()
                    if k not in _STANDARD and v is not None})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS
                        if getattr(record, k, None) is not None)
        if not tags:
            return text
        head, sep, tail = text.partition("\n")  # before a traceback, if any
        return f"{head} [{tags}]{sep}{tail}"


class BurstFilter(logging.Filter):
    """At most ``burst`` records per ``window_s`` for each message template at WARNING and
    below; the next record let through says how many were left out."""

    def __init__(self, burst: int = 20, window_s: float = 10.0) -> None:
        super().__init__()
        self.burst, self.window_s = burst, window_s
        self._seen: dict[tuple[str, str], list[float]] = {}  # (logger, template) -> [start, n, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = record.created
        state = self._seen.get(key)
        if state is None or now - state[0] > self.window_s:
            if len(self._seen) > 10_000:  # the templates are ours, but stay bounded anyway
                self._seen.clear()
            dropped = int(state[2]) if state else 0
            self._seen[key] = [now, 1.0, 0.0]
            if dropped:
                record.msg = f"{record.msg} ({dropped} similar messages left out)"
            return True
        state[1] += 1
        if state[1] <= self.burst:
            return True
        state[2] += 1
        return False


def setup_logging(level: str = "info", fmt: str = "text", component: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(BurstFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if component:
        old = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = old(*args, **kwargs)
            record.component = component
            return record
        logging.setLogRecordFactory(factory)
