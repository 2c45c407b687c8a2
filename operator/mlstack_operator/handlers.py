"""The operator: thin handlers; the work is in builders, admission and status.

kopf runs the process (start-up/clean-up, login, the liveness probe, standalone mode: no peering) and watches
namespaces; everything else comes from raw watches (``kube.Reflector``: one list+watch per kind, parsed with
orjson, no per-event deep copies, indices of our own), because kopf's per-event processing was most of the
operator's CPU (bench/operator.py).

* ``mdep_event`` (every ModelDeployment event, from its Reflector; keeps the admission index; a reconcile when
  ``metadata.generation`` is one not handled yet: first sight, at start-up, and every spec change; one worker
  per object, in order): validate -> admit -> resolve the model -> build,
  adopt, create-if-absent / patch-if-different the children, delete the ones the spec no longer wants ->
  publish the status. No kopf change tracking (diff base, progress annotations, a PATCH per change).
* ``child_event`` (one raw watch per child kind, ``kube.Reflector``, not kopf: kopf's per-event cost was most
  of the operator's CPU): keeps a small index (readiness per child), wakes the owner's status only when a
  child's readiness changed (coalesced per owner), and heals: a child edited by hand is patched back, a
  deleted one recreated, within a second of the event. A periodic resync (``resync_seconds``) re-checks
  every child as a safety net.
* a deleted ModelDeployment and ``quota_event``: capacity changed -> re-run admission in that namespace.
* ``namespace_event``: objects in a terminating namespace are left alone (no writes, no Events).

Children are garbage-collected through their ownerReferences, so deletion needs no finalizer.
Status writes go through one place (``publish``) under a per-object lock, and only when something
other than timestamps changed; phase transitions become Kubernetes Events. A child write the API
server refuses becomes ``Failed`` with the server's reason and message, and is retried with
exponential backoff until it succeeds or the spec changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from mlstack_operator import builders
from mlstack_operator.admission import (
    Candidate,
    Decision,
    decide,
    demand,
    limits_from_quota,
    merge_limits,
    room_for_one_more,
)
from mlstack_operator.contract import API_VERSION, GROUP, KIND, PLURAL, VERSION, ModelDeployment, Phase
from mlstack_operator.drift import InSync, drift_patch, drifted
from mlstack_operator.kube import ApiError, KubeClient, Reflector, path_for, path_of
from mlstack_operator.resolver import ModelNotFound, ModelResolver, RegistryUnavailable
from mlstack_operator.settings import OperatorSettings, get_settings
from mlstack_operator.status import (
    ChildState,
    Inputs,
    child_state,
    compute,
    essential,
    newer_version,
    now_rfc3339,
    phase_of,
    with_foreign_conditions,
)

MD = (GROUP, VERSION, PLURAL)
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
               ("ray.io/v1", "RayService"), ("kubevirt.io/v1", "VirtualMachine"))
REGISTRY_RETRY_SECONDS = 15.0
WARNING_PHASES = {Phase.Failed, Phase.Degraded}

Key = tuple[str, str]  # (namespace, name)


@dataclasses.dataclass
class Tracked:
    """What the operator knows about one ModelDeployment between events."""

    ref: dict[str, Any]
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    inputs: Inputs | None = None
    expected: tuple[tuple[str, str], ...] = ()  # (kind, name) of the children whose presence/readiness counts
    desired: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)  # (kind, name) -> obj
    last_status: dict[str, Any] | None = None
    # the newest resourceVersion seen (watch events, our own status writes' answers): the status write's
    # precondition, so that another writer's condition (the monitor's SLOMet) is never overwritten unseen
    resource_version: str | None = None
    retry: asyncio.Task | None = None  # a scheduled retry of a refused child write (admitted from the queue)
    retries: int = 0
    unschedulable_check: asyncio.Task | None = None
    follows: tuple[str, str] | None = None  # (model, alias) when the spec follows an alias
    shadow_follows: tuple[str, str] | None = None  # (model, alias) when spec.shadow follows an alias
    pruned: tuple[int | None, set[tuple[str, str, str]]] = (None, set())  # (generation, deleted): no re-DELETE
    publish_pending: bool = False  # a status refresh from the children's watch is queued (coalesces events)
    handled: int | None = None  # the generation last reconciled (status writes and other events change none)
    pending: dict[str, Any] | None = None  # the newest body with an unhandled generation (for ``worker``)
    worker: asyncio.Task | None = None  # reconciles ``pending`` bodies one at a time, in order
    in_sync: InSync = dataclasses.field(default_factory=dict)  # (kind, name): children last found in sync (drifted)


class NsIndex:
    """namespace -> {name: value}, kept from a watch; read like a kopf index: ``get(namespace, default)`` gives the
    namespace's values, ``namespace in index`` whether it has any."""

    def __init__(self) -> None:
        self.by_ns: dict[str, dict[str, Any]] = {}

    def set(self, namespace: str, name: str, value: Any) -> None:
        if value is None:
            self.drop(namespace, name)
        else:
            self.by_ns.setdefault(namespace, {})[name] = value

    def drop(self, namespace: str, name: str) -> None:
        values = self.by_ns.get(namespace)
        if values is not None:
            values.pop(name, None)
            if not values:
                del self.by_ns[namespace]

    def get(self, namespace: str, default: Any = None) -> Any:
        values = self.by_ns.get(namespace)
        return list(values.values()) if values else default

    def __contains__(self, namespace: object) -> bool:
        return namespace in self.by_ns


