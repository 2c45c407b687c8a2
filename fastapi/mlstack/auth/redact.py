"""Keep credentials out of access logs: event-stream URLs carry ``?ticket=`` (single-use, but still), and a client
that still sends the retired ``?access_token=`` must not get its token written down either."""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"((?:access_token|ticket)=)[^&\s\"']+")


class RedactAccessTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _TOKEN.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_logs(logger_name: str = "uvicorn.access") -> None:
    """Idempotent: attach the filter to ``logger_name`` (uvicorn's access log by default)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactAccessTokens) for f in logger.filters):
        logger.addFilter(RedactAccessTokens())
