"""Domain errors, mapped to HTTP statuses once (``mlstack.api.main``) and to v2 ``{"error": ...}`` bodies."""

from __future__ import annotations


class MlstackError(Exception):
    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(MlstackError):
    status_code = 404


class Conflict(MlstackError):
    status_code = 409


class InvalidInput(MlstackError):
    status_code = 422


class Unavailable(MlstackError):
    status_code = 503
