"""JSON log lines: one object per line, for log shippers.

:class:`JSONFormatter` can be named in any project's ``LOGGING``::

    "formatters": {"json": {"()": "ftpserver_core.logs.JSONFormatter"}}

``ftpserver --log-format json`` (``FTPSERVER_LOG_FORMAT = "json"``) puts it on
the handlers of the ``ftpserver_core`` loggers and on the root's handlers that
write to stderr, and sends the command's own warnings through it too.
"""

import json
import logging
import re
import sys
from datetime import UTC, datetime

# The attributes every LogRecord has: anything else came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# A password never reaches a log line: fields that could hold one are left
# out, and a PASS command line is masked (pyftpdlib masks its own).
_SECRET_FIELD = re.compile(r"pass(word|wd)?$|secret|token", re.I)
_PASS_LINE = re.compile(r"\bPASS (?!\*+\b)\S.*", re.I)


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object: time (ISO 8601 UTC), level, logger,
    message, process, the record's extra fields, and the exception if any."""

    def format(self, record):
        message = _PASS_LINE.sub("PASS ****", record.getMessage())
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key in entry:
                continue
            if _SECRET_FIELD.search(key):
                continue
            entry[key] = _plain(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _plain(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | dict):
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            pass
    return str(value)


def _writes_to_stderr(handler, stream=None):
    if not isinstance(handler, logging.StreamHandler):
        return False
    return handler.stream in (sys.stderr, sys.__stderr__) or (
        stream is not None and handler.stream is stream
    )


def use_json(stream=None):
    """Format the FTP process's log lines as JSON; return the handlers changed.

    Every handler of an ``ftpserver_core`` logger, and every handler of the
    root and ``pyftpdlib`` loggers writing to stderr, gets a
    :class:`JSONFormatter`; so does Python's last resort (what prints a
    warning no handler takes, as without LOGGING). Without LOGGING,
    pyftpdlib would add its own stderr handler (INFO, its own format) when
    the loop starts: it gets one here, in JSON.
    """
    formatter = JSONFormatter()
    root = logging.getLogger()
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name == "ftpserver_core" or name.startswith("ftpserver_core.")
    ]
    changed = []
    for name in names:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
            changed.append(handler)
    pyftpdlib = logging.getLogger("pyftpdlib")
    if not (pyftpdlib.handlers or root.handlers):
        # As pyftpdlib.log.config_logging() would, at its default level.
        pyftpdlib.setLevel(logging.INFO)
        pyftpdlib.addHandler(logging.StreamHandler(stream or sys.stderr))
    for handler in [*root.handlers, *pyftpdlib.handlers]:
        if _writes_to_stderr(handler, stream):
            handler.setFormatter(formatter)
            changed.append(handler)
    last_resort = logging.StreamHandler(stream or sys.stderr)
    last_resort.setLevel(logging.WARNING)  # as Python's own
    last_resort.setFormatter(formatter)
    logging.lastResort = last_resort
    changed.append(last_resort)
    return changed


class LogStream:
    """A file-like object whose writes become log records (a command's stderr).

    Each write is one record: WARNING, or ERROR when it reports an error.
    """

    def __init__(self, logger):
        self.logger = logger

    def write(self, text):
        text = text.strip()
        if not text:
            return
        error = text.startswith(("CommandError", "SystemCheckError", "Error"))
        self.logger.log(logging.ERROR if error else logging.WARNING, "%s", text)

    def flush(self):
        pass

    def isatty(self):
        return False
