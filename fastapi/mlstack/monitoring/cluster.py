"""The monitor's cluster half: targets from the Kubernetes API, the ``SLOMet`` condition into the object's status.

Targets: every ModelDeployment (one cluster-wide list per round); for those with monitoring on, every *pod* behind
its Services ``<name>`` (stable), ``<name>-canary`` and ``<name>-shadow``, read from their EndpointSlices
(``discovery.k8s.io/v1``, label ``kubernetes.io/service-name``; one list per namespace per round): each pod keeps
its own payload ring, so each is drained at ``http://<pod IP>:<http port>`` with its own cursor (draining the
Service would reach a random pod). Only ready endpoints are drained; a pod that went away keeps its cursor until
the deployment is deleted (``Monitor.forget_deleted``). A ``server: rayserve`` deployment is drained at one ready
endpoint of KubeRay's ``<name>-serve-svc`` (port ``serve``): any Serve proxy reaches the application's one payload
collector (``mlstack.serving.rayserve``).

Condition: ``PATCH modeldeployments/status`` (JSON merge patch) carrying the listed object's
``metadata.resourceVersion`` as a precondition and its conditions with only ``SLOMet`` replaced: a merge patch
replaces a list whole, so the precondition makes a concurrent operator write a 409 (retried next round on the
newer object) instead of a lost update; the operator in turn keeps conditions it does not own
(``mlstack_operator.status.with_foreign_conditions``). Written only when the condition differs from the object's.

RBAC (``manifests/monitor/rbac.yaml``): list modeldeployments, patch modeldeployments/status, list
endpointslices. Nothing else: no Secrets, no pods, no writes to the spec.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

from pydantic import ValidationError

from mlstack.errors import Conflict, NotFound
from mlstack.kubeapi import KubeSettings, call
from mlstack.monitoring.monitor import Target
from mlstack.monitoring.settings import MonitorSettings
from mlstack_operator.contract import GROUP, PLURAL, VERSION, ModelDeploymentSpec, Server

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"
TRACKS = (("", "stable"), ("-canary", "canary"), ("-shadow", "shadow"))  # Service name suffix -> track
RAY_SERVE_SUFFIX = "-serve-svc"  # KubeRay's Service in front of a RayService's Serve proxies
CONDITION = "SLOMet"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def pod_urls(slices: list[dict[str, Any]], port_names: tuple[str, ...] = ("http", "serve")) -> dict[str, list[str]]:
    """Service name -> the ready endpoints' ``http://IP:port`` (sorted), from EndpointSlices (pure). The port: the
    one named ``http`` (``mlstack serve``) or ``serve`` (KubeRay's ``<name>-serve-svc``), else the only one."""
    out: dict[str, set[str]] = {}
    for sl in slices:
        service = ((sl.get("metadata") or {}).get("labels") or {}).get(SERVICE_LABEL)
        if not service or sl.get("addressType") not in ("IPv4", "IPv6"):
            continue
        ports = [p for p in sl.get("ports") or [] if p.get("port")]
        port = next((p["port"] for p in ports if p.get("name") in port_names), None)
        if port is None and len(ports) == 1:
            port = ports[0]["port"]
        if port is None:
            continue
        urls = out.setdefault(service, set())
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False or not ep.get("addresses"):
                continue
            ip = ep["addresses"][0]
            urls.add(f"http://[{ip}]:{port}" if sl["addressType"] == "IPv6" else f"http://{ip}:{port}")
    return {k: sorted(v) for k, v in out.items()}


def condition_patch(obj: dict[str, Any], cond: dict[str, Any], now: str) -> dict[str, Any] | None:
    """The merge patch setting ``cond`` as the object's ``SLOMet`` (other conditions as they are), or None when the
    object already says so. ``lastTransitionTime`` kept while the status holds (pure)."""
    conds = list((obj.get("status") or {}).get("conditions") or [])
    old = next((c for c in conds if c.get("type") == CONDITION), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == cond["status"] else None
    new = {**cond, "lastTransitionTime": since or now}
    if old == new:
        return None
    merged = [c for c in conds if c.get("type") != CONDITION] + [new]
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": {"conditions": merged}}


class ClusterTargets:
    """``targets()``, ``existing()`` and ``condition()`` of a ``Monitor`` from the Kubernetes API."""

    def __init__(self, api_client: Any, ks: KubeSettings):
        from kubernetes import client as k8s

        self.custom = k8s.CustomObjectsApi(api_client)
        self.discovery = k8s.DiscoveryV1Api(api_client)
        self.timeout = ks.kube_timeout
        self.objects: dict[str, dict[str, Any]] = {}  # "ns/name" -> the ModelDeployment as last listed

    async def _list(self) -> dict[str, dict[str, Any]]:
        body = await call("list modeldeployments", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                          timeout=self.timeout, raw=True)
        self.objects = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in body.get("items") or []
                        if not o["metadata"].get("deletionTimestamp")}
        return self.objects

    async def existing(self) -> set[str]:
        return set(await self._list()) if not self.objects else set(self.objects)

    async def targets(self) -> list[Target]:
        objects = await self._list()
        watched: dict[str, list[tuple[str, str, ModelDeploymentSpec, dict[str, Any]]]] = {}
        for o in objects.values():
            meta = o["metadata"]
            try:
                spec = ModelDeploymentSpec.model_validate(o.get("spec") or {})
            except ValidationError:
                continue  # the operator reports an invalid spec on the object
            if spec.effective_monitoring.sample_rate > 0:
                watched.setdefault(meta["namespace"], []).append((meta["namespace"], meta["name"], spec, o))
        out: list[Target] = []
        for ns, items in watched.items():
            services = [f"{name}{suffix}" for _, name, _, _ in items for suffix in (*(x for x, _ in TRACKS),
                                                                                     RAY_SERVE_SUFFIX)]
            body = await call(f"list endpointslices in {ns}", self.discovery.list_namespaced_endpoint_slice, ns,
                              label_selector=f"{SERVICE_LABEL} in ({','.join(services)})", timeout=self.timeout,
                              raw=True)
            urls = pod_urls(body.get("items") or [])
            for _, name, spec, o in items:
                if spec.server == Server.rayserve:  # one collector behind every Serve proxy: one of them will do
                    servers = tuple(("stable", url) for url in urls.get(f"{name}{RAY_SERVE_SUFFIX}", [])[:1])
                else:
                    servers = tuple((track, url) for suffix, track in TRACKS
                                    for url in urls.get(f"{name}{suffix}", []))
                out.append(Target(ns, name, spec, servers, (o.get("status") or {}).get("canaryVersion")))
        return out

    async def condition(self, t: Target, cond: dict[str, Any]) -> None:
        obj = self.objects.get(t.key)
        if obj is None:
            return
        patch = condition_patch(obj, cond, now_rfc3339())
        if patch is None:
            return
        try:
            updated = await call(f"patch modeldeployments/{t.name}/status",
                                 self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, t.namespace,
                                 PLURAL, t.name, patch, timeout=self.timeout, raw=True)
        except (Conflict, NotFound) as e:  # changed (the operator wrote) or deleted meanwhile: next round
            log.info("monitoring %s: SLOMet not written this round: %s", t.key, e)
            return
        if updated.get("metadata"):
            self.objects[t.key] = updated


# -- the ``mlstack monitor`` process ---------------------------------------------------------------------------


class MonitorMetrics:
    """``mlstack_monitor_*`` on the monitor's /metrics port (its own registry: nothing else leaks in)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.leader = Gauge("mlstack_monitor_leader", "1 while this monitor holds the Redis lease (does the work)",
                            registry=r)
        self.rounds = Counter("mlstack_monitor_rounds_total", "drain rounds by result (ok, error)", ["result"],
                              registry=r)
        self.round_seconds = Histogram("mlstack_monitor_round_duration_seconds", "time of one drain round "
                                       "(every watched model server pulled, evaluation when due)", registry=r,
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.records = Counter("mlstack_monitor_records_total", "sampled request records drained from the model "
                               "servers", ["namespace", "deployment"], registry=r)
        self.pull_errors = Counter("mlstack_monitor_pull_errors_total", "model server pulls that failed",
                                   ["namespace", "deployment"], registry=r)
        self.servers = Gauge("mlstack_monitor_model_servers", "model server pods drained in the last round",
                             ["namespace", "deployment", "track"], registry=r)
        self.slo_met = Gauge("mlstack_monitor_slo_met", "the SLOMet condition: 1 True, 0 False, -1 Unknown",
                             ["namespace", "deployment"], registry=r)


def instrumented(metrics: MonitorMetrics, base: type) -> type:
    """A ``Monitor`` subclass counting what it does (the monitor's code stays free of metrics plumbing)."""

    class Instrumented(base):  # type: ignore[misc, valid-type]
        async def tick(self, evaluate: bool | None = None) -> None:
            metrics.leader.set(1)
            with metrics.round_seconds.time():
                try:
                    await super().tick(evaluate)
                except Exception:
                    metrics.rounds.labels("error").inc()
                    raise
            metrics.rounds.labels("ok").inc()

        async def drain(self, t: Target) -> int:
            for _, track in TRACKS:
                metrics.servers.labels(t.namespace, t.name, track).set(sum(1 for tr, _ in t.servers if tr == track))
            n = await super().drain(t)
            metrics.records.labels(t.namespace, t.name).inc(n)
            return n

        async def _drain_server(self, t: Target, track: str, url: str) -> int:
            try:
                return await super()._drain_server(t, track, url)
            except Exception:
                metrics.pull_errors.labels(t.namespace, t.name).inc()
                raise

    return Instrumented


async def serve(ms: MonitorSettings, metrics_host: str, metrics_port: int) -> None:
    """Run the monitor until SIGTERM/SIGINT: Redis, alerts, MLflow profiles, the Kubernetes API. ``ms``: its
    settings (``mlstack monitor`` reads them once); the other sections are built here, once."""
    import asyncio
    import signal

    import redis.asyncio as aioredis
    from prometheus_client import start_http_server

    from mlstack.alerts.settings import AlertSettings
    from mlstack.alerts.sink import RedisStreamSink
    from mlstack.kubeapi import KubeSettings, connect
    from mlstack.monitoring.monitor import Monitor, Profiles
    from mlstack.monitoring.quality import Quality
    from mlstack.monitoring.series import Series, SeriesSettings
    from mlstack.registry import Registry
    from mlstack.settings import Settings

    # the monitor's settings, each section built once here (its own composition root)
    settings, ks = Settings(), KubeSettings()
    metrics = MonitorMetrics()
    start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
    redis = aioredis.from_url(settings.redis_url, decode_responses=True, health_check_interval=10)
    alerts = RedisStreamSink(redis, AlertSettings())
    api_client = connect(ks)
    kube = ClusterTargets(api_client, ks)

    async def condition(t: Target, cond: dict[str, Any]) -> None:
        metrics.slo_met.labels(t.namespace, t.name).set({"True": 1, "False": 0}.get(cond["status"], -1))
        await kube.condition(t, cond)

    history = None
    if ms.history_enabled:
        from mlstack.monitoring.history import History

        history = History.from_settings(settings, ms)
    series = Series(redis, ms.key_prefix, SeriesSettings())
    cls = instrumented(metrics, Monitor)
    monitor = cls(redis, ms, kube.targets, alerts, Profiles(Registry.from_settings(settings), ms),
                  Quality(redis, ms), condition, history, kube.existing, series if series.ss.enabled else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    monitor.start()
    log.info("monitor %s: metrics on %s:%d, draining every %gs", monitor.owner, metrics_host, metrics_port,
             ms.drain_seconds)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ms.drain_seconds)
            metrics.leader.set(1 if monitor.leader else 0)
    finally:
        await monitor.stop()
        await series.aclose()
        await alerts.aclose()
        await redis.aclose()
        api_client.close()
