"""Fixed facts of the session's stack (tests/conftest.py starts it): the iris CSV it serves from S3, the
credentials of its S3 API (moto server)."""

from __future__ import annotations

from pathlib import Path

IRIS_CSV = Path(__file__).resolve().parents[2] / "fastapi" / "mlstack" / "data" / "iris.csv"
S3_KEY = "test-access-key"
S3_SECRET = "test-secret-key"  # moto accepts any credentials
