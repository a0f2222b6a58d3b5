"""One log line, not a traceback, for a request aiohttp cannot parse.

aiohttp answers malformed HTTP (a bad Content-Length, a header line over its
limit, a broken chunk: port scanners and broken clients) with 400 before any
handler runs, and logs it at ERROR with the parser's traceback. Nothing in
the server failed, and a scanner could fill the journal with tracebacks, so
the record becomes one WARNING naming the client and what was wrong.
(aiohttp already logs non-HTTP bytes on a fresh connection at DEBUG.)
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class MalformedRequestLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            what = (exc.message or type(exc).__name__).strip().splitlines()[0].rstrip(":")
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed HTTP request from %s, answered %d: %s"
            record.args = (client, exc.code, what)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


_FILTER = MalformedRequestLog()


def log_malformed_requests_in_one_line() -> None:
    """Idempotent: the same filter object is added once (Logger.addFilter)."""
    logging.getLogger(AIOHTTP_SERVER_LOGGER).addFilter(_FILTER)
