"""A real Ray head with its job server (tests/utils/training.py), one per module."""

from __future__ import annotations

import shutil

import pytest

from tests.utils.training import RayHead


@pytest.fixture(scope="module")
def ray_head(workdir):
    head = RayHead(workdir / "training-ray").start()
    yield head
    head.stop()
    shutil.rmtree(head.temp, ignore_errors=True)
