"""Property-based: over >= 3,000 generated requests, covering every route of the OpenAPI document, the API never
answers 5xx (bad input is a clear 4xx).

Operations that would start real work (training, schedules, deployments, uploads) get only schema-violating
(negative) cases; the rest get valid and invalid cases. The event-stream routes are called with
``stream=True`` and closed once the status line is in (a 200 stream never ends). This API runs in local
mode with auth off; ``/orgs`` answers 404 there (no organisations in local mode), and any 5xx fails,
including those routes'.
"""

from __future__ import annotations

import time

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

STREAMING = {"/webhook", "/alerts/stream"}
NEGATIVE_ONLY = {("POST", "/trigger_training"), ("POST", "/train"), ("POST", "/schedule_training"),
                 ("POST", "/watch_model"), ("POST", "/deployments"), ("POST", "/models/{name}/versions"),
                 ("POST", "/models/{name}/versions/{version}/copy")}
EXAMPLES = 48
# reads that call MLflow many times per request (every version's run) and take little or no input: fewer cases
SLOW = {"GET /get_metrics": 15, "GET /models": 15}
MIN_CASES = 3000


def _generous_sla(case):
    """A valid but tiny ``sla_seconds`` makes a correct 503 (deadline missed); keep valid SLAs generous."""
    body = case.body
    if case.path == "/inference" and isinstance(body, dict) and isinstance(body.get("sla_seconds"), float) \
            and body["sla_seconds"] >= 0.1:
        body["sla_seconds"] = 60.0
    return case


def _status(case, api_url: str, session: requests.Session) -> tuple[int, str]:
    if case.path in STREAMING:
        kwargs = case.as_transport_kwargs(base_url=api_url)
        with session.request(**kwargs, stream=True, timeout=30) as resp:  # closed once the status line is in
            return resp.status_code, "" if resp.status_code < 500 else resp.text[:300]
    resp = case.call(base_url=api_url, session=session, timeout=60)
    return resp.status_code, resp.text[:300] if resp.status_code >= 500 else ""


def _fuzz(op, mode, label: str, api_url: str, session: requests.Session, calls: dict[str, int],
          failures: list[str]) -> None:
    @settings(max_examples=SLOW.get(label, EXAMPLES), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode).map(_generous_sla))
    def run(case):
        status, text = _status(case, api_url, session)
        calls[label] += 1
        if status >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.body!r:.200} -> {status}: {text}")

    try:
        run()
    except Unsatisfiable:  # nothing to violate (e.g. no parameters and no body)
        assert mode is GenerationMode.NEGATIVE


def test_no_server_errors(api_url, trained):
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    calls: dict[str, int] = {}
    failures: list[str] = []
    session = requests.Session()
    t0 = time.monotonic()
    spent: dict[str, float] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        calls[label] = 0
        started = time.monotonic()
        modes = [GenerationMode.NEGATIVE]
        if (op.method.upper(), op.path) not in NEGATIVE_ONLY:
            modes.append(GenerationMode.POSITIVE)
        for mode in modes:
            _fuzz(op, mode, label, api_url, session, calls, failures)
        spent[label] = time.monotonic() - started
    elapsed = time.monotonic() - t0
    total = sum(calls.values())
    slowest = ", ".join(f"{k} {v:.0f}s/{calls[k]}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:5])
    print(f"schemathesis: {total} requests over {len(calls)} operations in {elapsed:.0f}s (slowest: {slowest})")
    assert not failures, "\n".join(failures[:20])
    assert total >= MIN_CASES, f"only {total} generated requests"
    paths = session.get(f"{api_url}/openapi.json").json()["paths"]
    every = {f"{m.upper()} {p}" for p, ops in paths.items() for m in ops}
    assert every == set(calls), every ^ set(calls)
    assert not [label for label, n in calls.items() if n == 0], calls
