"""What serves one local ModelDeployment (the children ``local.LocalDeployments`` supervises).

* ``ProcessChild`` (``server: onnx``): ``mlstack serve`` processes, with a canary's exact share forwarded and a
  shadow's share mirrored by the stable version's server;
* ``RayServeChild`` (``server: rayserve``): an application in local Ray Serve (``mlstack.serving.rayserve:build_app``,
  route prefix ``/<namespace>/<name>``, fractional CPUs per replica), on the ``RayServe`` instance all of them share,
  which connects through the API's ``mlstack.rayclient.RayClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from mlstack.deployments.settings import DeploymentSettings
from mlstack.errors import Unavailable
from mlstack.local.procs import last_line, stop_pidfile
from mlstack.local.servers import ServerPool
from mlstack.rayclient import RayClient
from mlstack.settings import Settings

RATE_ENV = "MLSTACK_SERVE_MONITORING_SAMPLE_RATE"

Canary = tuple[str, int]  # (canary version, traffic percent)
Shadow = tuple[str, float]  # (shadow version, mirrored percent)


class Child(Protocol):
    """What serves one local deployment."""

    kind: str

    async def start(self, version: str, replicas: int, canary: Canary | None = None,
                    shadow: Shadow | None = None) -> str:
        """Start (or replace) the serving child for ``version`` (with ``canary``'s exact share of requests going
        to that version, and ``shadow``'s share mirrored to that one); return its base URL once ready."""

    async def wait_exit(self) -> str:
        """Return (with a reason) when the child stops serving; never returns while it is healthy."""

    async def retire(self, keep: str) -> None:
        """After a roll (traffic already switched): stop what the last successful ``start`` does not use."""

    async def stop(self) -> None: ...


class ProcessChild:
    """``server: onnx``: ``mlstack serve`` processes (pid files under state_dir/deployments/NS/NAME).

    Without a canary one plain server of the version. With a canary, as in a cluster: a plain server of the
    canary version, and in front of it the stable version's server started with ``--canary-url`` (the plain
    one's URL) and ``--canary-percent``, which forwards exactly that share of requests (``front`` pool, one per
    canary configuration). Promote (the canary's plain server is already running: traffic switches to it) and
    abort (a plain server of the stable version starts beside the front one) roll without a gap.

    With a shadow: a server of the shadow version (``shadow`` pool: track ``shadow``, logging every request it
    gets for the monitor) and the stable version's front server started with ``--shadow-url``/``--shadow-percent``
    (and the canary's arguments, if any), which mirrors that share of requests to it in the background.
    """

    kind = "Process"

    def __init__(self, settings: Settings, namespace: str, name: str, model: str, reserved: set[int],
                 env: dict[str, str] | None = None):
        self.settings = settings.model_copy(
            update={"state_dir": settings.state_dir / "deployments" / namespace / name})
        self.env = dict(env or {})  # every server's extra environment (the payload log's sample rate)
        # ports shared with its siblings
        self.pool = ServerPool(self.settings, reserved_ports=reserved, extra_env=self.env)
        # shadow versions: every request they get is a mirrored one, and each is logged (unless monitoring is off)
        shadow_rate = "1" if float(self.env.get(RATE_ENV, "1")) > 0 else "0"
        self.shadow_pool = ServerPool(self.settings, reserved_ports=reserved, subdir="shadow",
                                      extra_env={**self.env, RATE_ENV: shadow_rate, "MLSTACK_SERVE_TRACK": "shadow"})
        self.fronts: dict[tuple[str, ...], ServerPool] = {}  # the stable version forwarding a canary's share
        self.model = model
        self.reserved = reserved
        self.version: str | None = None  # the version started last
        # (pool, version, track) the last successful start serves with, the live stable server first
        self._using: list[tuple[ServerPool, str, str]] = []

    def _pools(self) -> list[ServerPool]:
        return [self.pool, self.shadow_pool, *self.fronts.values()]

    async def _plain(self, version: str, pool: ServerPool | None = None) -> str:
        # beside any other version's live server: a roll switches traffic before the old one stops (retire);
        # a dead one of another version (crashed, then the alias moved) only gives its port back
        pool = pool or self.pool
        for srv in pool.servers():
            if srv.version != version and not srv.alive():
                await pool.stop(srv.name, srv.version)
        return await pool.endpoint(self.model, version)

    async def start(self, version: str, replicas: int, canary: Canary | None = None,
                    shadow: Shadow | None = None) -> str:
        args: tuple[str, ...] = ()
        others: list[tuple[ServerPool, str, str]] = []
        subdir = "front"
        if canary is not None and canary[0] != version:
            args += ("--canary-url", await self._plain(canary[0]), "--canary-percent", str(canary[1]))
            others.append((self.pool, canary[0], "canary"))
            subdir += f"-v{canary[0]}-{canary[1]}pct"
        if shadow is not None and shadow[0] != version:
            args += ("--shadow-url", await self._plain(shadow[0], self.shadow_pool), "--shadow-percent",
                     f"{shadow[1]:g}")
            others.append((self.shadow_pool, shadow[0], "shadow"))
            subdir += f"-shadow-v{shadow[0]}-{shadow[1]:g}pct"
        if not args:
            url = await self._plain(version)
            self._using = [(self.pool, version, "stable")]
        else:
            front = self.fronts.get(args)
            if front is None:
                front = self.fronts[args] = ServerPool(self.settings, reserved_ports=self.reserved, extra_args=args,
                                                       subdir=f"{subdir}-{len(self.fronts)}", extra_env=self.env)
            url = await front.endpoint(self.model, version)
            self._using = [(front, version, "stable"), *others]
        self.version = version
        return url

    async def retire(self, keep: str) -> None:
        using = {(id(p), v) for p, v, _ in self._using}
        for pool in self._pools():
            for srv in pool.servers():
                if (id(pool), srv.version) not in using:
                    await pool.stop(srv.name, srv.version)  # SIGTERM: the server finishes in-flight requests
        for args, pool in list(self.fronts.items()):
            if not pool.servers() and all(p is not pool for p, _, _ in self._using):
                await pool.stop_all()
                del self.fronts[args]

    async def wait_exit(self) -> str:
        servers = [srv for pool, v, _ in self._using if (srv := pool.get(self.model, v)) is not None]
        if not servers:
            return "no model server process"
        waits = {asyncio.ensure_future(srv.proc.wait_exit()): srv for srv in servers}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        srv = waits[next(iter(done))]
        return f"model server v{srv.version} exited ({srv.proc.popen.returncode}): {last_line(srv.log_path)} " \
               f"(log: {srv.log_path})"

    async def stop(self) -> None:
        for pool in self._pools():
            for srv in pool.servers():
                self.reserved.discard(srv.port)
        await asyncio.gather(*(pool.stop_all() for pool in self._pools()))
        self.fronts.clear()
        self._using = []
        await self._kill_orphans()

    async def _kill_orphans(self) -> None:
        """A start cancelled half-way (delete during startup) leaves a process the pool never adopted: stopped
        by its pid file (SIGTERM, SIGKILL after 10 s; it is not in a session of its own)."""
        for pid_file in self.settings.state_dir.glob("*/*.pid"):
            await asyncio.to_thread(stop_pidfile, pid_file, 10, False)


class RayServe:
    """The local Ray Serve instance (started on first use, in the API's Ray: ``ray``)."""

    def __init__(self, ds: DeploymentSettings, ray: RayClient):
        self.ds = ds
        self.ray = ray
        self.started = False
        self._lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{self.ds.rayserve_host}:{self.ds.rayserve_port}"

    async def ensure(self) -> None:
        async with self._lock:
            if self.started:
                return
            await self.ray.ensure()  # local Ray (or MLSTACK_RAY_ADDRESS)

            def _start() -> None:
                from ray import serve

                serve.start(http_options={"host": self.ds.rayserve_host, "port": self.ds.rayserve_port})

            try:
                await asyncio.to_thread(_start)
            except Exception as e:
                raise Unavailable(f"Ray Serve did not start on port {self.ds.rayserve_port}: {e}") from None
            self.started = True


class RayServeChild:
    """``server: rayserve``: an application ``NS--NAME`` at route prefix ``/NS/NAME`` in local Ray Serve."""

    kind = "RayServeApplication"
    POLL_SECONDS = 2.0

    def __init__(self, rayserve: RayServe, namespace: str, name: str, model: str, sample_rate: float = 0.0):
        self.rs = rayserve
        self.app = f"{namespace}--{name}"
        self.prefix = f"/{namespace}/{name}"
        self.model = model
        self.sample_rate = sample_rate  # the payload log: the application's collector, drained at its URL

    async def start(self, version: str, replicas: int, canary: Canary | None = None,
                    shadow: Shadow | None = None) -> str:
        await self.rs.ensure()  # (no shadow: the contract allows spec.shadow with server: onnx only)
        ds = self.rs.ds
        args: dict[str, Any] = {"model_uri": f"models:/{self.model}/{version}", "name": self.model,
                                "num_replicas": replicas, "num_cpus": ds.rayserve_replica_cpus,
                                "sample_rate": self.sample_rate}
        if canary is not None and canary[0] != version:  # Ray Serve's CanaryRouter: the same exact split
            args.update(canary_model_uri=f"models:/{self.model}/{canary[0]}", canary_traffic_percent=canary[1])

        def _run() -> None:
            from ray import serve

            from mlstack.serving.rayserve import build_app

            serve.run(build_app(args), name=self.app, route_prefix=self.prefix)

        try:
            await asyncio.wait_for(asyncio.to_thread(_run), ds.rayserve_start_timeout)
        except TimeoutError:
            raise Unavailable(f"Ray Serve application {self.app} not running within "
                              f"{ds.rayserve_start_timeout:.0f}s") from None
        except Exception as e:  # DEPLOY_FAILED and friends
            raise Unavailable(f"Ray Serve application {self.app} failed: {str(e)[-1000:]}") from None
        return self.url

    @property
    def url(self) -> str:
        return self.rs.base_url + self.prefix

    async def retire(self, keep: str) -> None:
        return None  # serve.run of the same application is itself a rolling update

    def _app_status(self) -> str | None:
        from ray import serve

        app = serve.status().applications.get(self.app)
        return None if app is None else str(app.status)

    async def wait_exit(self) -> str:
        while True:
            try:
                status = await asyncio.to_thread(self._app_status)
            except Exception as e:
                return f"Ray Serve unreachable: {e}"
            if status is None:
                return f"Ray Serve application {self.app} is gone"
            if not status.endswith("RUNNING"):
                return f"Ray Serve application {self.app} is {status}"
            await asyncio.sleep(self.POLL_SECONDS)

    async def stop(self) -> None:
        if not self.rs.started:
            return

        def _delete() -> None:
            from ray import serve

            serve.delete(self.app)

        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(_delete), 60)
