"""Which training data a caller may name: the one pure check every data URI passes before anything reads it.

``check_data_uri(uri, who, policy)`` looks only at the string (it never touches a file, so it is no
existence oracle) and answers the canonical URI to read, or raises ``InvalidInput`` (422):

* ``s3://bucket/key`` (the object store). In cluster mode a member of an organisation may read only
  their organisation's prefix (``org_data_prefix``, e.g. ``s3://mlops/orgs/acme/``) and the platform's
  default data (``data_uri`` and ``data_shared_prefixes``); a caller without an organisation (the
  platform's own identities) reads any object-store URI. In local mode there are no organisations.
* a local path or ``file://`` URI: local mode only, and only inside the one configured data directory
  (``MLSTACK_DATA_DIR``): relative paths are taken from it, absolute ones must lie in it, ``..`` is
  refused outright. Symlinks are resolved when the file is read (``resolve_local``), never before.
* anything else (``http://``, ``gs://``, ``/etc/shadow``, ``/proc/self/environ``) is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from mlstack.errors import InvalidInput

MAX_URI = 1024
MAX_SEGMENT = 255  # NAME_MAX: a longer file name is an OSError on every filesystem the store may use
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class DataPolicy:
    mode: str  # "local" | "cluster"
    data_dir: Path | None  # absolute; local paths are confined to it (None: local paths are refused)
    default_uri: str  # the platform's default data: everyone may read it
    shared_prefixes: tuple[str, ...] = ()  # more of the platform's data everyone may read
    org_prefix: str = "s3://mlops/orgs/{org}/"  # an organisation's own data

    @classmethod
    def from_settings(cls, s) -> DataPolicy:
        data_dir = Path(os.path.abspath(s.data_dir)) if s.data_dir else None
        return cls(mode=s.mode, data_dir=data_dir, default_uri=s.data_uri,
                   shared_prefixes=tuple(_dir(p) for p in s.data_shared_prefixes), org_prefix=s.org_data_prefix)

    def org_root(self, org: str) -> str:
        return _dir(self.org_prefix.format(org=org))


def _dir(prefix: str) -> str:
    return prefix if prefix.endswith("/") else prefix + "/"


def _short(uri: str) -> str:
    return repr(uri if len(uri) <= 120 else uri[:117] + "...")


def check_data_uri(uri: str, who, policy: DataPolicy) -> str:
    """The canonical URI ``who`` (a ``Principal``, or None for the platform itself) may train on, else 422."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("data_uri: empty")
    if len(uri) > MAX_URI:
        raise InvalidInput(f"data_uri: longer than {MAX_URI} characters")
    if _CONTROL.search(uri):
        raise InvalidInput("data_uri: control characters are not allowed")
    m = _SCHEME.match(uri)
    scheme = m.group(1).lower() if m else ""
    if scheme == "s3":
        return _check_s3(uri, who, policy)
    if scheme in ("", "file"):
        return _check_local(uri, scheme, policy)
    raise InvalidInput(f"data_uri: unsupported data URI scheme {scheme!r}: use s3://bucket/key"
                       + (" or a path in the data directory" if policy.mode == "local" else ""))


def _segments(path: str, what: str) -> list[str]:
    parts = path.split("/")
    for part in parts:
        if part in (".", ".."):
            raise InvalidInput(f"data_uri: {what} may not contain '.' or '..' segments")
        if len(part.encode()) > MAX_SEGMENT:
            raise InvalidInput(f"data_uri: a {what} segment is longer than {MAX_SEGMENT} bytes")
    return parts


def _check_s3(uri: str, who, policy: DataPolicy) -> str:
    p = urlparse(uri)
    bucket, key = p.netloc, p.path[1:] if p.path.startswith("/") else p.path
    if p.query or p.fragment or p.params:
        raise InvalidInput("data_uri: an s3:// URI has no query or fragment")
    if not _BUCKET.match(bucket):
        raise InvalidInput(f"data_uri: {bucket[:70]!r} is not a valid bucket name")
    if not key or key.startswith("/") or key.endswith("/") or "//" in key:
        raise InvalidInput("data_uri: expected s3://bucket/key (a key naming one object)")
    _segments(key, "key")
    canonical = f"s3://{bucket}/{key}"
    org = getattr(who, "org", None)
    if policy.mode != "cluster" or not org:
        return canonical
    allowed = (policy.org_root(org), *policy.shared_prefixes)
    if canonical == policy.default_uri or any(canonical.startswith(a) for a in allowed):
        return canonical
    shown = ", ".join(allowed)
    raise InvalidInput(f"data_uri: {_short(canonical)} is outside the data organisation {org!r} may read "
                       f"({shown} and the default {policy.default_uri})")


def _check_local(uri: str, scheme: str, policy: DataPolicy) -> str:
    if policy.mode == "cluster":
        raise InvalidInput("data_uri: local paths are not readable in cluster mode: use s3://bucket/key")
    if policy.data_dir is None:
        raise InvalidInput("data_uri: local paths are off (no MLSTACK_DATA_DIR): use s3://bucket/key")
    if scheme == "file":
        p = urlparse(uri)
        if not uri.lower().startswith("file://") or p.netloc not in ("", "localhost") or p.query or p.fragment:
            raise InvalidInput("data_uri: expected file:///path inside the data directory")
        raw = unquote(p.path)
        if _CONTROL.search(raw):
            raise InvalidInput("data_uri: control characters are not allowed")
    else:
        raw = uri
    if "\\" in raw:
        raise InvalidInput("data_uri: backslashes are not allowed in paths")
    parts = _segments(raw.strip("/"), "path")
    if not raw.strip("/") or raw.endswith("/"):
        raise InvalidInput("data_uri: expected a file in the data directory")
    root = PurePosixPath(policy.data_dir)
    path = PurePosixPath(raw)
    if path.is_absolute():
        if path != root and root not in path.parents:
            raise InvalidInput(f"data_uri: {_short(uri)} is outside the data directory: name a file in it "
                               "(a path relative to it, or an absolute one under it)")
        return str(path)
    return str(root.joinpath(*[x for x in parts if x]))


def resolve_local(path: str, data_dir: Path | None) -> Path:
    """The file ``path`` (from ``check_data_uri``) once symlinks are resolved; 422 when it leaves ``data_dir``."""
    if data_dir is None:
        raise InvalidInput("data_uri: local paths are off (no MLSTACK_DATA_DIR)")
    root = Path(os.path.realpath(data_dir))
    real = Path(os.path.realpath(path))
    if root not in real.parents:
        raise InvalidInput("data_uri: the path leaves the data directory (a symlink?)")
    return real


def upload_uri(upload_prefix: str, name: str, who, policy: DataPolicy) -> str:
    """Where an uploaded CSV is stored: an organisation member's under their organisation's prefix (so only
    they, and the platform, may train on it again), everyone else's under ``upload_prefix``."""
    org = getattr(who, "org", None)
    if policy.mode == "cluster" and org:
        return f"{policy.org_root(org)}uploads/{name}"
    return f"{upload_prefix.rstrip('/')}/{name}"
