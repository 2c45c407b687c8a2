"""``POST /predict``: score a CSV upload in batches and stream the predictions back (CSV or JSON).

Memory stays flat however large the file: Starlette spools the upload to a temporary file on disk (1 MiB in
memory), and it is read back in chunks of ``CHUNK`` bytes, parsed into batches of ``BATCH_ROWS`` rows, each
batch sent to the version's model server (the same server ``/inference`` uses: ``servers.endpoint``, the
same pooled aiohttp session) and written out as soon as its answer is back, ``IN_FLIGHT`` batches at a time.

The file is read twice: a first pass checks every row (header against the model's features, column count,
numbers that are finite) so that a bad file is a 422 naming the line and column before a byte of the answer
is sent; the second pass scores. A model server that fails mid-stream (after retries) ends the stream early:
the status line has gone out by then, so a CSV answer then ends with a ``# error: ...`` line and a JSON
answer is left unterminated (invalid JSON) -- neither passes for a complete answer.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import numpy as np
import orjson
import pandas as pd

from mlstack.errors import InvalidInput, MlstackError, Unavailable
from mlstack.registry import CHAMPION

CHUNK = 256 * 1024
BATCH_ROWS = 2000
IN_FLIGHT = 4
ATTEMPTS = 3
EXCERPT = 40
MAX_LINE = 64 * 1024  # a longer line is not a row of features


class NotAcceptable(MlstackError):
    status_code = 406


class Readable(Protocol):
    async def read(self, size: int = -1) -> bytes: ...
    async def seek(self, offset: int) -> None: ...


def _short(value: str) -> str:
    return value if len(value) <= EXCERPT else value[:EXCERPT] + "..."


def negotiate(accept: str | None) -> str:
    """``text/csv`` or ``application/json`` by the Accept header (q-values honoured; default CSV); else 406."""
    best, best_q = None, -1.0
    for part in (accept or "*/*").split(","):
        kind, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        kind = kind.lower()
        if kind in ("*/*", "text/*", "text/csv"):
            candidate = "text/csv"
        elif kind in ("application/json", "application/*"):
            candidate = "application/json"
        else:
            continue
        if q > 0 and q > best_q:
            best, best_q = candidate, q
    if best is None:
        raise NotAcceptable("POST /predict answers text/csv or application/json: say so in Accept")
    return best


class CsvBatches:
    """Rows of a CSV upload as float64 arrays of at most ``batch_rows`` rows, in the model's feature order."""

    def __init__(self, file: Readable, features: list[str] | None, width: int | None, what: str,
                 batch_rows: int = BATCH_ROWS):
        self.file, self.features, self.width, self.what, self.batch_rows = file, features, width, what, batch_rows
        self.order: list[int] | None = None  # column index of each feature
        self.columns: list[str] = []
        self.rows = 0

    def _header(self, line: str) -> None:
        try:
            cols = [c.strip() for c in next(csv.reader([line]), [])]
        except csv.Error as e:
            raise InvalidInput(f"line 1 (header): not a CSV row ({_short(str(e))})") from None
        if not cols or not any(cols):
            raise InvalidInput("line 1: the CSV needs a header line naming the feature columns")
        self.columns = cols
        if self.features:
            missing = [f for f in self.features if f not in cols]
            unknown = [c for c in cols if c not in set(self.features)]
            if missing or unknown:
                parts = ([f"missing column(s) {', '.join(_short(m) for m in missing[:20])}"] if missing else []) + (
                    [f"unknown column(s) {', '.join(_short(u) for u in unknown[:20])}"] if unknown else [])
                raise InvalidInput(f"line 1 (header) does not match the features of {self.what} "
                                   f"({', '.join(self.features)}): {'; '.join(parts)}")
            if len(set(cols)) != len(cols):
                raise InvalidInput("line 1 (header): a column is named twice")
            self.order = [cols.index(f) for f in self.features]
        elif self.width and len(cols) != self.width:
            raise InvalidInput(f"line 1 (header): {self.what} expects {self.width} features (its signature), "
                               f"the header has {len(cols)} columns")

    def _fast(self, text: str) -> np.ndarray | None:
        """pandas' C parser (~10x Python's); None when anything is off, so that ``_slow`` says what and where."""
        try:
            arr = pd.read_csv(io.StringIO(text), header=None, dtype=np.float64, engine="c",
                              skip_blank_lines=True).to_numpy()
        except Exception:  # anything pandas refuses: the exact parser below names it
            return None
        if arr.ndim != 2 or arr.shape[1] != len(self.columns) or not np.isfinite(arr).all():
            return None  # short rows come back as NaN; NaN/inf are refused by name below
        return arr

    def _slow(self, lines: list[str], first_line: int) -> np.ndarray:
        n = len(self.columns)
        out: list[list[float]] = []
        line_nos: list[int] = []
        reader = csv.reader(lines)
        for i in itertools.count():
            line_no = first_line + i
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise InvalidInput(f"line {line_no}: not a CSV row ({_short(str(e))})") from None
            if not row:
                continue
            if len(row) != n:
                raise InvalidInput(f"line {line_no}: {len(row)} columns, the header has {n}")
            try:
                values = [float(v) for v in row]
            except ValueError:
                for j, v in enumerate(row):
                    try:
                        float(v)
                    except ValueError:
                        raise InvalidInput(f"line {line_no}, column {_short(self.columns[j])!r}: "
                                           f"{_short(v.strip())!r} is not a number") from None
                raise
            out.append(values)
            line_nos.append(line_no)
        arr = np.asarray(out, dtype=np.float64).reshape(len(out), n)
        if not np.isfinite(arr).all():
            r, c = map(int, np.argwhere(~np.isfinite(arr))[0])
            raise InvalidInput(f"line {line_nos[r]}, column {_short(self.columns[c])!r}: "
                               f"{arr[r, c]} is not a finite number")
        return arr

    def _parse(self, lines: list[str], first_line: int) -> np.ndarray:
        if not any(lines):
            return np.empty((0, len(self.columns)))
        arr = self._fast("\n".join(lines))
        if arr is None:
            arr = self._slow(lines, first_line)
        if self.order is not None and self.order != list(range(len(self.columns))):
            arr = arr[:, self.order]
        return np.ascontiguousarray(arr)  # orjson serialises C-contiguous arrays only

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        await self.file.seek(0)
        self.rows = 0
        buf, line_no, pending, header_done = b"", 1, [], False
        eof = False
        while not eof:
            chunk = await self.file.read(CHUNK)
            eof = not chunk
            buf += chunk
            if eof:
                cut = len(buf)
            else:
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    if len(buf) > MAX_LINE:
                        raise InvalidInput(f"line {line_no}: longer than {MAX_LINE} bytes")
                    continue
            try:
                text = buf[:cut].decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"near line {line_no}: the file is not UTF-8 text") from None
            buf = buf[cut:]
            lines = text.splitlines()
            if not header_done and lines:
                self._header(lines[0])
                lines, line_no, header_done = lines[1:], line_no + 1, True
            for start in range(0, len(lines), self.batch_rows):
                part = lines[start:start + self.batch_rows]
                arr = self._parse(part, line_no + start)
                if len(arr):
                    pending.append(arr)
            line_no += len(lines)
            # re-cut into full batches
            if pending:
                merged = np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending = []
                full = len(merged) - len(merged) % self.batch_rows
                for s in range(0, full, self.batch_rows):
                    self.rows += self.batch_rows
                    yield merged[s:s + self.batch_rows]
                if full < len(merged):
                    pending = [np.ascontiguousarray(merged[full:])]
        if not header_done:
            raise InvalidInput("the file is empty: it needs a header line and at least one row")
        if pending:
            self.rows += len(pending[0])
            yield pending[0]
        if self.rows == 0:
            raise InvalidInput("the CSV has a header but no rows")


