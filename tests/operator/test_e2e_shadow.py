"""Shadow traffic on a real control plane (issue 15, item 5): the operator (a subprocess, as its own
ServiceAccount) makes ``<name>-shadow`` Deployment and Service beside the stable ones, points the stable pods at
the shadow's Service, reports ``status.shadowVersion``, and prunes the shadow's children when ``spec.shadow`` goes;
the API server's CEL rules refuse a bad shadow."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.k8s.controlplane import KubeError
from tests.k8s.fixtures import MODEL, register
from tests.utils.procs import wait_until

pytestmark = pytest.mark.slow
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
DEPS = "/apis/apps/v1/namespaces/{ns}/deployments"
DEADLINE = 60.0


def command(dep: dict[str, Any]) -> list[str]:
    return dep["spec"]["template"]["spec"]["containers"][0]["command"]


def env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_shadow_children_status_and_pruning(k8s_admin, mlstack_operator, ns, registered_model):
    kube = k8s_admin
    v2 = register(registered_model, MODEL)
    path = MDS.format(ns=ns) + "/sh"
    kube.create(MDS.format(ns=ns), {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
                                    "metadata": {"name": "sh", "namespace": ns},
                                    "spec": {"model": {"name": MODEL, "version": "1"},
                                             "resources": {"cpu": "100m", "memory": "128Mi"},
                                             "shadow": {"version": v2, "percent": 20}}})

    def ready():
        st = (kube.get(path) or {}).get("status") or {}
        return st if st.get("phase") == "Ready" and st.get("shadowVersion") == v2 else None

    try:
        st = wait_until(ready, DEADLINE, interval=0.1, what="Ready with its shadow")
    except TimeoutError:
        raise AssertionError(f"last status {(kube.get(path) or {}).get('status')}\n"
                             f"{mlstack_operator.log()[-4000:]}") from None
    assert st["resolvedVersion"] == "1" and st["readyReplicas"] == 2  # stable + shadow pods
    stable, shadow = kube.get(DEPS.format(ns=ns) + "/sh"), kube.get(DEPS.format(ns=ns) + "/sh-shadow")
    cmd = command(stable)
    assert cmd[cmd.index("--shadow-url") + 1] == f"http://sh-shadow.{ns}.svc.cluster.local:8080"
    assert cmd[cmd.index("--shadow-percent") + 1] == "20"
    assert f"models:/{MODEL}/{v2}" in command(shadow) and "--shadow-url" not in command(shadow)
    assert env(shadow)["MLSTACK_SERVE_TRACK"] == "shadow" and env(shadow)["MLSTACK_SERVE_MONITORING_SAMPLE_RATE"] == "1"
    svc = kube.get(f"/api/v1/namespaces/{ns}/services/sh-shadow")
    assert svc["spec"]["selector"] == {"mlstack.io/deployment": "sh", "mlstack.io/track": "shadow"}
    assert kube.get(f"/api/v1/namespaces/{ns}/services/sh")["spec"]["selector"]["mlstack.io/track"] == "stable"

    # the CRD's CEL rules at the API server
    for bad, message in (({"version": "1", "percent": 5}, "shadow.version must differ from model.version"),
                         ({"version": v2, "alias": "champion", "percent": 5},
                          "exactly one of shadow.version and shadow.alias"),
                         ({"version": v2, "percent": 0}, "spec.shadow.percent")):
        with pytest.raises(KubeError) as e:
            kube.patch(path, {"spec": {"shadow": bad}})
        assert e.value.status == 422 and message in e.value.body, e.value.body

    # no shadow any more: its Deployment and Service are pruned, the stable pods stop mirroring
    kube.patch(path, {"spec": {"shadow": None}})
    wait_until(lambda: kube.get(DEPS.format(ns=ns) + "/sh-shadow") is None
               and kube.get(f"/api/v1/namespaces/{ns}/services/sh-shadow") is None, DEADLINE, what="shadow pruned")
    wait_until(lambda: "--shadow-url" not in command(kube.get(DEPS.format(ns=ns) + "/sh")), DEADLINE,
               what="stable without --shadow-url")
    wait_until(lambda: (st := (kube.get(path) or {}).get("status") or {}).get("phase") == "Ready"
               and not st.get("shadowVersion"), DEADLINE, what="status without shadowVersion")


def test_a_moved_shadow_alias_rolls_the_shadow_only(k8s_admin, mlstack_operator, ns, registered_model):
    from mlflow import MlflowClient

    kube = k8s_admin
    model = f"shadowed_{secrets.token_hex(3)}"
    v1, v2, v3 = (register(registered_model, model) for _ in range(3))
    client = MlflowClient(registered_model)
    client.set_registered_model_alias(model, "challenger", v2)
    path = MDS.format(ns=ns) + "/sa"
    kube.create(MDS.format(ns=ns), {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
                                    "metadata": {"name": "sa", "namespace": ns},
                                    "spec": {"model": {"name": model, "version": v1},
                                             "resources": {"cpu": "100m", "memory": "128Mi"},
                                             "shadow": {"alias": "challenger", "percent": 50}}})

    def status(version):
        def check():
            st = (kube.get(path) or {}).get("status") or {}
            return st if st.get("phase") == "Ready" and st.get("shadowVersion") == version else None
        return check

    wait_until(status(v2), DEADLINE, interval=0.1, what=f"Ready with shadow {v2}")
    stable_before = kube.get(DEPS.format(ns=ns) + "/sa")["metadata"]["generation"]
    client.set_registered_model_alias(model, "challenger", v3)
    st = wait_until(status(v3), 30, interval=0.1, what=f"shadow rolled to {v3}")
    assert st["resolvedVersion"] == v1
    assert f"models:/{model}/{v3}" in command(kube.get(DEPS.format(ns=ns) + "/sa-shadow"))
    assert kube.get(DEPS.format(ns=ns) + "/sa")["metadata"]["generation"] == stable_before  # stable untouched
    rolled = [e for e in kube.items(f"/api/v1/namespaces/{ns}/events") if e["reason"] == "Rolled"]
    assert any(f"shadow alias 'challenger' moved: rolling the shadow from version {v2} to version {v3}"
               in e["message"] for e in rolled), [e["message"] for e in rolled]
    # the alias onto the live version itself: nothing to compare, the shadow's children go
    client.set_registered_model_alias(model, "challenger", v1)
    wait_until(lambda: kube.get(DEPS.format(ns=ns) + "/sa-shadow") is None, 30, what="shadow pruned")
    wait_until(status(None), 30, interval=0.1, what="no shadowVersion")
