"""The API's in-process Ray connection (``ray.init``), one per API process.

Made at startup by the composition root (``mlstack.api.services``) and handed to the ones that need Ray: local
Ray Serve deployments connect through it (``mlstack.deployments.local_children.RayServe``), the training
``JobManager`` reports it in ``/readyz``. Ray starts on first use only (a local Ray of this process, or the
cluster at ``MLSTACK_RAY_ADDRESS``) and is shut down with the API. Training jobs themselves do not use it: they
go to a Ray job server through the Job Submission API (``mlstack.training.rayjobs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from mlstack.errors import Unavailable
from mlstack.settings import Settings

log = logging.getLogger(__name__)

RAY_TEMP_DIR_MAX = 40  # Ray puts unix sockets at <temp>/session_<date>_<pid>/sockets/dash_<Module>: 107 bytes at most


def ray_temp_dir(wanted: Path) -> Path:
    """``wanted`` when it is short enough for Ray's unix sockets, else a short directory under /tmp named after
    it (stable: the same ``wanted`` always gives the same one)."""
    wanted = Path(wanted).resolve()
    if len(str(wanted)) <= RAY_TEMP_DIR_MAX:
        return wanted
    short = Path(tempfile.gettempdir()) / f"mlstack-ray-{hashlib.sha256(str(wanted).encode()).hexdigest()[:10]}"
    log.info("Ray temp dir %s is too long for Ray's unix sockets; using %s", wanted, short)
    return short


def ray_env_defaults() -> None:
    """Local Ray Serve in this process: no token auth between the API and its own local Ray."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


class RayClient:
    """``ray.init`` in this process, once, on first ``ensure``; ``stop`` shuts it down (if it ever started)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.started = False
        self.error: str | None = None  # why the last start failed (None once started)
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Connect to Ray (local, or ``MLSTACK_RAY_ADDRESS``) unless connected; ``Unavailable`` if it cannot."""
        async with self._lock:
            if self.started:
                return
            try:
                await asyncio.to_thread(self._init)
            except Exception as e:
                self.error = f"Ray unavailable: {e}"
                raise Unavailable(self.error) from None
            self.started, self.error = True, None

    def _init(self) -> None:
        import ray

        s = self.settings
        if s.ray_address:
            ray.init(address=s.ray_address, ignore_reinit_error=True, log_to_driver=False)
            return
        temp = ray_temp_dir(s.ray_temp_dir)  # the same bound on Ray's unix socket paths as the job server's head
        temp.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=s.ray_num_cpus, object_store_memory=s.ray_object_store_mb * 1024 * 1024,
                 include_dashboard=False, _temp_dir=str(temp), ignore_reinit_error=True, log_to_driver=False)

    async def stop(self) -> None:
        if self.started:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self.started = False
