"""Tag keys MLflow accepts, checked where a request names them (so a bad key is a 422, not MLflow's 500).

MLflow (``mlflow.utils.validation._validate_tag_name``) takes alphanumerics, ``_ - . / :`` and spaces, and
refuses keys that would name another path once normalised (``a//b``, ``k:/``, ``../x``, ``/x``, ``.``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, Field

_CHARS = re.compile(r"[/\w.\- :]+")  # fullmatch; \w is Unicode, as in MLflow's (Python) check


def tag_key_problem(key: str) -> str | None:
    """None when MLflow accepts ``key`` as a tag key, else why not."""
    if not 1 <= len(key) <= 250:
        return "a tag key has 1 to 250 characters"
    if not _CHARS.fullmatch(key):
        return "a tag key may only contain letters, digits, '_', '-', '.', '/', ':' and spaces"
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith("..") or norm.startswith("/"):
        return f"a tag key must not read as another path (it would resolve to {norm[:60]!r})"
    return None


def _check(key: str) -> str:
    if (why := tag_key_problem(key)) is not None:
        raise ValueError(why)
    return key


TagKey = Annotated[str, Field(min_length=1, max_length=250), AfterValidator(_check)]
TagValue = Annotated[str, Field(max_length=5000)]
