"""Payload history: the Redis Stream's records written as Parquet to the object store, every ``history_seconds``.

``<history_uri>/<ns>/<deployment>/date=YYYY-MM-DD/part-<first ms>-<last ms>.parquet`` (the default history URI is
``s3://<bucket of MLSTACK_UPLOAD_PREFIX>/monitoring``): one file per flush and deployment, columns ``id, ts, model,
version, track, latency_ms, inputs, outputs`` (inputs/outputs as JSON text: any width, any label type), readable
by pandas, DuckDB or Spark with hive partitioning. What was written last is a stream id kept in Redis, so a new
monitor (after the lease moved) continues without gaps or duplicates while the stream still holds the records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from mlstack.monitoring.monitor import state_hash, stream_records
from mlstack.monitoring.settings import MonitorSettings

MAX_ROWS = 50_000


class History:
    def __init__(self, uri: str, boto3_kwargs: dict | None, local_dir: Path | None):
        if not uri.startswith("s3://"):
            raise ValueError(f"the monitoring history URI must be s3://bucket/prefix, got {uri!r}")
        self.bucket, _, prefix = uri[len("s3://"):].partition("/")
        self.prefix = prefix.strip("/")
        self.boto3_kwargs = boto3_kwargs
        self.local_dir = local_dir

    @classmethod
    def from_settings(cls, s: Any, ms: MonitorSettings) -> History:
        uri = ms.history_uri or "s3://" + s.upload_prefix[len("s3://"):].split("/", 1)[0] + "/monitoring"
        local = s.object_store_dir if (s.object_store_dir is not None and not s.s3_endpoint_url) else None
        return cls(uri, None if local else s.boto3_kwargs(), local)

    def key(self, namespace: str, name: str, first_ms: int, last_ms: int) -> str:
        date = dt.datetime.fromtimestamp(first_ms / 1000, dt.UTC).strftime("%Y-%m-%d")
        return "/".join(p for p in (self.prefix, namespace, name, f"date={date}",
                                    f"part-{first_ms}-{last_ms}.parquet") if p)

    async def flush(self, monitor: Any, t: Any) -> str | None:
        """Write what the stream gained since the last flush; returns the s3:// URI written (None: nothing new)."""
        state = state_hash(monitor.ms, t.key)
        last = await monitor.redis.hget(state, "history:last")
        entries = await monitor.redis.xrange(monitor.stream_key(t), min=f"({last}" if last else "-", max="+",
                                             count=MAX_ROWS)
        if not entries:
            return None
        records = stream_records(entries)
        first_ms, last_ms = (int(entries[0][0].split("-")[0]), int(entries[-1][0].split("-")[0]))
        key = self.key(t.namespace, t.name, first_ms, last_ms)
        await asyncio.to_thread(self._write, key, records)
        await monitor.redis.hset(state, "history:last", entries[-1][0])
        return f"s3://{self.bucket}/{key}"

    def _write(self, key: str, records: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "id": [str(r.get("id")) for r in records],
            "ts": pa.array([dt.datetime.fromtimestamp(float(r.get("ts") or 0), dt.UTC) for r in records],
                           pa.timestamp("ms", tz="UTC")),
            "model": [str(r.get("model")) for r in records],
            "version": [str(r.get("version")) for r in records],
            "track": [str(r.get("track")) for r in records],
            "latency_ms": pa.array([float(r.get("latency_ms") or 0) for r in records], pa.float64()),
            "inputs": [json.dumps(r.get("inputs")) for r in records],
            "outputs": [json.dumps(r.get("outputs")) for r in records],
        })
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        if self.local_dir is not None:
            root = Path(self.local_dir).resolve()
            path = (root / self.bucket / key).resolve()
            if root not in path.parents:
                raise ValueError(f"{key} escapes the object store")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # never a half-written file under the final name
            return
        import boto3

        boto3.client("s3", **(self.boto3_kwargs or {})).put_object(Bucket=self.bucket, Key=key, Body=data)
