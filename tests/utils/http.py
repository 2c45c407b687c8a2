"""A minimal HTTP client for the tests (stdlib only, so it measures nothing but the server), the reading of a
sample from the Prometheus text a server's ``/metrics`` answers, and a record of the writes asyncio's socket
transports make (one answer, one write)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, url: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> Reply:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def get(url: str) -> Reply:
    return call("GET", url)


def post(url: str, body: bytes | dict, headers: dict[str, str] | None = None) -> Reply:
    return call("POST", url, body, headers)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def record_socket_writes(monkeypatch) -> list[bytes]:
    """Every ``write`` made on asyncio's real socket transports (its selector loop's transport class, Python code)
    from now until the test ends: the list fills as they happen."""
    from asyncio.selector_events import _SelectorSocketTransport

    writes: list[bytes] = []
    real = _SelectorSocketTransport.write

    def write(self, data) -> None:
        writes.append(bytes(data))
        real(self, data)

    monkeypatch.setattr(_SelectorSocketTransport, "write", write)
    return writes
