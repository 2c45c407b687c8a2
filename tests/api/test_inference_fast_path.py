"""``POST /inference``'s fast path (``mlstack.api.hotpath``) answers exactly as the FastAPI route does.

Two real API processes on the same Redis, MLflow and tokens: ``mlstack api`` (the fast path on) and the same app
built with ``create_app(fast_inference=False)`` (the route only). Every request below goes to both, byte for byte
the same; status, headers (but the date) and body must match (a 200's latency and the model server's request id
aside). The fast API's ``mlstack_api_inference_fast_path_total`` says who answered: so the test knows the fast
path answered what it should, and left the rest to the route.
"""

from __future__ import annotations

import json
import re
import secrets
import sys

import httpx
import pytest

from tests.utils.procs import free_port, http_ok, start, start_api

TOKENS = {role: secrets.token_urlsafe(24) for role in ("viewer", "deployer")}
LIMIT = 64 * 1024  # the route's body limit in both APIs
ROW = [5.1, 3.5, 1.4, 0.2]
VARYING = ("latency_ms", "request_id")  # differ between any two answers
ROUTE_ONLY = ("import sys, uvicorn; from mlstack.api.main import create_app; "
              "uvicorn.run(create_app(fast_inference=False), host='127.0.0.1', port=int(sys.argv[1]), "
              "http='httptools', loop='uvloop', log_level='warning')")


@pytest.fixture(scope="module")
def apis(stack_env, workdir, model):
    tokens = [{"name": f"{role}-user", "role": role, "token": tok} for role, tok in TOKENS.items()]
    env = {**stack_env, "MLSTACK_MODEL_NAME": model.name, "MLSTACK_AUTH_TOKENS": json.dumps(tokens),
           "MLSTACK_API_BODY_LIMITS": json.dumps({"POST /inference": LIMIT})}
    fast, fast_url = start_api(workdir / "fast-path" / "fast.log", {
        **env, "MLSTACK_STATE_DIR": str(workdir / "fast-path" / "fast"), "MLSTACK_SERVE_PORT_RANGE": "[27900, 27949]"})
    port = free_port()
    route_url = f"http://127.0.0.1:{port}"
    route = start([sys.executable, "-c", ROUTE_ONLY, str(port)], workdir / "fast-path" / "route.log",
                  ready=lambda: http_ok(f"{route_url}/healthz"), timeout=120, what="route-only API",
                  env={**env, "MLSTACK_STATE_DIR": str(workdir / "fast-path" / "route"),
                       "MLSTACK_SERVE_PORT_RANGE": "[27950, 27999]"})
    yield fast_url, route_url
    route.stop(timeout=30)
    fast.stop(timeout=30)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


JSON = {"Content-Type": "application/json"}
VIEWER = {**JSON, **bearer("viewer")}


def body(obj) -> bytes:
    return json.dumps(obj).encode()


