"""Local mode: ModelDeployments served on this machine, with the operator's status semantics (the supervisor).

* ``server: onnx`` -> one ``mlstack serve`` process (replicas capped at
  ``deployments_local_max_replicas``, 1 by default; the Admitted condition says so);
* ``server: rayserve`` -> an application in local Ray Serve (``mlstack.serving.rayserve:build_app``,
  route prefix ``/<namespace>/<name>``, fractional CPUs per replica);
* ``runtime: vm`` -> 422: it needs a cluster with KubeVirt.

The children that serve live in ``local_children``; ``/inference`` routing to them in ``local_routing``.

Each deployment has one supervising task: resolve the model (alias -> version; unknown model ->
``Failed``/``ModelNotFound``, re-checked on a slow timer), start the child, report ``Ready`` with the
URL, then watch it (a dead process is restarted; a moved alias rolls to the new version). Status is
computed by ``mlstack_operator.status.compute``, so phases and conditions match the operator's.

A moved alias (``PUT /models/{name}/aliases/{alias}`` wakes the deployments of that model at once;
a promotion by a training job is seen by the next re-resolution, every ``deployments_resolve_seconds``,
through the registry's shared cache, so many deployments of one model cost one MLflow call) rolls the
deployment without a gap: the new version's server starts beside the old one, ``status.url`` and
``status.resolvedVersion`` switch once it is ready (the phase stays ``Ready``), then the old one is
stopped gracefully (in-flight requests finish); a ``deployment.rolled`` alert names both versions.

Records live in a Redis hash (``namespace/name`` -> JSON object incl. status): reads come from
Redis and an API restart re-creates every recorded deployment. Phase changes emit
``deployment.phase`` alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from mlstack.aio import cancel_all
from mlstack.deployments.local_children import RATE_ENV, Canary, Child, ProcessChild, RayServe, RayServeChild, Shadow
from mlstack.deployments.schemas import DeploymentView, abort_spec, new_object, promote_spec, view, views
from mlstack.deployments.settings import DeploymentSettings
from mlstack.errors import Conflict, InvalidInput, NotFound, Unavailable
from mlstack.rayclient import RayClient
from mlstack.registry import CHAMPION
from mlstack.settings import Settings
from mlstack_operator.contract import ModelDeploymentSpec, Phase, Runtime, Server
from mlstack_operator.status import ChildState, Inputs, compute, essential, now_rfc3339, set_condition

log = logging.getLogger(__name__)

SEVERITY = {Phase.Ready: "info", Phase.Deploying: "info", Phase.Pending: "info", Phase.Queued: "info",
            Phase.Degraded: "warning", Phase.Failed: "error"}


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


@dataclass
class Entry:
    obj: dict[str, Any]
    spec: ModelDeploymentSpec
    child: Child
    task: asyncio.Task | None = None
    deleted: bool = False
    notes: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when the model's alias moved
    rolling_to: str | None = None  # the version a roll is starting beside the one that serves

    @property
    def namespace(self) -> str:
        return self.obj["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]


class LocalDeployments:
    def __init__(self, settings: Settings, ds: DeploymentSettings, redis: Any, registry: Any, alerts: Any,
                 ray: RayClient, reserved_ports: set[int] | None = None):
        self.settings = settings
        self.ds = ds
        self.redis = redis
        self.registry = registry
        self.alerts = alerts
        self.rayserve = RayServe(ds, ray)
        self._entries: dict[str, Entry] = {}
        self._ports: set[int] = reserved_ports if reserved_ports is not None else set()
        self._lock = asyncio.Lock()
        self.conditions_key: str | None = None  # Redis hash of conditions others own (the monitor's SLOMet)

    @property
    def default_namespace(self) -> str:
        return self.ds.deployments_namespace

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Re-create every recorded deployment (an API restart loses nothing)."""
        raw = await self.redis.hgetall(self.ds.deployments_redis_key)
        for key, value in sorted(raw.items()):
            try:
                obj = json.loads(value)
                spec = ModelDeploymentSpec.model_validate(obj["spec"])
            except (ValueError, KeyError) as e:
                log.error("dropping unreadable local ModelDeployment %s: %s", key, e)
                continue
            self._launch(obj, spec)
        if self._entries:
            log.info("re-creating %d local ModelDeployment(s)", len(self._entries))

    async def stop(self) -> None:
        """API shutdown: stop serving but keep the records (they come back with the next start)."""
        entries, self._entries = list(self._entries.values()), {}
        await cancel_all(e.task for e in entries)
        # model server processes stop now; Ray Serve applications go down with the local Ray (the API's
        # RayClient shuts it down) or, on a Ray cluster, keep serving until the next start
        # re-applies them. Nothing here waits on Ray, which may already be stopping with the API.
        await asyncio.gather(*(e.child.stop() for e in entries if isinstance(e.child, ProcessChild)),
                             return_exceptions=True)

    # -- API ---------------------------------------------------------------------------------------
    async def create(self, namespace: str, name: str, spec: ModelDeploymentSpec) -> DeploymentView:
        if spec.runtime == Runtime.vm:
            raise InvalidInput("runtime: vm needs a Kubernetes cluster with KubeVirt (MLSTACK_MODE=cluster); "
                               "local mode serves runtime: pod (server: onnx or rayserve)")
        obj = new_object(namespace, name, spec, local=True)
        obj["status"] = compute(Inputs(generation=1), None)
        async with self._lock:
            if not await self.redis.hsetnx(self.ds.deployments_redis_key, _key(namespace, name), json.dumps(obj)):
                raise Conflict(f"ModelDeployment {namespace}/{name} already exists")
            self._launch(obj, spec)
        return view(obj)

    async def list(self, namespace: str | None) -> list[DeploymentView]:
        raw = await self.redis.hgetall(self.ds.deployments_redis_key)
        objs = [json.loads(v) for k, v in sorted(raw.items()) if namespace is None or k.startswith(namespace + "/")]
        extra = await self.redis.hgetall(self.conditions_key) if self.conditions_key and objs else {}
        return views([_with_condition(o, extra.get(_key(o["metadata"]["namespace"], o["metadata"]["name"])))
                      for o in objs])

    async def get(self, namespace: str, name: str) -> DeploymentView:
        raw = await self.redis.hget(self.ds.deployments_redis_key, _key(namespace, name))
        if raw is None:
            raise NotFound(f"ModelDeployment {namespace}/{name} not found")
        extra = await self.redis.hget(self.conditions_key, _key(namespace, name)) if self.conditions_key else None
        return view(_with_condition(json.loads(raw), extra))

    def monitor_targets(self) -> list[tuple[str, str, ModelDeploymentSpec, list[tuple[str, str]], str | None]]:
        """``(namespace, name, spec, [(track, url)], canary version)`` of the Ready deployments: the model servers
        the monitor drains (``mlstack serve``: stable first, then the canary's and the shadow's own servers; Ray
        Serve: the application's URL, whose collector holds every replica's records)."""
        out = []
        for e in list(self._entries.values()):
            st = e.obj.get("status") or {}
            if st.get("phase") != Phase.Ready:
                continue
            if isinstance(e.child, RayServeChild):  # one collector per application, behind any replica
                if e.child.sample_rate > 0:
                    out.append((e.namespace, e.name, e.spec, [("stable", e.child.url)], st.get("canaryVersion")))
                continue
            if not isinstance(e.child, ProcessChild):
                continue
            servers = []
            for pool, version, track in e.child._using:
                if (srv := pool.get(e.spec.model.name, version)) is not None:
                    servers.append((track, srv.url))
            out.append((e.namespace, e.name, e.spec, servers, st.get("canaryVersion")))
        return out

    async def delete(self, namespace: str, name: str) -> None:
        key = _key(namespace, name)
        async with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None and not await self.redis.hexists(self.ds.deployments_redis_key, key):
                raise NotFound(f"ModelDeployment {namespace}/{name} not found")
            if entry is not None:
                entry.deleted = True
                await cancel_all([entry.task])
                await entry.child.stop()
            await self.redis.hdel(self.ds.deployments_redis_key, key)
        log.info("deleted local ModelDeployment %s", key)

    async def promote_canary(self, namespace: str, name: str) -> DeploymentView:
        """The canary becomes stable (``model.version`` = the canary's version, no canary): the canary's server is
        already running, so traffic switches to it at once and the old stable one stops."""
        return await self._update_spec(namespace, name, promote_spec)

    async def abort_canary(self, namespace: str, name: str) -> DeploymentView:
        """The canary is removed: a plain server of the stable version takes all traffic, then the canary stops."""
        return await self._update_spec(namespace, name, abort_spec)

    async def _update_spec(self, namespace: str, name: str, change) -> DeploymentView:
        key = _key(namespace, name)
        async with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                raise NotFound(f"ModelDeployment {namespace}/{name} not found")
            spec = change(entry.spec, f"{namespace}/{name}")
            meta = entry.obj["metadata"]
            meta["generation"] = int(meta.get("generation") or 1) + 1
            entry.obj["spec"] = spec.to_k8s()
            entry.spec = spec
            await self.redis.hset(self.ds.deployments_redis_key, key, json.dumps(entry.obj))
            entry.wake.set()  # the supervisor rolls to the new spec now
            return view(entry.obj)

    def alias_moved(self, model: str) -> None:
        """An alias of ``model`` moved (the API moved it): its deployments re-resolve now, not at the next tick."""
        for e in self._entries.values():
            if e.spec.model.name == model and (e.spec.model.alias is not None or (
                    e.spec.shadow is not None and e.spec.shadow.alias is not None)):
                e.wake.set()

    def entries(self) -> list[Entry]:
        """The deployments this process supervises (what ``/inference`` routing looks at)."""
        return list(self._entries.values())

    # -- supervision ---------------------------------------------------------------------------------
    def _make_child(self, namespace: str, name: str, spec: ModelDeploymentSpec) -> Child:
        rate = spec.effective_monitoring.sample_rate  # the monitor pulls what the servers sample
        if spec.server == Server.rayserve:
            return RayServeChild(self.rayserve, namespace, name, spec.model.name, rate)
        return ProcessChild(self.settings, namespace, name, spec.model.name, self._ports,
                            env={RATE_ENV: f"{rate:g}"})

    def _launch(self, obj: dict[str, Any], spec: ModelDeploymentSpec) -> None:
        meta = obj["metadata"]
        entry = Entry(obj, spec, self._make_child(meta["namespace"], meta["name"], spec))
        entry.notes = self._notes(spec)
        self._entries[_key(entry.namespace, entry.name)] = entry
        entry.task = asyncio.create_task(self._supervise(entry), name=f"deployment-{entry.namespace}-{entry.name}")

    def _replicas(self, spec: ModelDeploymentSpec) -> int:
        wanted = spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
        return min(wanted, self.ds.deployments_local_max_replicas) if wanted else 0

    def _notes(self, spec: ModelDeploymentSpec) -> list[str]:
        notes = ["local mode: served on this machine, no ResourceQuota"]
        wanted = spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
        if wanted > self.ds.deployments_local_max_replicas:
            notes.append(f"replicas capped at {self.ds.deployments_local_max_replicas} locally (spec asks {wanted})")
        if spec.autoscaling:
            notes.append("autoscaling is not applied locally")
        if spec.canary:
            notes.append(f"canary v{spec.canary.version} gets exactly {spec.canary.traffic_percent}% of requests "
                         f"(forwarded by the stable server)")
        if spec.shadow:
            which = f"v{spec.shadow.version}" if spec.shadow.version else f"@{spec.shadow.alias}"
            notes.append(f"shadow {which} gets a copy of {spec.shadow.percent:g}% of requests (mirrored by the "
                         f"stable server; its answers are logged, never returned)")
        return notes

    async def _resolve(self, spec: ModelDeploymentSpec) -> str:
        m = spec.model
        return await asyncio.to_thread(self.registry.resolve, m.name, m.version, m.alias or CHAMPION)

    async def _resolve_shadow(self, entry: Entry, version: str) -> Shadow | None:
        """``spec.shadow`` as (version, percent), None without one or when it is the serving version. A shadow
        that cannot be resolved does not stop serving: the deployment runs without it (said in its notes)."""
        sh = entry.spec.shadow
        if sh is None:
            return None
        try:
            v = sh.version or await asyncio.to_thread(self.registry.resolve, entry.spec.model.name, None, sh.alias)
        except (NotFound, Unavailable, InvalidInput) as e:
            entry.notes.append(f"shadow not running: {e.message}")
            return None
        return None if v == version else (v, sh.percent)

    async def _set(self, entry: Entry, inputs: Inputs, *, failed: tuple[str, str] | None = None) -> None:
        """Compute and store the next status; emit an alert when the phase changes."""
        if entry.deleted:
            return
        prev = entry.obj.get("status") or {}
        new = compute(inputs, prev)
        if failed is not None:  # the child could not start: Failed with the reason on the Ready condition
            conds = new["conditions"]
            set_condition(conds, "Ready", "False", failed[0], failed[1], now_rfc3339(), inputs.generation)
            new["phase"] = Phase.Failed.value
        if essential(new) == essential(prev):
            return
        entry.obj["status"] = new
        await self.redis.hset(self.ds.deployments_redis_key, _key(entry.namespace, entry.name), json.dumps(entry.obj))
        old_phase, phase = prev.get("phase"), new["phase"]
        if old_phase != phase:
            await self._alert(entry, old_phase, new)

    async def _alert(self, entry: Entry, previous: str | None, status: dict[str, Any]) -> None:
        phase = Phase(status["phase"])
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        reason, message = (ready["reason"], ready["message"]) if ready else (phase.value, "")
        if phase == Phase.Ready:
            message = f"serving {entry.spec.model.name} v{status.get('resolvedVersion')} at {status.get('url')}"
        try:
            await self.alerts.emit(
                "deployment.phase", SEVERITY.get(phase, "info"),
                f"ModelDeployment {entry.namespace}/{entry.name} is {phase.value}", message,
                namespace=entry.namespace, deployment=entry.name, model=entry.spec.model.name,
                version=status.get("resolvedVersion"),
                data={"phase": phase.value, "previous": previous, "reason": reason, "mode": "local"})
        except Exception as e:  # alerts are best effort; serving goes on
            log.warning("deployment.phase alert not sent: %s", e)

    async def _rolled(self, entry: Entry, previous: str, status: dict[str, Any]) -> None:
        version = status.get("resolvedVersion")
        try:
            await self.alerts.emit(
                "deployment.rolled", "info",
                f"ModelDeployment {entry.namespace}/{entry.name} rolled {entry.spec.model.name} "
                f"v{previous} -> v{version}",
                (f"@{entry.spec.model.alias} moved" if entry.spec.model.alias else "spec changed (canary promoted)")
                + f"; serving v{version} at {status.get('url')}",
                namespace=entry.namespace, deployment=entry.name, model=entry.spec.model.name, version=version,
                data={"from": previous, "to": version, "alias": entry.spec.model.alias, "mode": "local"})
        except Exception as e:  # alerts are best effort; serving goes on
            log.warning("deployment.rolled alert not sent: %s", e)

    async def _supervise(self, entry: Entry) -> None:
        backoff, child_failed = 1.0, False
        # what is Ready now: (version, canary, shadow); a roll (alias moved, canary promoted or aborted) keeps it
        # serving until the next one is
        serving: tuple[str, Canary | None, Shadow | None] | None = None
        name = f"{entry.child.kind}/{entry.namespace}--{entry.name}"
        while True:
            spec, gen = entry.spec, int(entry.obj["metadata"].get("generation") or 1)
            entry.notes = self._notes(spec)
            notes = "; ".join(entry.notes)
            replicas = self._replicas(spec)
            try:
                version = await self._resolve(spec)
            except NotFound as e:
                await self._set(entry, Inputs(gen, admitted=True, admission_message=notes,
                                              resolve_error=("ModelNotFound", e.message)))
                await asyncio.sleep(self.ds.deployments_retry_seconds)
                continue
            except (Unavailable, InvalidInput) as e:
                await self._set(entry, Inputs(gen, admitted=True, admission_message=notes,
                                              resolve_error=("RegistryUnavailable", e.message)))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.ds.deployments_retry_seconds)
                continue
            canary: Canary | None = None
            if spec.canary is not None and spec.canary.version != version:  # an alias may resolve to it
                canary = (spec.canary.version, spec.canary.traffic_percent)
            shadow = await self._resolve_shadow(entry, version)
            notes = "; ".join(entry.notes)
            config = (version, canary, shadow)
            base = dict(generation=gen, admitted=True, admission_message=notes, resolved_version=version,
                        canary_version=canary[0] if canary else None, shadow_version=shadow[0] if shadow else None)
            if replicas == 0:
                await entry.child.stop()
                serving = None
                await self._set(entry, Inputs(**base, children=(ChildState(entry.child.kind, name, 0, 0, True),)))
                await self._changed(entry, version, gen, shadow)
                continue
            rolling = serving is not None and serving != config
            # after a child failure stay Failed until it is Ready again (no alert flapping); a roll stays Ready
            # on the old version until the new one is
            if not child_failed and not rolling:
                await self._set(entry, Inputs(**base, children=(ChildState(entry.child.kind, name, replicas, 0,
                                                                           False),)))
            entry.rolling_to = version if rolling else None
            try:
                url = await entry.child.start(version, replicas, canary, shadow)
            except Unavailable as e:
                entry.rolling_to = None
                if rolling:  # the old version keeps serving; try again after the backoff
                    log.warning("local ModelDeployment %s/%s: v%s did not start, v%s keeps serving: %s",
                                entry.namespace, entry.name, version, serving[0] if serving else None, e.message)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.ds.deployments_retry_seconds)
                    continue
                await self._set(entry, Inputs(**base, children=(ChildState(entry.child.kind, name, replicas, 0,
                                                                           False),)),
                                failed=("ServerFailed", e.message))
                child_failed = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.ds.deployments_retry_seconds)
                continue
            backoff, child_failed = 1.0, False
            ready = ChildState(entry.child.kind, name, replicas, replicas, True)
            await self._set(entry, Inputs(**base, url=url, children=(ready,)))  # traffic switches here
            entry.rolling_to = None
            await entry.child.retire(version)  # whatever this configuration does not use
            if rolling and serving is not None:
                log.info("local ModelDeployment %s/%s rolled %s -> %s", entry.namespace, entry.name, serving, config)
                if serving[0] != version:
                    await self._rolled(entry, serving[0], entry.obj.get("status") or {})
            serving = config
            exit_task = asyncio.create_task(entry.child.wait_exit())
            moved_task = asyncio.create_task(self._changed(entry, version, gen, shadow))
            try:
                done, _ = await asyncio.wait({exit_task, moved_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_all([exit_task, moved_task])
            if exit_task in done and not exit_task.cancelled() and exit_task.exception() is None:
                reason = exit_task.result()
                log.warning("local ModelDeployment %s/%s: %s; restarting", entry.namespace, entry.name, reason)
                await self._set(entry, Inputs(**base, children=(ChildState(entry.child.kind, name, replicas, 0,
                                                                           False),)),
                                failed=("ServerExited", reason))
                child_failed, serving = True, None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.ds.deployments_retry_seconds)
            else:
                log.info("local ModelDeployment %s/%s: spec or alias changed; rolling", entry.namespace, entry.name)

    async def _changed(self, entry: Entry, version: str, generation: int, shadow: Shadow | None = None) -> bool:
        """Wait until the spec changed (canary promoted or aborted) or the alias it (or its shadow) follows points
        at another version (never returns for an unchanged spec pinned to versions)."""
        spec = entry.spec
        while True:
            with contextlib.suppress(TimeoutError):  # woken by alias_moved or a spec change, else the next tick
                await asyncio.wait_for(entry.wake.wait(), self.ds.deployments_resolve_seconds)
            entry.wake.clear()
            if int(entry.obj["metadata"].get("generation") or 1) != generation:
                return True
            try:
                if spec.model.alias is not None and await self._resolve(spec) != version:
                    return True
                if spec.shadow is not None and spec.shadow.alias is not None:
                    now = await asyncio.to_thread(self.registry.resolve, spec.model.name, None, spec.shadow.alias)
                    if now != (shadow[0] if shadow else version):
                        return True
            except (NotFound, Unavailable, InvalidInput):
                continue  # keep serving what runs; the next resolution decides


def _with_condition(obj: dict[str, Any], extra: str | None) -> dict[str, Any]:
    """The stored object with a condition another component owns (the monitor's ``SLOMet``) in its status."""
    if not extra:
        return obj
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        cond = json.loads(extra)
        status = dict(obj.get("status") or {})
        status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != cond["type"]] + [cond]
        obj = {**obj, "status": status}
    return obj
