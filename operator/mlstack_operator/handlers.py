"""kopf handlers for ModelDeployment: thin; the work is in builders, admission and status.

* ``mdep_reconcile`` (create/update/resume): validate -> admit -> resolve the model -> build,
  adopt, create-if-absent / patch-if-different the children -> publish the status.
* ``child_event`` (Deployment/RayService/VirtualMachine events): the children's readiness -> status.
* ``mdep_deleted`` and ``quota_event``: capacity changed -> re-run admission in that namespace.

Children are garbage-collected through their ownerReferences, so deletion needs no finalizer.
Status writes go through one place (``publish``) under a per-object lock, and only when something
other than timestamps changed; phase transitions become Kubernetes Events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from mlstack_operator import builders
from mlstack_operator.admission import Candidate, Decision, decide, demand, limits_from_quota, merge_limits
from mlstack_operator.contract import API_VERSION, GROUP, KIND, PLURAL, VERSION, ModelDeployment, Phase
from mlstack_operator.drift import drift_patch
from mlstack_operator.kube import ApiError, KubeClient, path_for, path_of
from mlstack_operator.resolver import ModelNotFound, ModelResolver, RegistryUnavailable
from mlstack_operator.settings import OperatorSettings, get_settings
from mlstack_operator.status import ChildState, Inputs, child_state, compute, essential, phase_of

MD = (GROUP, VERSION, PLURAL)
REGISTRY_RETRY_SECONDS = 15.0
WARNING_PHASES = {Phase.Failed, Phase.Degraded}

Key = tuple[str, str]  # (namespace, name)


@dataclasses.dataclass
class Tracked:
    """What the operator knows about one ModelDeployment between events."""

    ref: dict[str, Any]
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    inputs: Inputs | None = None
    expected: tuple[tuple[str, str], ...] = ()  # (kind, name) of the desired readiness-bearing children
    last_status: dict[str, Any] | None = None


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
        self.tracked.pop(key, None)
        self.children.pop(key, None)
        self.admitted.discard(key)


# --- wiring -------------------------------------------------------------------------------------


def configure(settings: kopf.OperatorSettings, cfg: OperatorSettings) -> None:
    """kopf settings: few writes and few events per object (see bench/operator.py)."""
    settings.posting.level = logging.INFO if cfg.post_info_events else logging.WARNING
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.peering.name = cfg.peering_name
    # Watch only our own children, filtered server-side (the handlers' label filter stays as a guard).
    managed = ",".join(f"{k}={v}" for k, v in builders.MANAGED_BY.items())
    for group, plural in (("apps", "deployments"), ("ray.io", "rayservices"), ("kubevirt.io", "virtualmachines")):
        settings.watching.label_selectors[group, plural] = managed
    settings.watching.server_timeout = 600
    # The reconcile handler writes the status itself before kopf writes its annotations: wait long
    # enough for kopf's own patch to come back, so a slow operator never takes the status-only
    # event for a new, unhandled object.
    settings.persistence.consistency_timeout = 30.0
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
    memo.state = OperatorState(
        cfg=cfg,
        kube=await KubeClient.connect(cfg),
        resolver=ModelResolver(cfg.effective_registry_uri, cfg.resolve_cache_seconds),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState | None = memo.get("state")
    if state is not None:
        await state.kube.close()


# --- indices (kept by kopf from the watch streams) ----------------------------------------------


_DEMANDS: dict[tuple[str, int], tuple[int, Any] | None] = {}  # (uid, generation) -> (priority, demand)


@kopf.index(*MD)
def mdep_admission(namespace: str, name: str, uid: str, body: kopf.Body, **_: Any) -> dict[str, Candidate] | None:
    key = (uid, body["metadata"].get("generation") or 0)
    if key not in _DEMANDS:  # parse each generation once, not on every status event
        if len(_DEMANDS) > 100_000:
            _DEMANDS.clear()
        try:
            md = ModelDeployment.model_validate(dict(body))
            _DEMANDS[key] = (md.spec.priority, demand(md))
        except ValidationError:
            _DEMANDS[key] = None
    parsed = _DEMANDS[key]
    if parsed is None:
        return None  # never admitted: it fails before admission
    conds = (body.get("status") or {}).get("conditions") or []
    admitted = any(c.get("type") == "Admitted" and c.get("status") == "True" for c in conds)
    created = body["metadata"].get("creationTimestamp") or ""
    return {namespace: Candidate(name, parsed[0], created, parsed[1], admitted)}


@kopf.index("", "v1", "resourcequotas")
def quota_limits(namespace: str, spec: kopf.Spec, **_: Any) -> dict[str, Any]:
    return {namespace: limits_from_quota(spec)}


# --- handlers -----------------------------------------------------------------------------------


@kopf.on.resume(*MD)
@kopf.on.create(*MD)
@kopf.on.update(*MD, field="spec")
async def mdep_reconcile(body: kopf.Body, reason: kopf.Reason, memo: kopf.Memo, logger: logging.Logger,
                         mdep_admission: kopf.Index, quota_limits: kopf.Index, **_: Any) -> None:
    state: OperatorState = memo.state
    tracked = state.track(body)
    raw = dict(body)
    generation = raw["metadata"].get("generation")
    try:
        md = ModelDeployment.model_validate(raw)
    except ValidationError as e:
        message = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        async with tracked.lock:
            await publish(state, tracked, Inputs(generation, invalid=message))
        raise kopf.PermanentError(f"invalid spec: {message}") from None
    async with tracked.lock:
        await reconcile(state, tracked, md, raw, mdep_admission, quota_limits,
                        create_first=reason == kopf.Reason.CREATE, prune=reason == kopf.Reason.UPDATE)
    await refresh_namespace(state, md.namespace, mdep_admission, quota_limits, logger)


@kopf.on.event("apps", "v1", "deployments", labels=builders.MANAGED_BY)
@kopf.on.event("ray.io", "v1", "rayservices", labels=builders.MANAGED_BY)
@kopf.on.event("kubevirt.io", "v1", "virtualmachines", labels=builders.MANAGED_BY)
async def child_event(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo,
                      **_: Any) -> None:
    parent = labels.get(builders.LABEL_DEPLOYMENT)
    state: OperatorState | None = memo.get("state")
    if not parent or state is None:
        return
    key = (namespace, parent)
    child_key = (body.get("kind", ""), body["metadata"]["name"])
    if type == "DELETED":
        state.children[key].pop(child_key, None)
    else:
        cs = child_state(body)
        if cs is None:
            return
        state.children[key][child_key] = cs
    tracked = state.tracked.get(key)
    if tracked is None or tracked.inputs is None or tracked.inputs.resolved_version is None:
        return  # the parent's own reconcile publishes with this state
    async with tracked.lock:
        await publish(state, tracked, dataclasses.replace(tracked.inputs, children=children_of(state, key, tracked)))


@kopf.on.event(*MD, when=lambda type, **_: type == "DELETED")
async def mdep_deleted(namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger,
                       mdep_admission: kopf.Index, quota_limits: kopf.Index, **_: Any) -> None:
    state: OperatorState = memo.state
    state.forget((namespace, name))
    await refresh_namespace(state, namespace, mdep_admission, quota_limits, logger)


@kopf.on.event("", "v1", "resourcequotas")
async def quota_event(namespace: str, memo: kopf.Memo, logger: logging.Logger, mdep_admission: kopf.Index,
                      quota_limits: kopf.Index, **_: Any) -> None:
    state: OperatorState | None = memo.get("state")
    if state is not None:
        await refresh_namespace(state, namespace, mdep_admission, quota_limits, logger)


# --- the work -----------------------------------------------------------------------------------


NO_QUOTA = Decision(True, message="no ResourceQuota in the namespace")


async def admit(state: OperatorState, namespace: str, mdep_admission: kopf.Index, quota_limits: kopf.Index,
                name: str | None = None) -> dict[str, Decision]:
    """Decisions for the namespace (only ``name``'s when there is no quota: everything is admitted)."""
    if name is not None and namespace not in quota_limits:
        state.admitted.add((namespace, name))
        return {name: NO_QUOTA}
    async with state.ns_locks[namespace]:
        limits = merge_limits(quota_limits.get(namespace, []))
        candidates = [
            dataclasses.replace(c, admitted=c.admitted or (namespace, c.name) in state.admitted)
            for c in mdep_admission.get(namespace, [])
        ]
        decisions = decide(candidates, limits)
        state.admitted.update((namespace, n) for n, d in decisions.items() if d.admitted)
        return decisions


async def reconcile(state: OperatorState, tracked: Tracked, md: ModelDeployment, body: Mapping[str, Any],
                    mdep_admission: kopf.Index, quota_limits: kopf.Index, *, create_first: bool,
                    prune: bool) -> None:
    """One pass for one ModelDeployment; the caller holds ``tracked.lock``."""
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
    base = Inputs(gen, admitted=True, admission_message=decision.message)

    spec = md.spec
    try:
        version = await state.resolver.resolve(spec.model.name, version=spec.model.version, alias=spec.model.alias)
        canary = await state.resolver.version(spec.model.name, spec.canary.version) if spec.canary else None
    except ModelNotFound as e:
        await publish(state, tracked, dataclasses.replace(base, resolve_error=("ModelNotFound", str(e))))
        raise kopf.TemporaryError(str(e), delay=cfg.failed_retry_seconds) from None
    except RegistryUnavailable as e:
        raise kopf.TemporaryError(str(e), delay=REGISTRY_RETRY_SECONDS) from None

    children = builders.build_children(md, builders.Versions(version, canary), cfg)
    kopf.adopt(children, owner=dict(body))
    try:
        for child in children:
            live = await ensure(state.kube, child, create_first=create_first)
            cs = child_state(live)
            if cs is not None:
                state.children[key][(cs.kind, cs.name)] = cs
        if prune:
            await prune_children(state, md, children)
    except ApiError as e:
        if e.transient:
            raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=5) from None
        raise kopf.PermanentError(f"Kubernetes API rejected a child: {e}") from None

    tracked.expected = tuple((c["kind"], c["metadata"]["name"]) for c in children
                             if c["kind"] in ("Deployment", "RayService", "VirtualMachine"))
    tracked.inputs = dataclasses.replace(base, resolved_version=version, canary_version=canary,
                                         url=builders.url(md, cfg))
    await publish(state, tracked, dataclasses.replace(tracked.inputs, children=children_of(state, key, tracked)))


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


