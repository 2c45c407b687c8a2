"""manifests/monitoring/grafana-dashboard.json queries only series the code exposes: the model server's
(``ServingMetrics``) and the monitor's (``MonitorMetrics``) real /metrics text, parsed; and the monitor's names
follow Prometheus conventions (counters end in ``_total``, durations are ``_seconds``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlstack.monitoring.cluster import MonitorMetrics
from mlstack.serving.metrics import ServingMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "grafana-dashboard.json"


def exposed() -> dict[str, str]:
    """sample name -> metric type, of both processes' /metrics with every labelled series present."""
    serve = ServingMetrics("iris")
    serve.observe_request("infer", 200, 0.01)
    serve.observe_batch(4, 2)
    serve.canary = SimpleNamespace(forwarded=1, fallbacks=0)
    serve.set_ready(True)
    mon = MonitorMetrics()
    mon.leader.set(1)
    mon.rounds.labels("ok").inc()
    mon.round_seconds.observe(0.1)
    mon.records.labels("ns", "d").inc(3)
    mon.pull_errors.labels("ns", "d").inc()
    mon.servers.labels("ns", "d", "stable").set(2)
    mon.slo_met.labels("ns", "d").set(1)
    out: dict[str, str] = {}
    for text in (serve.render(), generate_latest(mon.registry)):
        for fam in text_string_to_metric_families(text.decode()):
            for s in fam.samples:
                out[s.name] = fam.type
    return out


def test_every_metric_the_dashboard_queries_is_exposed():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    queried = {m for e in exprs for m in re.findall(r"\bmlstack_[a-z0-9_]+", e)}
    assert {n for n in queried if n.startswith("mlstack_serve_")} and {n for n in queried
                                                                        if n.startswith("mlstack_monitor_")}
    names = exposed()
    missing = sorted(queried - set(names))
    assert not missing, f"the dashboard queries series nothing exposes: {missing}"


def test_monitor_metric_names_follow_prometheus_conventions():
    names = {n: t for n, t in exposed().items() if n.startswith("mlstack_monitor_")}
    assert len({re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in names}) == 7
    for name, kind in names.items():
        if kind == "counter" and not name.endswith("_created"):
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert re.search(r"_seconds_(bucket|sum|count|created)$", name), name
