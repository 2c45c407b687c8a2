"""Read training data by URI scheme: ``s3://`` through boto3 (configured endpoint) or a local path.

With no S3 endpoint but an ``object_store_dir`` (local mode), ``s3://bucket/key`` is the file
``object_store_dir/bucket/key``. Local paths are read only inside ``data_dir`` (``MLSTACK_DATA_DIR``);
which URIs a caller may name at all is :func:`mlstack.training.access.check_data_uri`'s answer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from mlstack.errors import InvalidInput, NotFound, Unavailable
from mlstack.training.access import resolve_local

MAX_CSV_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class ObjectStore:
    """Where ``s3://`` URIs live: an S3 API (boto3 kwargs) or a local directory."""

    boto3_kwargs: dict | None = None
    local_dir: str | None = None
    data_dir: str | None = None  # the one directory local paths may name (None: local paths are refused)

    @classmethod
    def from_settings(cls, s) -> ObjectStore:
        data_dir = str(Path(s.data_dir).absolute()) if s.data_dir else None
        if s.s3_endpoint_url or s.object_store_dir is None:
            return cls(boto3_kwargs=s.boto3_kwargs(), data_dir=data_dir)
        return cls(local_dir=str(s.object_store_dir), data_dir=data_dir)

    def _client(self):
        import boto3

        return boto3.client("s3", **(self.boto3_kwargs or {}))

    def _local(self, bucket: str, key: str) -> Path:
        root = Path(self.local_dir).resolve()
        path = (root / bucket / key).resolve()
        if root not in path.parents:
            raise InvalidInput(f"s3://{bucket}/{key} escapes the object store")
        return path

    def read(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        if self.local_dir:
            path = self._local(bucket, key)
            if not _is_file(path):
                raise NotFound(f"{uri} does not exist")
            return path.read_bytes()
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self._client().get_object(Bucket=bucket, Key=key)
            if obj["ContentLength"] > MAX_CSV_BYTES:
                raise InvalidInput(f"{uri} is larger than {MAX_CSV_BYTES} bytes")
            return obj["Body"].read()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "404"):
                raise NotFound(f"{uri} does not exist") from None
            raise Unavailable(f"S3 error reading {uri}: {code or e}") from None
        except BotoCoreError as e:
            raise Unavailable(f"S3 unreachable reading {uri}: {e}") from None

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        if self.local_dir:
            return _is_file(self._local(bucket, key))
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError:
            return False
        except BotoCoreError as e:
            raise Unavailable(f"S3 unreachable: {e}") from None

    def write(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        if self.local_dir:
            path = self._local(bucket, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client().put_object(Bucket=bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as e:
            raise Unavailable(f"S3 error writing {uri}: {e}") from None


def split_s3(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc or not p.path.strip("/"):
        raise InvalidInput(f"not an s3://bucket/key URI: {uri!r}")
    return p.netloc, p.path.lstrip("/")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long, a loop of symlinks: not a file this API can read
        return False


def _local_file(uri: str, store: ObjectStore) -> Path:
    """A local path that ``check_data_uri`` allowed, read only inside the data directory (symlinks resolved)."""
    scheme = urlparse(uri).scheme if "://" in uri else ""
    if scheme not in ("", "file"):
        raise InvalidInput(f"unsupported data URI scheme {scheme!r}: use s3://")
    raw = urlparse(uri).path if scheme == "file" else uri
    path = resolve_local(raw, Path(store.data_dir) if store.data_dir else None)
    if not _is_file(path):
        raise NotFound(f"{uri} does not exist in the data directory")
    return path


def read_bytes(uri: str, store: ObjectStore) -> bytes:
    if uri.startswith("s3://"):
        return store.read(uri)
    path = _local_file(uri, store)
    if path.stat().st_size > MAX_CSV_BYTES:
        raise InvalidInput(f"{uri} is larger than {MAX_CSV_BYTES} bytes")
    return path.read_bytes()


def check_exists(uri: str, store: ObjectStore) -> None:
    """Raise NotFound/InvalidInput early (at request time) for data that cannot be read.

    Only for URIs :func:`mlstack.training.access.check_data_uri` allowed: the answer says whether a file the
    caller may read exists, nothing about the rest of the machine."""
    if uri.startswith("s3://"):
        if not store.exists(uri):
            raise NotFound(f"{uri} does not exist")
    else:
        _local_file(uri, store)


def parse_csv(data: bytes, target: str, source: str = "CSV") -> pd.DataFrame:
    """Parse and sanity-check a training CSV: the target column exists, numeric features, enough rows."""
    try:
        df = pd.read_csv(io.BytesIO(data))
    except Exception as e:  # pandas' messages name lines and fields, not their contents; cut them short anyway
        raise InvalidInput(f"{source} is not a readable CSV: {type(e).__name__}: {str(e)[:200]}") from None
    if target not in df.columns:
        columns = ", ".join(str(c)[:40] for c in df.columns[:20]) + (", ..." if len(df.columns) > 20 else "")
        raise InvalidInput(f"{source} has no target column {target!r} (columns: {columns})")
    features = [c for c in df.columns if c != target and pd.api.types.is_numeric_dtype(df[c])]
    if not features:
        raise InvalidInput(f"{source} has no numeric feature columns besides {target!r}")
    df = df.dropna(subset=[target])
    if len(df) < 10:
        raise InvalidInput(f"{source} needs at least 10 rows with a target, has {len(df)}")
    return df