async def prune_children(state: OperatorState, md: ModelDeployment, wanted: Iterable[Mapping[str, Any]]) -> None:
    """Delete children this operator may have made for ``md`` that the current spec no longer wants."""
    keep = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in wanted}
    for api_version, kind, name in builders.possible_children(md):
        if (api_version, kind, name) not in keep:
            try:
                await state.kube.delete(path_for(api_version, kind, md.namespace, name))
            except ApiError as e:
                if e.status != 404 and not (e.status == 403 or e.reason == "NotFound"):
                    raise
            state.children[(md.namespace, md.name)].pop((kind, name), None)


def children_of(state: OperatorState, key: Key, tracked: Tracked) -> tuple[ChildState, ...]:
    cache = state.children.get(key, {})
    return tuple(cache.get(ck) or ChildState(ck[0], ck[1], 1, 0, False) for ck in tracked.expected)


async def publish(state: OperatorState, tracked: Tracked, inputs: Inputs) -> None:
    """Write the status computed from ``inputs`` if it differs; post an Event on a phase change."""
    if inputs.invalid is None:
        tracked.inputs = dataclasses.replace(inputs, children=())
    previous = tracked.last_status
    new = compute(inputs, previous)
    if essential(new) == essential(previous):
        return
    meta = tracked.ref["metadata"]
    path = path_for(API_VERSION, KIND, meta["namespace"], meta["name"], "status")
    try:
        await state.kube.patch(path, {"status": new})
    except ApiError as e:
        if e.status == 404:
            return  # deleted meanwhile
        raise kopf.TemporaryError(f"status update failed: {e}", delay=2) from None
    tracked.last_status = {**(previous or {}), **{k: v for k, v in new.items()}}
    old_phase, new_phase = phase_of(previous), phase_of(new)
    if old_phase != new_phase:
        ready = next((c for c in new["conditions"] if c["type"] == "Ready"), None)
        message = f"{old_phase.value} -> {new_phase.value}" + (f": {ready['message']}" if ready else "")
        kopf.event(tracked.ref, type="Warning" if new_phase in WARNING_PHASES else "Normal",
                   reason=new_phase.value, message=message)


async def refresh_namespace(state: OperatorState, namespace: str, mdep_admission: kopf.Index,
                            quota_limits: kopf.Index, logger: logging.Logger) -> None:
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
                    await reconcile(state, tracked, md, body, mdep_admission, quota_limits, create_first=True,
                                    prune=False)
            except (kopf.TemporaryError, kopf.PermanentError, ValidationError) as e:
                logger.warning(f"admitted {namespace}/{name} but could not deploy it yet: {e}")
        elif (d.position, d.message) != (tracked.inputs.queue_position, tracked.inputs.admission_message):
            async with tracked.lock:
                await publish(state, tracked, dataclasses.replace(
                    tracked.inputs, queue_position=d.position, admission_reason=d.reason,
                    admission_message=d.message))
