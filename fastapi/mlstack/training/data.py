"""Read training data by URI scheme: ``s3://`` through boto3 (configured endpoint) or a local path.

With no S3 endpoint but an ``object_store_dir`` (local mode), ``s3://bucket/key`` is the file
``object_store_dir/bucket/key``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from mlstack.errors import InvalidInput, NotFound, Unavailable

MAX_CSV_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class ObjectStore:
    """Where ``s3://`` URIs live: an S3 API (boto3 kwargs) or a local directory."""

    boto3_kwargs: dict | None = None
    local_dir: str | None = None

    @classmethod
    def from_settings(cls, s) -> ObjectStore:
        if s.s3_endpoint_url or s.object_store_dir is None:
            return cls(boto3_kwargs=s.boto3_kwargs())
        return cls(local_dir=str(s.object_store_dir))

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
            if not path.is_file():
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
            return self._local(bucket, key).is_file()
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


def _local_file(uri: str) -> Path:
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file"):
        raise InvalidInput(f"unsupported data URI scheme {scheme!r}: use s3:// or a local path")
    path = Path(urlparse(uri).path if scheme == "file" else uri)
    if not path.is_file():
        raise NotFound(f"{uri} does not exist")
    return path


def read_bytes(uri: str, store: ObjectStore) -> bytes:
    if uri.startswith("s3://"):
        return store.read(uri)
    return _local_file(uri).read_bytes()


def check_exists(uri: str, store: ObjectStore) -> None:
    """Raise NotFound/InvalidInput early (at request time) for data that cannot be read."""
    if uri.startswith("s3://"):
        if not store.exists(uri):
            raise NotFound(f"{uri} does not exist")
    else:
        _local_file(uri)


def parse_csv(data: bytes, target: str, source: str = "CSV") -> pd.DataFrame:
    """Parse and sanity-check a training CSV: the target column exists, numeric features, enough rows."""
    try:
        df = pd.read_csv(io.BytesIO(data))
    except Exception as e:
        raise InvalidInput(f"{source} is not a readable CSV: {e}") from None
    if target not in df.columns:
        raise InvalidInput(f"{source} has no target column {target!r} (columns: {', '.join(map(str, df.columns))})")
    features = [c for c in df.columns if c != target and pd.api.types.is_numeric_dtype(df[c])]
    if not features:
        raise InvalidInput(f"{source} has no numeric feature columns besides {target!r}")
    df = df.dropna(subset=[target])
    if len(df) < 10:
        raise InvalidInput(f"{source} needs at least 10 rows with a target, has {len(df)}")
    return df
