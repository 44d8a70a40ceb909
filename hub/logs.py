"""The hub's log output, and the correlation id that ties one message's log lines together.

An HL7 v2 message gets a correlation id when the MLLP listener hands it to the intake; the
id is stored with the message (message_log.correlation_id) and bound again by the mapping
job, so the receipt, the mapping and the resources it stored can be found by one grep, even
though they run in different threads or processes. An HTTP request gets one too (its
X-Request-ID or X-Correlation-ID, or a new one), echoed in the response.

The id lives in a ContextVar: asyncio tasks and threads each see their own, and every log
record made while it is bound carries it (CorrelationFilter), without passing it around.
Log lines hold ids (message id, control id, job id, case id), never patient data.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
"""The correlation id of what this task or thread is handling now; None outside of one."""

_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""What an id from a caller may look like: anything else (a name, a line break that forges
a log line) is replaced by a new id."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"
JSON_FIELDS = ("levelname", "name", "correlation_id", "message")
JSON_NAMES = {"levelname": "level", "name": "logger"}
JSON_LEFT_OUT = (*RESERVED_ATTRS, "color_message")
"""Record attributes that are not `extra` ids: the LogRecord's own, and uvicorn's copy of its
message with terminal colour codes."""


def new_correlation_id() -> str:
    """A fresh id: random, so that it says nothing about the message or the caller."""
    return uuid.uuid4().hex


def accepted_correlation_id(offered: str | None) -> str:
    """`offered` (a caller's X-Request-ID) if it is a plain token, else a new id."""
    if offered and _ACCEPTED_ID.fullmatch(offered):
        return offered
    return new_correlation_id()


@contextmanager
def correlated(value: str) -> Iterator[str]:
    """Bind `value` as the correlation id for the block (then restore the previous one)."""
    token = correlation_id.set(value)
    try:
        yield value
    finally:
        correlation_id.reset(token)


class CorrelationFilter(logging.Filter):
    """Stamps each record with the bound correlation id (None when none is bound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        return True


def configure_logging(
    level: str, log_format: Literal["text", "json"] = "text", stream: TextIO | None = None
) -> None:
    """One line per event on standard error, as text or as one JSON object a line
    (timestamp, level, logger, correlation_id, message, and the ids a line adds as
    `extra`; the timestamp in UTC, ISO 8601). Replaces the root logger's handlers, so that
    calling it again (tests, a second command) does not double the lines; `stream` is for
    tests."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CorrelationFilter())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                list(JSON_FIELDS),
                rename_fields=JSON_NAMES,
                reserved_attrs=JSON_LEFT_OUT,
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(_TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class _TextFormatter(logging.Formatter):
    """The text format, with "-" where no correlation id is bound."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = "-"
        return super().format(record)