class BatchScorer:
    """Scores a CSV upload against one registered version through ``inference``'s model servers."""

    def __init__(self, inference: Any):
        self.inference = inference  # mlstack.inference.InferenceClient: resolve, features, servers, http

    async def prepare(self, file: Readable, model: str, version: str | None, alias: str | None,
                      namespace: str | None) -> tuple[str, CsvBatches]:
        """Resolve the version, check every row of the file (422 before anything is streamed); the version
        and the batches to score."""
        inf = self.inference
        version = await inf.resolve(model, version, alias or CHAMPION)
        names, width = await inf.features(model, version)
        batches = CsvBatches(file, names, width, f"model {model} v{version}")
        probe = None
        async for arr in batches:  # the checking pass
            probe = arr[:1] if probe is None else probe
        if names is None and width is None and probe is not None:
            await self._score(model, version, namespace, probe)  # no recorded features: the model server judges
        return version, batches

    async def _score(self, model: str, version: str, namespace: str | None, arr: np.ndarray) -> list:
        inf, last = self.inference, ""
        body = orjson.dumps({"instances": arr}, option=orjson.OPT_SERIALIZE_NUMPY)
        for attempt in range(ATTEMPTS):
            try:
                url = await inf.servers.endpoint(model, version, namespace=namespace)
                async with inf.http.post(f"{url}/predict", data=body,
                                         timeout=aiohttp.ClientTimeout(total=120)) as resp:
                    status, content = resp.status, await resp.read()
                if status == 200:
                    return orjson.loads(content)["predictions"]
                text = content[:300].decode(errors="replace")
                if status in (400, 404, 422):
                    raise InvalidInput(f"model {model} v{version} rejected the rows: {text}")
                last = f"model server answered {status}: {text}"
            except (aiohttp.ClientError, TimeoutError, Unavailable) as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.1 * 2 ** attempt)
        raise Unavailable(f"model {model} v{version}: {last}")

    async def stream(self, batches: CsvBatches, model: str, version: str, namespace: str | None,
                     media_type: str) -> AsyncIterator[bytes]:
        as_json = media_type == "application/json"
        if as_json:
            yield orjson.dumps({"model_name": model, "model_version": version})[:-1] + b',"predictions":['
        else:
            yield b"prediction\n"
        pending: deque[asyncio.Task] = deque()
        first, count = True, 0
        try:
            async def drain_one() -> bytes:
                nonlocal first, count
                preds = await pending.popleft()
                count += len(preds)
                if as_json:
                    out = orjson.dumps(preds)[1:-1]
                    out, first = (out if first else b"," + out), False
                    return out
                return _csv_lines(preds)

            async for arr in batches:
                pending.append(asyncio.ensure_future(self._score(model, version, namespace, arr)))
                if len(pending) >= IN_FLIGHT:
                    yield await drain_one()
            while pending:
                yield await drain_one()
            if as_json:
                yield b'],"rows":' + str(count).encode() + b"}"
        except (Unavailable, InvalidInput) as e:
            if not as_json:
                yield f"# error: {e.message[:300]}\n".encode()
            return
        finally:
            for t in pending:
                t.cancel()


def _csv_lines(preds: list) -> bytes:
    if preds and all(isinstance(p, int | float) and not isinstance(p, bool) for p in preds):
        return ("\n".join(repr(p) if isinstance(p, float) and not math.isfinite(p) else str(p)
                          for p in preds) + "\n").encode()
    import io

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for p in preds:
        w.writerow([p])
    return out.getvalue().encode()