@dataclasses.dataclass
class OperatorState:
    cfg: OperatorSettings
    kube: KubeClient
    resolver: ModelResolver
    tracked: dict[Key, Tracked] = dataclasses.field(default_factory=dict)
    children: dict[Key, dict[tuple[str, str], ChildState]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict))
    admitted: set[Key] = dataclasses.field(default_factory=set)
    ns_locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=lambda: defaultdict(asyncio.Lock))
    terminating: set[str] = dataclasses.field(default_factory=set)  # namespaces being deleted
    # the watches' indices: namespace -> ModelDeployment name -> Candidate; namespace -> quota name -> limits
    indices: tuple[NsIndex, NsIndex] = dataclasses.field(default_factory=lambda: (NsIndex(), NsIndex()))
    tasks: set[asyncio.Task] = dataclasses.field(default_factory=set)
    reflectors: dict[str, list[Reflector]] = dataclasses.field(default_factory=lambda: defaultdict(list))  # by kind
    # every child in the watches' index, by parent: (kind, name) -> (apiVersion, owner uids); what prune looks at
    owned: dict[Key, dict[tuple[str, str], tuple[str, frozenset[str]]]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict))
    synced: bool = False  # every child watch listed once (prune needs the whole index)

    async def wait_synced(self, timeout: float = 30.0) -> None:
        if not self.synced:
            waits = [r.synced.wait() for rs in self.reflectors.values() for r in rs]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
            self.synced = True

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def track(self, body: Mapping[str, Any]) -> Tracked:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        t = self.tracked.get(key)
        if t is None or t.ref["metadata"].get("uid") != meta.get("uid"):
            ref = {"apiVersion": API_VERSION, "kind": KIND,
                   "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")}}
            t = self.tracked[key] = Tracked(ref=ref, last_status=dict(body.get("status") or {}) or None)
        return t

    def forget(self, key: Key) -> None:
        t = self.tracked.pop(key, None)
        if t is not None:
            for task in (t.retry, t.unschedulable_check, t.worker):
                if task is not None:
                    task.cancel()
        self.children.pop(key, None)
        self.owned.pop(key, None)
        self.admitted.discard(key)


# --- wiring -------------------------------------------------------------------------------------


def configure(settings: kopf.OperatorSettings, cfg: OperatorSettings) -> None:
    """kopf settings: few writes and few events per object (see bench/operator.py)."""
    settings.posting.level = logging.INFO if cfg.post_info_events else logging.WARNING
    settings.peering.standalone = True  # one replica (manifests/operator): no peering, instant takeover
    settings.watching.server_timeout = 600
    settings.networking.request_timeout = 60


@kopf.on.login()
def login(logger: logging.Logger, **kwargs: Any) -> kopf.ConnectionInfo | None:
    cfg = get_settings()
    if cfg.kube_server:
        return kopf.ConnectionInfo(server=cfg.kube_server, insecure=cfg.kube_insecure, default_namespace="default")
    return kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
        logger=logger, **kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = get_settings()
    configure(settings, cfg)
    memo.state = state = OperatorState(
        cfg=cfg,
        kube=await KubeClient.connect(cfg),
        resolver=ModelResolver(cfg.effective_registry_uri, cfg.resolve_cache_seconds),
    )
    log = logging.getLogger(__name__)
    managed = ",".join(f"{k}={v}" for k, v in builders.MANAGED_BY.items())
    for api_version, kind in CHILD_KINDS:
        for namespace in cfg.namespaces or [None]:
            r = Reflector(state.kube, api_version, kind, managed,
                          lambda type_, obj, s=state: child_event(s, type_, obj), namespace=namespace, log=log)
            state.reflectors[kind].append(r)
            state.spawn(r.run())
    for namespace in cfg.namespaces or [None]:  # after the children's watches: a reconcile waits for their index
        state.spawn(Reflector(state.kube, "v1", "ResourceQuota", "", lambda type_, obj, s=state: quota_event(
            s, type_, obj), namespace=namespace, log=log).run())
        state.spawn(Reflector(state.kube, API_VERSION, KIND, "", lambda type_, obj, s=state: mdep_event(
            s, type_, obj), namespace=namespace, log=log).run())
    state.spawn(resync_loop(state))
    if cfg.alias_poll_seconds > 0:
        state.spawn(alias_loop(state))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState | None = memo.get("state")
    if state is not None:
        for task in list(state.tasks):
            task.cancel()
        await state.kube.close()


