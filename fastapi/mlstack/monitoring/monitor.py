"""The monitor: pulls the model servers' sampled requests, keeps them in Redis, judges drift and SLOs, alerts.

One monitor per Redis does the work: every API process runs the loop, but only the holder of a short Redis lease
(``<prefix>:leader``, renewed every ``drain_seconds``) drains and evaluates; when it dies another API process
takes over after ``lease_seconds``. All its state lives in Redis (cursors, alert episodes), so a new holder
continues where the old one stopped and never repeats an alert.

Every ``drain_seconds``, for each deployment with monitoring on (``spec.monitoring.sampleRate`` > 0), each of its
model servers (stable, canary) is drained with its cursor (``GET /v2/monitoring/payloads?after=``): pulling keeps
the model servers, which run uploaded code, free of any platform credential. Records go to a capped Redis Stream
per deployment (``<prefix>:payloads:<ns>/<name>``, ``XADD MAXLEN ~``) and each request id to
``<prefix>:req:<id>`` (TTL) for feedback joins; what the servers lost is counted (``missed``: overwritten before
this pull; ``dropped``: the server's own count).

Every ``evaluate_seconds``, over the deployment's window (``spec.monitoring.windowSeconds``) of the stream:
drift per version against its reference profile (``deployment.drift`` once per episode, and its recovery), the
p99 of the sampled latencies against ``spec.alerts.maxP99LatencyMs`` and the feedback accuracy against
``spec.alerts.minAccuracy`` (``deployment.slo`` when breached and when recovered), and the ``SLOMet`` condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from mlstack.aio import cancel_all
from mlstack.alerts.events import DEPLOYMENT_DRIFT, DEPLOYMENT_SHADOW, DEPLOYMENT_SLO
from mlstack.monitoring import drift
from mlstack.monitoring.profile import ARTIFACT_PATH, ReferenceProfile
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.settings import MonitorSettings
from mlstack_operator.contract import ModelDeploymentSpec

log = logging.getLogger(__name__)

DRIFT, SLO = DEPLOYMENT_DRIFT, DEPLOYMENT_SLO
LATENCY, ACCURACY = "maxP99LatencyMs", "minAccuracy"
SHADOW = "shadow"  # the track of a shadow version's copies of live requests
SHADOW_LAST = "shadow:last"  # the state hash's field with the last shadow comparison (GET .../quality)

_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
          "else return 0 end")
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


@dataclass(frozen=True)
class Target:
    """A deployment to watch: its spec and the model servers to drain as (track, base URL)."""

    namespace: str
    name: str
    spec: ModelDeploymentSpec
    servers: tuple[tuple[str, str], ...]
    canary_version: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def model(self) -> str:
        return self.spec.model.name


Targets = Callable[[], Awaitable[list[Target]]]
Existing = Callable[[], Awaitable[set[str]]]  # every deployment that exists ("ns/name"), watched or not
ConditionSink = Callable[[Target, dict[str, Any]], Awaitable[None]]


class Profiles:
    """Reference profiles by (model, version), read once from the version's run (MLflow artifact)."""

    def __init__(self, registry: Any, ms: MonitorSettings):
        self.registry = registry
        self.ms = ms
        self._cache: dict[tuple[str, str], ReferenceProfile | None] = {}
        self._retry: dict[tuple[str, str], float] = {}

    async def get(self, model: str, version: str) -> ReferenceProfile | None:
        key = (model, version)
        if key in self._cache:
            return self._cache[key]
        if time.monotonic() < self._retry.get(key, 0.0):
            return None
        try:
            profile = await asyncio.to_thread(self._load, model, version)
        except Exception as e:  # no profile (an upload, an old version) or MLflow down: ask again later
            log.info("no reference profile for %s v%s: %s", model, version, str(e)[:300])
            self._retry[key] = time.monotonic() + self.ms.profile_retry_seconds
            return None
        self._cache[key] = profile
        return profile

    def _load(self, model: str, version: str) -> ReferenceProfile:
        import tempfile

        client = self.registry.client
        mv = client.get_model_version(model, version)
        if not mv.run_id:
            raise LookupError("the version has no run")
        with tempfile.TemporaryDirectory(prefix="mlstack-profile-") as tmp:
            path = client.download_artifacts(mv.run_id, ARTIFACT_PATH, tmp)
            with open(path) as fh:
                return ReferenceProfile.from_dict(json.load(fh))


