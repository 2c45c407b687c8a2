"""Property-based: generated requests to the upload and copy operations never get a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

OPERATIONS = {("POST", "/models/{name}/versions"), ("POST", "/models/{name}/versions/{version}/copy")}


def test_upload_and_copy_never_5xx(pkg_api):
    schema = schemathesis.openapi.from_url(f"{pkg_api}/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in OPERATIONS:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal calls
                resp = case.call(base_url=pkg_api, timeout=60)
                calls += 1
                if resp.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}")

            run()
    assert not failures, "\n".join(failures[:20])
    assert calls >= 100