# --- ModelDeployments and quotas (raw watches, ``kube.Reflector``; not kopf: see the module docstring) --------


_DEMANDS: dict[tuple[str, int], tuple[int, Any] | None] = {}  # (uid, generation) -> (priority, demand)
LOG = logging.getLogger(__name__)


def candidate(body: Mapping[str, Any]) -> Candidate | None:
    """The admission queue's view of a ModelDeployment (None: invalid, it fails before admission)."""
    meta = body["metadata"]
    key = (meta.get("uid", ""), meta.get("generation") or 0)
    if key not in _DEMANDS:  # parse each generation once, not on every status event
        if len(_DEMANDS) > 100_000:
            _DEMANDS.clear()
        try:
            md = ModelDeployment.model_validate(body)
            _DEMANDS[key] = (md.spec.priority, demand(md))
        except ValidationError:
            _DEMANDS[key] = None
    parsed = _DEMANDS[key]
    if parsed is None:
        return None
    conds = (body.get("status") or {}).get("conditions") or []
    admitted = any(c.get("type") == "Admitted" and c.get("status") == "True" for c in conds)
    return Candidate(meta["name"], parsed[0], meta.get("creationTimestamp") or "", parsed[1], admitted)


def mdep_event(state: OperatorState, type_: str, body: dict[str, Any]) -> None:
    """Every event of a ModelDeployment (synchronous: index, then spawn the work); a reconcile when its generation
    (the spec) is one not handled yet: its first sight (created, or seen at start-up) and every spec change. The
    operator's own status writes change no generation and cost no more than the index update. One worker per
    object reconciles the newest unhandled body, in order."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    mdeps = state.indices[0]
    if type_ == "DELETED":
        mdeps.drop(namespace, name)
        state.forget((namespace, name))
        if namespace not in state.terminating:
            state.spawn(refresh_namespace(state, namespace, *state.indices, LOG))
        return
    mdeps.set(namespace, name, candidate(body))
    if meta.get("deletionTimestamp") or namespace in state.terminating:
        return  # going away: the garbage collector takes the children
    tracked = state.track(body)
    tracked.last_status = with_foreign_conditions(tracked.last_status, body.get("status"))  # SLOMet: the monitor's
    tracked.resource_version = newer_version(tracked.resource_version, meta.get("resourceVersion"))
    generation = meta.get("generation")
    if tracked.handled == generation:
        return
    tracked.handled = generation
    tracked.pending = body
    if tracked.worker is None or tracked.worker.done():
        tracked.worker = state.spawn(mdep_worker(state, tracked))


class ObjectLog(logging.LoggerAdapter):
    """Log lines prefixed with the object (as kopf's per-object logger did)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['key']}] {msg}", kwargs


async def mdep_worker(state: OperatorState, tracked: Tracked) -> None:
    meta = tracked.ref["metadata"]
    log = ObjectLog(LOG, {"key": f"{meta['namespace']}/{meta['name']}"})
    await state.wait_synced()
    while tracked.pending is not None:
        body, tracked.pending = tracked.pending, None
        try:
            await reconcile_spec(state, tracked, body, log, create_first=not body.get("status"))
        except Exception as e:  # never lose the object: log it, retry with backoff
            log.exception(f"reconcile failed: {e!r}")
            schedule_retry(state, tracked)


def quota_event(state: OperatorState, type_: str, body: dict[str, Any]) -> None:
    """A ResourceQuota changed: capacity changed -> re-run admission in its namespace."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    state.indices[1].set(namespace, meta["name"], None if type_ == "DELETED" else limits_from_quota(
        body.get("spec") or {}))
    if namespace not in state.terminating:
        state.spawn(refresh_namespace(state, namespace, *state.indices, LOG))


async def reconcile_spec(state: OperatorState, tracked: Tracked, raw: dict[str, Any], logger: Any, *,
                         create_first: bool) -> None:
    """A new generation: validate, reconcile, and on failure retry with backoff (``schedule_retry``)."""
    mdep_admission, quota_limits = state.indices
    if tracked.retry is not None:  # the spec moved on: a pending retry of the old one is moot
        tracked.retry.cancel()
        tracked.retry = None
        tracked.retries = 0
    try:
        md = ModelDeployment.model_validate(raw)
    except ValidationError as e:
        message = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        async with tracked.lock:
            try:
                await publish(state, tracked, Inputs(raw["metadata"].get("generation"), invalid=message))
            except kopf.TemporaryError as te:
                schedule_retry(state, tracked, te.delay)
        logger.warning(f"invalid spec: {message}")
        return
    async with tracked.lock:
        try:
            await reconcile(state, tracked, md, raw, mdep_admission, quota_limits, create_first=create_first)
        except ChildRefused as e:
            logger.warning(f"{e}")
            schedule_retry(state, tracked)
        except kopf.TemporaryError as e:
            logger.warning(f"{e}; retrying in {e.delay or 0:.0f}s")
            schedule_retry(state, tracked, e.delay)
        except ApiError as e:
            logger.warning(f"{e}")
            schedule_retry(state, tracked)
    await refresh_namespace(state, md.namespace, mdep_admission, quota_limits, logger)


def backoff(attempt: int, cap: float) -> float:
    return float(min(cap, 2 ** min(attempt, 16)))


def child_event(state: OperatorState, type_: str, body: dict[str, Any]) -> None:
    """One event of one child (from its kind's Reflector; synchronous: index, then spawn the work). The status is
    refreshed only when the child's readiness changed, once per burst of events (``schedule_publish``)."""
    meta = body["metadata"]
    namespace = meta.get("namespace", "")
    parent = (meta.get("labels") or {}).get(builders.LABEL_DEPLOYMENT)
    if not parent or namespace in state.terminating:
        return
    key = (namespace, parent)
    child_key = (body.get("kind", ""), meta["name"])
    if type_ == "DELETED":
        state.owned[key].pop(child_key, None)
    else:
        state.owned[key][child_key] = (body.get("apiVersion", ""),
                                       frozenset(o.get("uid", "") for o in meta.get("ownerReferences") or []))
    cache = state.children[key]
    before = cache.get(child_key)
    if type_ == "DELETED":
        cache.pop(child_key, None)
        cs = None
    else:
        cs = child_state(body)
        if cs is not None:
            cache[child_key] = cs
    tracked = state.tracked.get(key)
    if tracked is None:
        return
    desired = tracked.desired.get(child_key)
    if desired is not None and (type_ == "DELETED" or (owned_by(meta, tracked) and not meta.get("deletionTimestamp")
                                                       and drifted(tracked.in_sync, child_key, desired, body))):
        state.spawn(heal(state, tracked, child_key))
    if tracked.inputs is None or tracked.inputs.resolved_version is None:
        return  # the parent's own reconcile publishes with this state
    if cs is not None and cs.kind == "Deployment" and not cs.ready:
        watch_scheduling(state, tracked, key)  # (once per wait) a moment later, ask the pods why not
    if cs != before:  # else nothing the status shows changed
        schedule_publish(state, tracked, key)


def schedule_publish(state: OperatorState, tracked: Tracked, key: Key) -> None:
    """Refresh the status from the children's index soon; events that arrive meanwhile ride along."""
    if not tracked.publish_pending:
        tracked.publish_pending = True
        state.spawn(publish_children(state, tracked, key))


async def publish_children(state: OperatorState, tracked: Tracked, key: Key) -> None:
    async with tracked.lock:
        tracked.publish_pending = False
        if tracked.inputs is None or state.tracked.get(key) is not tracked:
            return
        try:
            await publish(state, tracked, dataclasses.replace(tracked.inputs,
                                                              children=children_of(state, key, tracked)))
        except kopf.TemporaryError as e:  # the status write failed: try again shortly
            logging.getLogger(__name__).warning(f"{key[0]}/{key[1]}: {e}")
            state.spawn(publish_later(state, tracked, key, 2.0))


async def publish_later(state: OperatorState, tracked: Tracked, key: Key, delay: float) -> None:
    await asyncio.sleep(delay)
    schedule_publish(state, tracked, key)


def owned_by(meta: Mapping[str, Any], tracked: Tracked) -> bool:
    uid = tracked.ref["metadata"].get("uid")
    return any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(type: str | None, name: str, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    """A terminating namespace's objects are left alone: its controller deletes them all, and creates there
    (children, Events) are refused anyway."""
    state: OperatorState | None = memo.get("state")
    if state is None:
        return
    if type != "DELETED" and status.get("phase") == "Terminating":
        state.terminating.add(name)
    elif type == "DELETED":
        state.terminating.discard(name)
        for key in [k for k in state.tracked if k[0] == name]:
            state.forget(key)


# --- the work -----------------------------------------------------------------------------------


NO_QUOTA = Decision(True, message="no ResourceQuota in the namespace")


class ChildRefused(Exception):
    """The API server refused a child write; the status says so and the write is retried with backoff."""


def candidates(state: OperatorState, namespace: str, mdep_admission: NsIndex) -> list[Candidate]:
    """The namespace's ModelDeployments for admission, counting those this operator admitted already."""
    return [dataclasses.replace(c, admitted=c.admitted or (namespace, c.name) in state.admitted)
            for c in mdep_admission.get(namespace, [])]


async def admit(state: OperatorState, namespace: str, mdep_admission: NsIndex, quota_limits: NsIndex,
                name: str | None = None) -> dict[str, Decision]:
    """Decisions for the namespace (only ``name``'s when there is no quota: everything is admitted)."""
    if name is not None and namespace not in quota_limits:
        state.admitted.add((namespace, name))
        return {name: NO_QUOTA}
    async with state.ns_locks[namespace]:
        limits = merge_limits(quota_limits.get(namespace, []))
        decisions = decide(candidates(state, namespace, mdep_admission), limits)
        state.admitted.update((namespace, n) for n, d in decisions.items() if d.admitted)
        return decisions


def surge_fits(state: OperatorState, md: ModelDeployment, mdep_admission: NsIndex,
               quota_limits: NsIndex) -> bool:
    """Room in the namespace's quota for a rolling update's extra pod (else: replace pods one at a time)."""
    if md.namespace not in quota_limits:
        return True
    limits = merge_limits(quota_limits.get(md.namespace, []))
    return room_for_one_more(candidates(state, md.namespace, mdep_admission), limits, md)


NO_SURGE = "rolling updates replace one pod at a time without an extra one (the quota has no room for it)"


async def reconcile(state: OperatorState, tracked: Tracked, md: ModelDeployment, body: Mapping[str, Any],
                    mdep_admission: NsIndex, quota_limits: NsIndex, *, create_first: bool) -> None:
    """One pass for one ModelDeployment; the caller holds ``tracked.lock``. Raises ChildRefused."""
    cfg, key = state.cfg, (md.namespace, md.name)
    gen = md.metadata.generation
    decision = (await admit(state, md.namespace, mdep_admission, quota_limits, md.name)).get(md.name)
    if decision is None:  # not in the index yet (it is filled before handlers run): be safe
        decision = Decision(True, message="admitted")
    if not decision.admitted:
        await publish(state, tracked, Inputs(gen, admitted=False, queue_position=decision.position,
                                             admission_reason=decision.reason,
                                             admission_message=decision.message))
        return
    surge = surge_fits(state, md, mdep_admission, quota_limits)
    base = Inputs(gen, admitted=True, admission_message=decision.message, rollout_note="" if surge else NO_SURGE)

    spec = md.spec
    tracked.follows = (spec.model.name, spec.model.alias) if spec.model.alias else None
    tracked.shadow_follows = (spec.model.name, spec.shadow.alias) if spec.shadow and spec.shadow.alias else None
    try:
        version = await state.resolver.resolve(spec.model.name, version=spec.model.version, alias=spec.model.alias)
        canary = await state.resolver.version(spec.model.name, spec.canary.version) if spec.canary else None
        shadow = await state.resolver.resolve(spec.model.name, version=spec.shadow.version,
                                              alias=spec.shadow.alias) if spec.shadow else None
    except ModelNotFound as e:
        await publish(state, tracked, dataclasses.replace(base, resolve_error=("ModelNotFound", str(e))))
        raise kopf.TemporaryError(str(e), delay=cfg.failed_retry_seconds) from None
    except RegistryUnavailable as e:
        raise kopf.TemporaryError(str(e), delay=REGISTRY_RETRY_SECONDS) from None

    versions = builders.Versions(version, canary, shadow)
    children = builders.build_children(md, versions, cfg, surge=surge)
    kopf.adopt(children, owner=dict(body))
    tracked.desired = {(c["kind"], c["metadata"]["name"]): c for c in children}
    tracked.expected = tuple((c["kind"], c["metadata"]["name"]) for c in children
                             if c["kind"] in ("Deployment", "Service", "RayService", "VirtualMachine"))
    resolved = dataclasses.replace(base, resolved_version=version, canary_version=canary,
                                   shadow_version=builders.shadow_version(md, versions), url=builders.url(md, cfg))
    child = children[0]
    try:
        for child in children:
            live = await ensure(state.kube, child, create_first=create_first)
            for r in state.reflectors.get(child["kind"], ()):
                r.wake()  # its kind exists now (a CRD installed after the operator started)
            cs = child_state(live)
            if cs is not None:
                state.children[key][(cs.kind, cs.name)] = cs
        wanted = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in children}
        uid = tracked.ref["metadata"].get("uid")
        stale = {(api_version, kind, name) for (kind, name), (api_version, owners) in state.owned[key].items()
                 if uid in owners}  # the children of this object the watches saw, that the spec no longer wants
        if tracked.pruned[0] != gen:
            tracked.pruned = (gen, set())
        await prune_children(state, md, stale - wanted - tracked.pruned[1])  # a retried pass deletes nothing twice
        tracked.pruned[1].update(stale - wanted)
    except ApiError as e:
        if md.namespace in state.terminating:
            return
        what = f"{child['kind']}/{child['metadata']['name']}"
        tracked.inputs = resolved
        await publish(state, tracked, dataclasses.replace(
            resolved, child_error=(e.reason or f"HTTP{e.status}",
                                   f"the API server refused {what}: {e.status} {e.reason}: {e.message}")))
        raise ChildRefused(f"{what}: {e}") from None

    tracked.retries = 0
    tracked.inputs = resolved
    current = children_of(state, key, tracked)
    await publish(state, tracked, dataclasses.replace(resolved, children=current))
    if any(c.kind == "Deployment" and not c.ready for c in current):
        watch_scheduling(state, tracked, key)  # the watch may have shown it before ``inputs`` was set


async def ensure(kube: KubeClient, desired: dict[str, Any], *, create_first: bool) -> dict[str, Any]:
    """Create-if-absent, patch-if-different; returns the live object."""
    if create_first:
        try:
            return await kube.create(desired)
        except ApiError as e:
            if e.status != 409:
                raise
    path = path_of(desired)
    live = await kube.get(path)
    if live is None:
        return await kube.create(desired)
    patch = drift_patch(desired, live)
    return await kube.patch(path, patch) if patch else live


async def prune_children(state: OperatorState, md: ModelDeployment, stale: Iterable[tuple[str, str, str]]) -> None:
    """Delete the children the previous spec made that the current one no longer wants (only those: no
    DELETE of children that never existed)."""
    for api_version, kind, name in stale:
        try:
            await state.kube.delete(path_for(api_version, kind, md.namespace, name))
        except ApiError as e:
            if e.status != 404:
                raise
        state.children[(md.namespace, md.name)].pop((kind, name), None)
        state.owned[(md.namespace, md.name)].pop((kind, name), None)


async def heal(state: OperatorState, tracked: Tracked, child_key: tuple[str, str]) -> None:
    """Bring one child back to the spec (patch a hand edit, recreate a deleted one)."""
    async with tracked.lock:
        desired = tracked.desired.get(child_key)
        meta = tracked.ref["metadata"]
        if desired is None or meta["namespace"] in state.terminating:
            return
        live = await state.kube.get(path_of(desired))
        if live is None:
            # recreate only while the parent exists (the garbage collector may be deleting its children)
            parent = await state.kube.get(path_for(API_VERSION, KIND, meta["namespace"], meta["name"]))
            if parent is None or parent["metadata"].get("uid") != meta.get("uid") or \
                    parent["metadata"].get("deletionTimestamp"):
                return
        try:
            if live is None:
                await state.kube.create(desired)
                logging.getLogger(__name__).info(f"recreated {child_key[0]}/{child_key[1]} in {meta['namespace']}")
            elif (patch := drift_patch(desired, live)) is not None:
                await state.kube.patch(path_of(desired), patch)
                logging.getLogger(__name__).info(f"reverted a change to {child_key[0]}/{child_key[1]} "
                                                 f"in {meta['namespace']}")
        except ApiError as e:
            if e.status == 409 or meta["namespace"] in state.terminating:
                return
            if tracked.inputs is not None:
                await publish(state, tracked, dataclasses.replace(
                    tracked.inputs, child_error=(e.reason or f"HTTP{e.status}",
                                                 f"the API server refused {child_key[0]}/{child_key[1]}: "
                                                 f"{e.status} {e.reason}: {e.message}")))
            schedule_retry(state, tracked)


async def resync_loop(state: OperatorState) -> None:
    """Safety net for missed events: every ``resync_seconds``, re-check every child of every tracked object."""
    while True:
        await asyncio.sleep(state.cfg.resync_seconds)
        for tracked in list(state.tracked.values()):
            for child_key in list(tracked.desired):
                try:
                    await heal(state, tracked, child_key)
                except ApiError as e:
                    logging.getLogger(__name__).warning(f"resync of {child_key}: {e}")


async def alias_loop(state: OperatorState) -> None:
    """Promotion rolls deployments: every ``alias_poll_seconds`` each (model, alias) some deployment follows is
    re-resolved once (shared by all its followers); followers serving another version roll to the new one (a
    rolling update of their children), with an Event. The registry unreachable: back off (up to 5 minutes)."""
    log = logging.getLogger(__name__)
    delay = state.cfg.alias_poll_seconds
    while True:
        await asyncio.sleep(delay)
        followers: dict[tuple[str, str], list[Tracked]] = defaultdict(list)
        shadow_followers: dict[tuple[str, str], list[Tracked]] = defaultdict(list)
        for t in state.tracked.values():
            if t.inputs is not None and t.inputs.resolved_version and \
                    t.ref["metadata"]["namespace"] not in state.terminating:
                if t.follows:
                    followers[t.follows].append(t)
                if t.shadow_follows:
                    shadow_followers[t.shadow_follows].append(t)
        delay = state.cfg.alias_poll_seconds
        for (model, alias) in followers.keys() | shadow_followers.keys():
            tracked_list = followers.get((model, alias), [])
            try:
                version = await state.resolver.refresh(model, alias)
            except RegistryUnavailable as e:
                delay = min(300.0, max(delay, state.cfg.alias_poll_seconds) * 2)
                log.warning(f"alias poll: {e}; next poll in {delay:.0f}s")
                break
            except ModelNotFound:
                continue  # the alias was removed: the deployments keep serving what they serve
            for t in tracked_list:
                if t.inputs is not None and t.inputs.resolved_version != version:
                    state.spawn(roll(state, t, alias, version))
            for t in shadow_followers.get((model, alias), []):  # (no shadow_version: it resolved to the stable one)
                if t.inputs is not None and version != (t.inputs.shadow_version or t.inputs.resolved_version):
                    state.spawn(roll(state, t, alias, version, shadow=True))


async def roll(state: OperatorState, tracked: Tracked, alias: str, version: str, shadow: bool = False) -> None:
    """``shadow``: the alias spec.shadow follows moved (the shadow's children roll, the stable ones stay)."""
    meta = tracked.ref["metadata"]
    body = await state.kube.get(path_for(API_VERSION, KIND, meta["namespace"], meta["name"]))
    if body is None or body["metadata"].get("uid") != meta.get("uid"):
        return

    def serving() -> str | None:
        i = tracked.inputs
        return None if i is None else (i.shadow_version or i.resolved_version) if shadow else i.resolved_version

    before = serving()
    try:
        md = ModelDeployment.model_validate(body)
        async with tracked.lock:
            if serving() == version:
                return  # rolled meanwhile (a spec change)
            await reconcile(state, tracked, md, body, *state.indices, create_first=False)
    except (ChildRefused, ApiError, kopf.TemporaryError):
        schedule_retry(state, tracked)
        return
    except (kopf.PermanentError, ValidationError):
        return
    await post_event(state, tracked, "Normal", "Rolled",
                     f"{'shadow ' if shadow else ''}alias {alias!r} moved: rolling "
                     f"{'the shadow ' if shadow else ''}from version {before} to version {version}")


def schedule_retry(state: OperatorState, tracked: Tracked, delay: float | None = None) -> None:
    """Re-run the reconcile later: after ``delay``, else with exponential backoff."""
    if tracked.retry is not None and not tracked.retry.done():
        return
    if delay is None:
        delay = backoff(tracked.retries, state.cfg.retry_max_seconds)
        tracked.retries += 1
    tracked.retry = state.spawn(retry_later(state, tracked, delay))


async def retry_later(state: OperatorState, tracked: Tracked, delay: float) -> None:
    await asyncio.sleep(delay)
    meta = tracked.ref["metadata"]
    body = await state.kube.get(path_for(API_VERSION, KIND, meta["namespace"], meta["name"]))
    if body is None or body["metadata"].get("uid") != meta.get("uid"):
        return
    try:
        md = ModelDeployment.model_validate(body)
        async with tracked.lock:
            tracked.retry = None
            await reconcile(state, tracked, md, body, *state.indices, create_first=False)
    except kopf.TemporaryError as e:  # the model is still missing, the registry still away: their own delay
        tracked.retry = None
        schedule_retry(state, tracked, e.delay)
    except (ChildRefused, ApiError):
        tracked.retry = None
        schedule_retry(state, tracked)
    except ValidationError:
        tracked.retry = None


def watch_scheduling(state: OperatorState, tracked: Tracked, key: Key) -> None:
    """A Deployment that is not ready: a moment later, read its pods' scheduling (once per wait)."""
    if tracked.unschedulable_check is not None and not tracked.unschedulable_check.done():
        return
    tracked.unschedulable_check = state.spawn(check_scheduling(state, tracked, key))


async def check_scheduling(state: OperatorState, tracked: Tracked, key: Key) -> None:
    await asyncio.sleep(state.cfg.unschedulable_check_seconds)
    if tracked.inputs is None or all(c.ready for c in children_of(state, key, tracked)):
        return
    pods = await state.kube.list(f"/api/v1/namespaces/{key[0]}/pods", {builders.LABEL_DEPLOYMENT: key[1]})
    message = None
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                message = f"pod {pod['metadata']['name']} cannot be scheduled: {c.get('message', '')}".strip()
                break
        if message:
            break
    if message != tracked.inputs.unschedulable:
        async with tracked.lock:
            tracked.inputs = dataclasses.replace(tracked.inputs, unschedulable=message)
            await publish(state, tracked, dataclasses.replace(tracked.inputs,
                                                              children=children_of(state, key, tracked)))
    if message:  # still waiting: look again later (the scheduler retries, a node may appear)
        await asyncio.sleep(max(5.0, state.cfg.unschedulable_check_seconds))
        tracked.unschedulable_check = None
        if not all(c.ready for c in children_of(state, key, tracked)):
            watch_scheduling(state, tracked, key)


def children_of(state: OperatorState, key: Key, tracked: Tracked) -> tuple[ChildState, ...]:
    cache = state.children.get(key, {})
    return tuple(cache.get(ck) or ChildState(ck[0], ck[1], 0 if ck[0] == "Service" else 1, 0, False)
                 for ck in tracked.expected)


async def publish(state: OperatorState, tracked: Tracked, inputs: Inputs) -> None:
    """Write the status computed from ``inputs`` if it differs; post an Event on a phase change."""
    meta = tracked.ref["metadata"]
    if meta["namespace"] in state.terminating:
        return
    if inputs.invalid is None and inputs.child_error is None:
        tracked.inputs = dataclasses.replace(inputs, children=())
    if inputs.unschedulable is None and tracked.inputs is not None and tracked.inputs.unschedulable and \
            all(c.ready for c in inputs.children) and inputs.children:
        tracked.inputs = dataclasses.replace(tracked.inputs, unschedulable=None)
    previous = tracked.last_status
    new = compute(inputs, previous)
    if essential(new) == essential(previous):
        return
    path = path_for(API_VERSION, KIND, meta["namespace"], meta["name"], "status")
    # a merge patch replaces the conditions list whole: the precondition turns a write that has not seen another
    # writer's latest condition into a 409, written again once the watch brought that condition in
    patch: dict[str, Any] = {"status": new}
    if tracked.resource_version:
        patch["metadata"] = {"resourceVersion": tracked.resource_version}
    try:
        written = await state.kube.patch(path, patch)
    except ApiError as e:
        if e.status == 404:
            return  # deleted meanwhile
        if e.status == 409:
            raise kopf.TemporaryError("status changed since it was read (another writer, e.g. the monitor's "
                                      "SLOMet): written again on the newer object", delay=1) from None
        raise kopf.TemporaryError(f"status update failed: {e}", delay=2) from None
    if isinstance(written, dict):
        tracked.resource_version = newer_version(tracked.resource_version,
                                                 (written.get("metadata") or {}).get("resourceVersion"))
    tracked.last_status = {**(previous or {}), **{k: v for k, v in new.items()}}
    old_phase, new_phase = phase_of(previous), phase_of(new)
    if old_phase != new_phase:
        ready = next((c for c in new["conditions"] if c["type"] == "Ready"), None)
        message = f"{old_phase.value} -> {new_phase.value}" + (f": {ready['message']}" if ready else "")
        await post_event(state, tracked, "Warning" if new_phase in WARNING_PHASES else "Normal", new_phase.value,
                         message)


async def post_event(state: OperatorState, tracked: Tracked, type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the ModelDeployment, posted directly (kopf.event only works inside kopf's handler
    context, and these come from watches, retries and rolls too); never into a terminating namespace, never
    failing the caller."""
    meta = tracked.ref["metadata"]
    if meta["namespace"] in state.terminating:
        return
    now = now_rfc3339()
    event = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
             "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                                "namespace": meta["namespace"], "uid": meta.get("uid")},
             "type": type_, "reason": reason, "message": message[:1024], "count": 1,
             "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "mlstack-operator"},
             "reportingComponent": "mlstack-operator"}
    try:
        await state.kube.create(event)
    except ApiError as e:
        logging.getLogger(__name__).warning(f"event {reason} on {meta['namespace']}/{meta['name']} not posted: {e}")


async def refresh_namespace(state: OperatorState, namespace: str, mdep_admission: NsIndex,
                            quota_limits: NsIndex, logger: logging.Logger) -> None:
    """Admission moved (a delete, a quota change, a newcomer): admit or re-number the queued ones."""
    queued = [t for (ns, _), t in state.tracked.items()
              if ns == namespace and t.inputs is not None and t.inputs.admitted is False]
    if not queued:
        return
    decisions = await admit(state, namespace, mdep_admission, quota_limits)
    for tracked in queued:
        name = tracked.ref["metadata"]["name"]
        d = decisions.get(name)
        if d is None or tracked.inputs is None:
            continue
        if d.admitted:
            body = await state.kube.get(path_for(API_VERSION, KIND, namespace, name))
            if body is None:
                continue
            try:
                md = ModelDeployment.model_validate(body)
                async with tracked.lock:
                    await reconcile(state, tracked, md, body, mdep_admission, quota_limits, create_first=True)
            except (ChildRefused, ApiError, kopf.TemporaryError) as e:
                # the status says why (reconcile published it); retry with backoff, not never
                logger.warning(f"admitted {namespace}/{name} but could not deploy it yet: {e}")
                schedule_retry(state, tracked)
            except (kopf.PermanentError, ValidationError) as e:
                logger.warning(f"admitted {namespace}/{name} but its spec cannot work: {e}")
        elif (d.position, d.reason, d.message) != (tracked.inputs.queue_position, tracked.inputs.admission_reason,
                                                   tracked.inputs.admission_message):
            async with tracked.lock:
                await publish(state, tracked, dataclasses.replace(
                    tracked.inputs, queue_position=d.position, admission_reason=d.reason,
                    admission_message=d.message))
