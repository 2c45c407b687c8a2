"""Domain errors, mapped to HTTP statuses once (``mlstack.api.main``) and to v2 ``{"error": ...}`` bodies."""

from __future__ import annotations

from typing import Any


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


class Gone(MlstackError):
    status_code = 410


class Unavailable(MlstackError):
    status_code = 503


class Unauthorized(MlstackError):
    """No or an invalid bearer token (answered with ``WWW-Authenticate: Bearer``)."""

    status_code = 401


class Forbidden(MlstackError):
    """A known caller whose role (local) or RBAC (cluster) does not allow the action."""

    status_code = 403


class NotSupported(MlstackError):
    """The feature needs the other mode (e.g. organisations are Kubernetes namespaces: cluster mode)."""

    status_code = 501


def error_response(exc: MlstackError) -> Any:
    """The HTTP answer of a domain error: ``{"detail": message}``; a 401 also says how to authenticate."""
    from fastapi.responses import JSONResponse

    headers = {"WWW-Authenticate": 'Bearer realm="mlstack"'} if exc.status_code == 401 else None
    if (retry_after := getattr(exc, "retry_after", None)) is not None:  # 429 (mlstack.api.quotas.TooMany)
        headers = {"Retry-After": str(int(retry_after))}
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


def mlflow_error(exc: Any) -> MlstackError:
    """The domain error of an ``MlflowException`` no route caught: bad input is 422, a missing thing 404, a
    duplicate 409, anything else MLflow's trouble (503); the message is cut short."""
    code = getattr(exc, "error_code", "") or ""
    message = f"MLflow: {getattr(exc, 'message', None) or exc}"[:300]
    if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"):
        return InvalidInput(message)
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return NotFound(message)
    if code == "RESOURCE_ALREADY_EXISTS":
        return Conflict(message)
    return Unavailable(message)