# (id, headers, raw body, expected status, who answers on the fast API: fast | replayed | app)
CASES = [
    ("champion", VIEWER, body({"input_data": ROW}), 200, "fast"),
    ("batch", VIEWER, body({"input_data": [ROW, [6.9, 3.1, 5.4, 2.1]]}), 200, "fast"),
    ("json with a charset", {**VIEWER, "Content-Type": "application/json; charset=utf-8"},
     body({"input_data": [ROW, ROW], "alias": "champion", "retries": 0}), 200, "fast"),
    ("no token", JSON, body({"input_data": ROW}), 401, "fast"),
    ("wrong token", {**JSON, "Authorization": "Bearer not-a-token"}, body({"input_data": ROW}), 401, "fast"),
    ("basic scheme", {**JSON, "Authorization": "Basic dXNlcjpwYXNz"}, body({"input_data": ROW}), 401, "fast"),
    ("bearer without a token", {**JSON, "Authorization": "Bearer"}, body({"input_data": ROW}), 401, "fast"),
    ("no token, bad body", JSON, b"{not json", 401, "fast"),
    ("unknown version", VIEWER, body({"input_data": ROW, "version": "9999"}), 404, "fast"),
    ("unknown model", VIEWER, body({"input_data": ROW, "model": "no_such_model_fast_path"}), 404, "fast"),
    ("unknown alias", {**bearer("deployer"), **JSON}, body({"input_data": ROW, "alias": "nope"}), 404, "fast"),
    ("unknown deployment", VIEWER, body({"input_data": ROW, "deployment": "models/no-such"}), 404, "fast"),
    ("wrong width", VIEWER, body({"input_data": [1.0, 2.0, 3.0]}), 422, "fast"),
    ("named rows, model without names", VIEWER, body({"input_data": [
        dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], ROW, strict=True))]}), 422, "fast"),
    ("invalid json", VIEWER, b'{"input_data": [1,', 422, "replayed"),
    ("trailing garbage", VIEWER, body({"input_data": ROW}) + b"x", 422, "replayed"),
    ("json with a BOM", VIEWER, b"\xef\xbb\xbf" + body({"input_data": ROW}), 200, "replayed"),
    ("no rows", VIEWER, body({"input_data": []}), 422, "replayed"),
    ("wrong fields", VIEWER, body({"data": "not rows"}), 422, "replayed"),
    ("not numbers", VIEWER, body({"input_data": ["a", "b", "c", "d"]}), 422, "replayed"),
    ("too many retries", VIEWER, body({"input_data": ROW, "retries": 11}), 422, "replayed"),
    ("version and alias", VIEWER, body({"input_data": ROW, "version": "1", "alias": "champion"}), 422, "replayed"),
    ("not an object", VIEWER, b"[1, 2, 3]", 422, "replayed"),
    ("null", VIEWER, b"null", 422, "replayed"),
    ("text/plain", {**bearer("viewer"), "Content-Type": "text/plain"}, body({"input_data": ROW}), 422, "app"),
    ("no content type", bearer("viewer"), body({"input_data": ROW}), 422, "app"),
    ("empty body", VIEWER, b"", 422, "app"),
    ("empty body, no token", JSON, b"", 401, "app"),
    ("over the limit", VIEWER, body({"input_data": [ROW] * 4000}), 413, "app"),
    ("over the limit, no token", JSON, body({"input_data": [ROW] * 4000}), 401, "app"),
]


def send(url: str, headers: dict[str, str], content: bytes) -> httpx.Response:
    # httpx adds Content-Length (0 for an empty body) and no Content-Type of its own
    return httpx.post(f"{url}/inference", content=content, headers=headers, timeout=60)


def comparable(r: httpx.Response) -> tuple[int, list[tuple[str, str]], object]:
    headers = [(k, v) for k, v in r.headers.multi_items() if k not in ("date", "content-length")]
    if r.status_code != 200:
        return r.status_code, headers, r.content
    out = r.json()
    assert all(out.pop(k) is not None for k in VARYING), out
    return r.status_code, headers, out


def taken(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {how: float(n) for how, n in re.findall(
        r'^mlstack_api_inference_fast_path_total\{how="(\w+)"\} ([0-9.e+]+)$', text, re.M)}


@pytest.mark.parametrize(("headers", "content", "status", "who"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_fast_path_answers_as_the_route(apis, headers, content, status, who):
    fast_url, route_url = apis
    route = send(route_url, headers, content)
    before = taken(fast_url)
    fast = send(fast_url, headers, content)
    after = taken(fast_url)
    assert route.status_code == status, route.text
    assert comparable(fast) == comparable(route)
    grew = {how for how in ("fast", "replayed", "app") if after.get(how, 0) > before.get(how, 0)}
    assert grew == {who}, (before, after)


@pytest.mark.parametrize("rows", [ROW, [ROW, [6.9, 3.1, 5.4, 2.1]]], ids=["one row", "two rows"])
def test_the_answer_is_the_response_model_field_for_field(apis, rows):
    """The answer the fast path writes (orjson of the model's dump) is exactly ``InferenceResponse``, the OpenAPI
    document's model: its fields, in its order, with its types; ``prediction`` only when one row was sent."""
    from mlstack.inference import InferenceResponse

    fast_url, _ = apis
    r = send(fast_url, VIEWER, body({"input_data": rows}))
    assert r.status_code == 200, r.text
    out = r.json()
    assert list(out) == list(InferenceResponse.model_fields)
    assert InferenceResponse.model_validate(out).model_dump(mode="json") == out
    assert (out["prediction"] is None) == isinstance(rows[0], list)  # the single prediction for one row only


def test_the_route_only_api_never_takes_the_fast_path(apis):
    _, route_url = apis
    assert send(route_url, VIEWER, body({"input_data": ROW})).status_code == 200
    assert set(taken(route_url).values()) == {0.0}


def test_the_route_stays_in_the_openapi_document(apis):
    fast_url, _ = apis
    doc = httpx.get(f"{fast_url}/openapi.json", timeout=30).json()
    op = doc["paths"]["/inference"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferenceRequest")
    assert {"200", "404", "422", "503"} <= set(op["responses"])
