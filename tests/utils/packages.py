"""The upload tests' API settings (tests/packages/conftest.py starts it with them): its model name and limits."""

from __future__ import annotations

MODEL = "packages_model"
EXPERIMENT = "packages-tests"
MiB = 1024 * 1024
LIMITS = {  # MLSTACK_PACKAGE_* for the API under test
    "MAX_UPLOAD_BYTES": 6 * MiB,
    "MAX_TOTAL_BYTES": 4 * MiB,
    "MAX_ENTRY_BYTES": 3 * MiB,
    "MAX_ENTRIES": 100,
    "MAX_RATIO": 100,
    "RATIO_MIN_BYTES": 256 * 1024,
}