@dataclass
class Window:
    """One version's records in a window."""

    rows: list[list[float]] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def payload_stream(ms: MonitorSettings, key: str) -> str:
    """The Redis Stream of a deployment's payload records (``key``: ``namespace/name``)."""
    return f"{ms.key_prefix}:payloads:{key}"


def state_hash(ms: MonitorSettings, key: str) -> str:
    """The hash of a deployment's judgements: open alert episodes, the last drift and shadow results."""
    return f"{ms.key_prefix}:state:{key}"


def stats_hash(ms: MonitorSettings, key: str) -> str:
    """The hash of a deployment's payload counters (records drained, missed, dropped by server)."""
    return f"{ms.key_prefix}:stats:{key}"


async def read_records(redis: Any, ms: MonitorSettings, key: str, seconds: float,
                       now: float | None = None) -> list[dict[str, Any]]:
    """The payload stream's records of the last ``seconds`` (newest first, at most ``window_max_records``): what
    the monitor judges and what the API's ``/quality`` reports, in both modes."""
    now = now or time.time()
    entries = await redis.xrevrange(payload_stream(ms, key), max="+", min=str(int((now - seconds) * 1000)),
                                    count=ms.window_max_records)
    return stream_records(entries)


def stream_records(entries: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    """The payload records of Redis Stream entries (XRANGE/XREVRANGE answers), unreadable ones skipped (pure)."""
    out = []
    for _, fields in entries:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            rec = json.loads(fields["r"])
            if isinstance(rec, dict):
                out.append(rec)
    return out


def windows_of(records: list[dict[str, Any]]) -> dict[str, Window]:
    """The live traffic's records by version (pure). A shadow's copies are not live traffic: they stay out of drift
    and latency (``shadow_comparison`` judges them)."""
    out: dict[str, Window] = defaultdict(Window)
    for rec in records:
        if rec.get("track") == SHADOW:
            continue
        try:
            w = out[str(rec.get("version") or "")]
            rows, outputs = rec.get("inputs") or [], rec.get("outputs") or []
            if isinstance(rows, list) and rows and isinstance(rows[0], list) and len(rows) == len(outputs):
                w.rows.extend(rows)
                w.outputs.extend(outputs)
            w.latencies.append(float(rec["latency_ms"]))
        except (ValueError, KeyError, TypeError):
            continue
    return dict(out)


class Monitor:
    def __init__(self, redis: Any, ms: MonitorSettings, targets: Targets, alerts: Any, profiles: Profiles,
                 quality: Quality, conditions: ConditionSink | None = None, history: Any = None,
                 existing: Existing | None = None, series: Any = None):
        self.redis = redis
        self.ms = ms
        self.targets = targets
        self.alerts = alerts
        self.profiles = profiles
        self.quality = quality
        self.conditions = conditions
        self.history = history
        self.existing = existing
        self.series = series  # a monitoring.series.Series: one point per deployment after its evaluation
        self.owner = f"{os.uname().nodename}-{os.getpid()}-{os.urandom(4).hex()}"
        self.leader = False
        self.http = httpx.AsyncClient(timeout=ms.pull_timeout_seconds)
        self._task: asyncio.Task | None = None
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._last_eval = 0.0
        self._last_history = time.monotonic()
        self.last_error: str | None = None

    # -- keys ----------------------------------------------------------------------------------------
    def k(self, *parts: str) -> str:
        return ":".join([self.ms.key_prefix, *parts])

    def stream_key(self, t: Target | str) -> str:
        return payload_stream(self.ms, t if isinstance(t, str) else t.key)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mlstack-monitor")

    async def stop(self) -> None:
        await cancel_all([self._task])
        with contextlib.suppress(Exception):
            if self.leader:
                await self._release(keys=[self.k("leader")], args=[self.owner])
        await self.http.aclose()

    async def _hold_lease(self) -> bool:
        px = int(self.ms.lease_seconds * 1000)
        if await self.redis.set(self.k("leader"), self.owner, nx=True, px=px):
            return True
        return bool(await self._renew(keys=[self.k("leader")], args=[self.owner, px]))

    async def _run(self) -> None:
        while True:
            try:
                was = self.leader
                try:
                    self.leader = await self._hold_lease()
                except Exception:  # a lease it cannot renew is not one it holds (it may expire meanwhile)
                    self.leader = False
                    raise
                if self.leader != was:
                    log.info("monitor %s %s the lease", self.owner, "holds" if self.leader else "lost")
                if self.leader:
                    await self.tick()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis or a server away: try again next round
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                log.warning("monitor round failed: %s", self.last_error)
            await asyncio.sleep(self.ms.drain_seconds)

    async def tick(self, evaluate: bool | None = None) -> None:
        """One round: drain every watched deployment; evaluate when due (or when ``evaluate`` says so)."""
        targets = [t for t in await self.targets() if t.spec.effective_monitoring.sample_rate > 0]
        if targets:
            await self.redis.sadd(self.k("watched"), *(t.key for t in targets))
        await asyncio.gather(*(self.drain(t) for t in targets))
        now = time.monotonic()
        if evaluate or (evaluate is None and now - self._last_eval >= self.ms.evaluate_seconds):
            self._last_eval = now
            if self.existing is not None:
                gone = await self.forget_deleted(await self.existing())
                if self.series is not None and gone:
                    await self.series.forget(gone)
            for t in targets:
                try:
                    summary = await self.evaluate(t)
                except Exception as e:
                    log.warning("monitoring %s: evaluation failed: %s", t.key, e)
                    continue
                if self.series is not None:
                    try:
                        await self.series.record(self, t, summary)
                    except Exception as e:
                        log.warning("monitoring %s: series point not written: %s", t.key, e)
        if self.history is not None and now - self._last_history >= self.ms.history_seconds:
            self._last_history = now
            for t in targets:
                try:
                    await self.history.flush(self, t)
                except Exception as e:
                    log.warning("monitoring %s: history not written: %s", t.key, e)

    async def forget_deleted(self, existing: set[str]) -> list[str]:
        """Drop the Redis state of watched deployments that no longer exist (stream, episodes, stats, cursors,
        condition, feedback buckets); logged request ids expire on their own."""
        gone = [key for key in await self.redis.smembers(self.k("watched")) if key not in existing]
        for key in gone:
            cursors = [f for f in await self.redis.hkeys(self.k("cursors")) if f.startswith(f"{key}|")]
            quality = [k async for k in self.redis.scan_iter(match=self.k("quality", key, "*"), count=500)]
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(self.stream_key(key), state_hash(self.ms, key), stats_hash(self.ms, key), *quality)
            if cursors:
                pipe.hdel(self.k("cursors"), *cursors)
            pipe.hdel(self.k("conditions"), key)
            pipe.srem(self.k("watched"), key)
            await pipe.execute()
            log.info("monitoring %s: deleted, its monitoring state is gone", key)
        return gone

    # -- drain ---------------------------------------------------------------------------------------
    async def drain(self, t: Target) -> int:
        n = 0
        for track, url in t.servers:
            try:
                n += await self._drain_server(t, track, url)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.info("monitoring %s: %s not drained: %s", t.key, url, e)
        return n

    async def _pull(self, url: str, after: int) -> dict[str, Any]:
        r = await self.http.get(f"{url}/v2/monitoring/payloads", params={"after": after,
                                                                          "limit": self.ms.pull_limit})
        r.raise_for_status()
        return r.json()

    async def _drain_server(self, t: Target, track: str, url: str) -> int:
        cursors, field_ = self.k("cursors"), f"{t.key}|{url}"
        after = int(await self.redis.hget(cursors, field_) or 0)
        n = 0
        while True:
            page = await self._pull(url, after)
            if page["next"] < after:  # the server restarted: its sequence starts again
                after = 0
                page = await self._pull(url, 0)
            records = page["records"]
            pipe = self.redis.pipeline(transaction=False)
            stream, ttl = self.stream_key(t), self.ms.request_ttl_seconds
            for rec in records:
                # the track this server plays now (a promoted canary's server becomes stable); a shadow stays one
                if track != SHADOW:
                    rec["track"] = "canary" if rec.get("version") == t.canary_version else track
                else:
                    rec["track"] = SHADOW
                rec["namespace"], rec["deployment"] = t.namespace, t.name
                data = json.dumps(rec, separators=(",", ":"))
                pipe.xadd(stream, {"r": data}, maxlen=self.ms.stream_maxlen, approximate=True)
                if track != SHADOW:  # a shadow's copy has the live request's id: feedback joins the live answer
                    pipe.set(self.quality.request_key(str(rec["id"])), data, ex=ttl)
            stats = stats_hash(self.ms, t.key)
            if records:
                pipe.hincrby(stats, "records", len(records))
            if page.get("missed"):
                pipe.hincrby(stats, "missed", int(page["missed"]))
            pipe.hset(stats, f"dropped|{url}", int(page.get("dropped") or 0))
            pipe.hset(cursors, field_, int(page["next"]))
            await pipe.execute()
            n += len(records)
            after = int(page["next"])
            if len(records) < self.ms.pull_limit:
                return n

    # -- windows -------------------------------------------------------------------------------------
    async def records(self, t: Target | str, seconds: float, now: float | None = None) -> list[dict[str, Any]]:
        return await read_records(self.redis, self.ms, t if isinstance(t, str) else t.key, seconds, now)

    async def window(self, t: Target | str, seconds: float, now: float | None = None,
                     records: list[dict[str, Any]] | None = None) -> dict[str, Window]:
        """The live traffic's records of the last ``seconds`` by version (``records``: read already)."""
        return windows_of(await self.records(t, seconds, now) if records is None else records)

    # -- evaluation ----------------------------------------------------------------------------------
    async def evaluate(self, t: Target) -> dict[str, Any]:
        mon = t.spec.effective_monitoring
        records = await self.records(t, mon.window_seconds)
        windows = await self.window(t, mon.window_seconds, records=records)
        state_key = state_hash(self.ms, t.key)
        state = await self.redis.hgetall(state_key)
        summary: dict[str, Any] = {"drift": {}, "slo": {}}
        for version, w in windows.items():
            summary["drift"][version] = await self._drift(t, version, w, state, state_key)
        summary["slo"] = await self._slos(t, windows, state, state_key)
        summary["shadow"] = shadow_comparison(records)
        await self._shadow_alerts(t, summary["shadow"], state, state_key)
        if summary["shadow"]:
            await self.redis.hset(state_key, SHADOW_LAST, json.dumps(
                {"window_seconds": mon.window_seconds, "versions": summary["shadow"], "ts": time.time()}))
        elif SHADOW_LAST in state:
            await self.redis.hdel(state_key, SHADOW_LAST)
        return summary

    async def _drift(self, t: Target, version: str, w: Window, state: dict[str, str], state_key: str) -> Any:
        mon = t.spec.effective_monitoring
        if len(w.rows) < mon.min_rows:
            return {"rows": len(w.rows), "judged": False}
        profile = await self.profiles.get(t.model, version)
        if profile is None:
            return {"rows": len(w.rows), "judged": False, "reason": "no reference profile"}
        names = list(profile.features)
        rows = np.asarray(w.rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(names):
            return {"rows": len(w.rows), "judged": False, "reason": "rows do not match the profile's features"}
        results = drift.measure(profile, rows, names, np.asarray(w.outputs))
        flagged = drift.drifted(results, mon.psi_threshold, mon.min_rows)
        out = {"rows": len(w.rows), "judged": True, "features": [d.to_dict() for d in results],
               "drifted": [d.name for d in flagged]}
        await self.redis.hset(state_key, f"drift:last|{version}", json.dumps({**out, "ts": time.time()}))
        episode = state.get(f"drift|{version}")
        if flagged and episode is None:
            worst = ", ".join(f"{d.name} (PSI {d.psi:.2f})" for d in flagged[:5])
            await self._emit(DRIFT, "warning", f"ModelDeployment {t.key}: v{version} inputs drifted: {worst}",
                             f"PSI over the last {mon.window_seconds}s ({len(w.rows)} logged rows) against the "
                             f"training profile exceeds {mon.psi_threshold:g}", t, version,
                             {"state": "drifting", "features": [d.to_dict() for d in flagged],
                              "threshold": mon.psi_threshold, "window_seconds": mon.window_seconds,
                              "rows": len(w.rows)})
            await self.redis.hset(state_key, f"drift|{version}", json.dumps([d.name for d in flagged]))
        elif not flagged and episode is not None:
            await self._emit(DRIFT, "info", f"ModelDeployment {t.key}: v{version} inputs back within the profile",
                             f"every PSI is at most {mon.psi_threshold:g} over the last {mon.window_seconds}s "
                             f"({len(w.rows)} logged rows)", t, version,
                             {"state": "recovered", "features": json.loads(episode),
                              "threshold": mon.psi_threshold, "window_seconds": mon.window_seconds,
                              "rows": len(w.rows)})
            await self.redis.hdel(state_key, f"drift|{version}")
        return out

    async def _slos(self, t: Target, windows: dict[str, Window], state: dict[str, str],
                    state_key: str) -> dict[str, Any]:
        mon, alerts = t.spec.effective_monitoring, t.spec.alerts
        results: dict[str, dict[str, Any]] = {}
        lat = [x for w in windows.values() for x in w.latencies]
        if alerts is not None and alerts.max_p99_latency_ms is not None:
            r: dict[str, Any] = {"threshold": alerts.max_p99_latency_ms, "samples": len(lat), "value": None}
            if len(lat) >= self.ms.min_latency_samples:
                p99 = float(np.percentile(lat, 99))
                r.update(value=round(p99, 3), met=p99 <= alerts.max_p99_latency_ms)
            results[LATENCY] = r
        if alerts is not None and alerts.min_accuracy is not None:
            q = await self.quality.window(t.namespace, t.name, mon.window_seconds)
            n, acc = q["total"]["n"], q["total"]["accuracy"]
            r = {"threshold": alerts.min_accuracy, "samples": n, "value": acc}
            if n >= self.ms.min_feedback and acc is not None:
                r["met"] = acc >= alerts.min_accuracy
            results[ACCURACY] = r
        for objective, r in results.items():
            if "met" not in r:
                continue
            breached = state.get(f"slo|{objective}") is not None
            what = (f"p99 latency {r['value']:.1f} ms (max {r['threshold']} ms)" if objective == LATENCY
                    else f"accuracy {r['value']:.3f} (min {r['threshold']:g})")
            data = {"objective": objective, "value": r["value"], "threshold": r["threshold"],
                    "samples": r["samples"], "window_seconds": mon.window_seconds}
            if not r["met"] and not breached:
                await self._emit(SLO, "warning", f"ModelDeployment {t.key} breaches its SLO: {what}",
                                 f"over the last {mon.window_seconds}s ({r['samples']} samples)", t, None,
                                 {**data, "state": "breached"})
                await self.redis.hset(state_key, f"slo|{objective}", json.dumps(r["value"]))
            elif r["met"] and breached:
                await self._emit(SLO, "info", f"ModelDeployment {t.key} meets its SLO again: {what}",
                                 f"over the last {mon.window_seconds}s ({r['samples']} samples)", t, None,
                                 {**data, "state": "recovered"})
                await self.redis.hdel(state_key, f"slo|{objective}")
        if self.conditions is not None and results:
            await self.conditions(t, slo_condition(results))
        return results

    async def _shadow_alerts(self, t: Target, shadows: dict[str, dict[str, Any]], state: dict[str, str],
                             state_key: str) -> None:
        """``spec.shadow.minAgreement``: one ``deployment.shadow`` alert when a shadow version's agreement with the
        live answers falls below it (judged from ``min_shadow_rows`` compared rows on), one when it is back. An
        episode whose shadow or threshold went away is closed without an alert."""
        mon, spec = t.spec.effective_monitoring, t.spec.shadow
        minimum = spec.min_agreement if spec is not None else None
        open_ = {f.split("|", 1)[1] for f in state if f.startswith("shadow|")}
        judged: set[str] = set()
        for version, r in shadows.items() if minimum is not None else ():
            if r.get("agreement") is None or r["rows"] < self.ms.min_shadow_rows:
                continue
            judged.add(version)
            below = r["agreement"] < minimum
            what = (f"shadow v{version} agrees with the live answers on {r['agreement']:.1%} of {r['rows']} rows "
                    f"(min {minimum:.1%})")
            data = {"agreement": r["agreement"], "threshold": minimum, "rows": r["rows"], "compared": r["compared"],
                    "live_versions": r["live_versions"], "window_seconds": mon.window_seconds}
            if "mean_abs_diff" in r:
                data["mean_abs_diff"] = r["mean_abs_diff"]
            if below and version not in open_:
                await self._emit(DEPLOYMENT_SHADOW, "warning", f"ModelDeployment {t.key}: {what}",
                                 f"over the last {mon.window_seconds}s", t, version, {**data, "state": "disagrees"})
                await self.redis.hset(state_key, f"shadow|{version}", json.dumps(r["agreement"]))
            elif not below and version in open_:
                await self._emit(DEPLOYMENT_SHADOW, "info", f"ModelDeployment {t.key}: {what} again",
                                 f"over the last {mon.window_seconds}s", t, version, {**data, "state": "agrees"})
                await self.redis.hdel(state_key, f"shadow|{version}")
        gone = [v for v in open_ if v not in judged and (minimum is None or v not in shadows)]
        if gone:
            await self.redis.hdel(state_key, *(f"shadow|{v}" for v in gone))

    async def _emit(self, type_: str, severity: str, title: str, message: str, t: Target, version: str | None,
                    data: dict[str, Any]) -> None:
        try:
            await self.alerts.emit(type_, severity, title, message, namespace=t.namespace, deployment=t.name,
                                   model=t.model, version=version, data=data)
        except Exception as e:  # best effort, like every alert producer; the episode state still moves on
            log.warning("%s alert not sent: %s", type_, e)


def _is_label(v: Any) -> bool:
    return isinstance(v, (str, bool, int)) or (isinstance(v, float) and v.is_integer())


def shadow_comparison(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per shadow version: its copies joined to the live answers of the same request ids (the stable server logs
    every request it mirrors). Labels (strings, integers): ``agreement``, the share of rows where both answered
    alike; numbers: ``mean_abs_diff`` (and ``agreement`` of exactly equal rows). ``requests``: the shadow's logged
    copies; ``compared``: those with a live answer in the window; ``rows``: the rows compared."""
    live: dict[str, dict[str, Any]] = {}
    shadows: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("track") == SHADOW:
            shadows.append(rec)
        else:
            live[str(rec.get("id"))] = rec
    out: dict[str, dict[str, Any]] = {}
    acc: dict[str, dict[str, Any]] = {}
    for rec in shadows:
        version = str(rec.get("version") or "")
        a = acc.setdefault(version, {"requests": 0, "compared": 0, "pairs": [], "live": set()})
        a["requests"] += 1
        other = live.get(str(rec.get("id")))
        ys, ls = rec.get("outputs"), (other or {}).get("outputs")
        if other is None or not isinstance(ys, list) or not isinstance(ls, list):
            continue
        a["compared"] += 1
        a["live"].add(str(other.get("version") or ""))
        a["pairs"].extend(zip(ls, ys, strict=False))
    for version, a in acc.items():
        pairs = a["pairs"]
        r: dict[str, Any] = {"requests": a["requests"], "compared": a["compared"], "rows": len(pairs),
                             "live_versions": sorted(a["live"]), "kind": None, "agreement": None}
        if pairs:
            labels = all(_is_label(x) and _is_label(y) for x, y in pairs)
            r["kind"] = "classification" if labels else "regression"
            r["agreement"] = round(sum(1 for x, y in pairs if x == y) / len(pairs), 6)
            if not labels:
                try:
                    diff = np.abs(np.asarray([x for x, _ in pairs], dtype=float)
                                  - np.asarray([y for _, y in pairs], dtype=float))
                    r["mean_abs_diff"] = round(float(diff.mean()), 6)
                except (TypeError, ValueError):  # not numbers either (nested outputs): agreement only
                    r["kind"] = "other"
        out[version] = r
    return out


def slo_condition(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``SLOMet`` condition (without times) from the objectives' results."""
    judged = {k: r for k, r in results.items() if "met" in r}
    breached = [k for k, r in judged.items() if not r["met"]]
    parts = []
    for k, r in results.items():
        if "met" not in r:
            parts.append(f"{k}: not enough samples ({r['samples']})")
        elif k == LATENCY:
            parts.append(f"p99 latency {r['value']:.1f} ms {'>' if not r['met'] else '<='} {r['threshold']} ms")
        else:
            parts.append(f"accuracy {r['value']:.3f} {'<' if not r['met'] else '>='} {r['threshold']:g}")
    message = "; ".join(parts)
    if breached:
        reason = ",".join("P99LatencyAboveMax" if k == LATENCY else "AccuracyBelowMin" for k in breached)
        return {"type": "SLOMet", "status": "False", "reason": reason, "message": message}
    if judged:
        return {"type": "SLOMet", "status": "True", "reason": "ObjectivesMet", "message": message}
    return {"type": "SLOMet", "status": "Unknown", "reason": "NotEnoughData", "message": message}
