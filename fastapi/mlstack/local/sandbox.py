"""Local mode: model servers (which import an uploaded package's ``app.py``) run without the platform's secrets.

* **Environment**: scrubbed. The server gets ``PATH``, a locale, its own ``HOME``/``TMPDIR``, and the few
  ``MLSTACK_*`` settings a model server reads (the MLflow URI, its model cache, batching); never the Redis URL,
  tokens, S3 or MLflow credentials, ``RAY_*`` or anything else the API holds.
* **User** (the API runs as root): the server runs as an unprivileged system user (``MLSTACK_SERVE_SANDBOX_USER``,
  ``mlstack-sandbox``, created when missing) with no supplementary groups, so the platform's 0600 files (the
  tokens file, ``outputs/credentials.txt``, ``outputs/local/env``, Redis' config) and other processes'
  ``/proc/<pid>/environ`` are closed to it.
* **Files**: its working directory, ``HOME``, ``TMPDIR`` and model cache are one private directory
  (``MLSTACK_SERVE_SANDBOX_DIR``/<pool>, mode 0700, owned by that user), not the platform's state directory.

When the API does not run as root it cannot switch users: the environment is still scrubbed and the directory
private, but the server runs as the API's user and could read what that user can (so the platform's files are
written 0600, and ``init.sh`` keeps the Redis password off command lines).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlstack.settings import Settings

log = logging.getLogger(__name__)

# what a model server reads from the environment (besides MLflow's URI and the cache, set below)
PASSED = ("MLSTACK_SERVE_HOST", "MLSTACK_SERVE_MAX_BATCH", "MLSTACK_SERVE_BATCH_WINDOW_MS",
          "MLSTACK_SERVE_INTRA_OP_THREADS", "MLSTACK_MLFLOW_HTTP_RETRIES", "MLSTACK_MLFLOW_HTTP_TIMEOUT",
          "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "LANG", "LC_ALL", "TZ",
          "PYTHONUNBUFFERED", "OMP_NUM_THREADS")


CLONE_NEWNS, MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = (
    0x20000, 1, 2, 4, 32, 4096, 16384, 1 << 18, 2)


@dataclass(frozen=True)
class Sandbox:
    dir: Path
    uid: int | None = None  # None: run as the API's own user
    gid: int | None = None
    # directories the sandbox user could not traverse on the way to Python and mlstack (e.g. /root, 0700, when
    # Python lives in /root/.pyenv): in the server's own mount namespace each becomes an empty tmpfs holding only
    # read-only binds of those children, so the server finds its interpreter and sees nothing else there
    reveal: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def _mount_view(self) -> None:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)

        def check(rc: int, what: str) -> None:
            if rc != 0:
                raise OSError(ctypes.get_errno(), f"sandbox: {what} failed")

        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
        n = 0
        for parent, children in self.reveal:
            stages = []
            for child in children:
                stage = self.dir / ".mnt" / str(n)
                n += 1
                check(libc.mount(child.encode(), str(stage).encode(), None, MS_BIND | MS_REC, None), f"bind {child}")
                stages.append((stage, child))
            check(libc.mount(b"tmpfs", parent.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755"),
                  f"tmpfs on {parent}")
            for stage, child in stages:
                os.mkdir(child, 0o755)
                check(libc.mount(str(stage).encode(), child.encode(), None, MS_BIND | MS_REC, None), f"bind {child}")
                check(libc.mount(None, child.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None),
                      f"read-only {child}")
                libc.umount2(str(stage).encode(), MNT_DETACH)

    def drop_privileges(self) -> None:
        """In the child between fork and exec (uvloop's subprocesses take no user=/group=): no supplementary
        groups, then the group, then the user; a failure aborts the exec, so the server never runs as root."""
        if self.uid is not None:
            if self.reveal:
                self._mount_view()
            os.setgroups([])
            os.setresgid(self.gid, self.gid, self.gid)
            os.setresuid(self.uid, self.uid, self.uid)

    def env(self, settings: Settings) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASSED if k in os.environ}
        uri = settings.mlflow_tracking_uri
        env.update({
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.dir), "TMPDIR": str(self.dir / "tmp"),
            "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "MLSTACK_MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_URI": uri,
            "MLSTACK_MODEL_CACHE_DIR": str(self.dir / "models"),
        })
        return env


def ensure_user(name: str) -> tuple[int, int]:
    """The sandbox user's (uid, gid), creating a system user with no home and no login shell when missing."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        nologin = shutil.which("nologin") or "/usr/sbin/nologin"
        subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", nologin, "--user-group", name], check=True, capture_output=True, timeout=30)
        pw = pwd.getpwnam(name)
        log.info("created the model-server sandbox user %s (uid %d)", name, pw.pw_uid)
    if pw.pw_uid == 0:
        raise RuntimeError(f"the sandbox user {name!r} is root")
    return pw.pw_uid, pw.pw_gid


def _traversable(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
    return bool(st.st_mode & bit)


def blocked_ancestors(paths: list[Path], uid: int, gid: int) -> dict[str, set[str]]:
    """For each path: the first ancestor ``uid`` cannot traverse, and its child on the way (directories only)."""
    out: dict[str, set[str]] = {}
    for path in paths:
        chain = [*reversed(path.resolve().parents), path.resolve()]
        for parent, child in itertools.pairwise(chain):
            if not _traversable(parent, uid, gid):
                if child.is_dir():
                    out.setdefault(str(parent), set()).add(str(child))
                break
    return out


def _runtime_paths() -> list[Path]:
    import sys

    import mlstack

    paths = [Path(sys.executable), Path(sys.base_prefix), Path(sys.prefix), Path(mlstack.__file__).parent]
    return paths + [Path(p) for p in sys.path if p and Path(p).is_dir()]


def make_sandbox(settings: Settings) -> Sandbox:
    """The private directory (and user, when root) model servers of this API run with."""
    base = settings.serve_sandbox_dir
    key = hashlib.sha256(f"{settings.state_dir.resolve()}|{settings.mlflow_tracking_uri}".encode()).hexdigest()[:12]
    d = base / key
    uid = gid = None
    if os.geteuid() == 0 and settings.serve_sandbox_user:
        uid, gid = ensure_user(settings.serve_sandbox_user)
    base.mkdir(parents=True, exist_ok=True, mode=0o755)
    if base.is_symlink() or base.stat().st_uid != os.geteuid():  # e.g. planted in /tmp by someone else
        raise RuntimeError(f"{base} is not a directory of the API's user: set MLSTACK_SERVE_SANDBOX_DIR")
    with contextlib.suppress(PermissionError):
        os.chmod(base, 0o755)  # others may pass, not list (only the per-pool dirs hold anything)
    for sub in (d, d / "tmp", d / "models"):
        sub.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(sub, 0o700)
        if uid is not None:
            os.chown(sub, uid, gid)
    reveal: tuple = ()
    if uid is not None:
        blocked = blocked_ancestors(_runtime_paths(), uid, gid)
        reveal = tuple((parent, tuple(sorted(children))) for parent, children in sorted(blocked.items()))
        n = sum(len(c) for _, c in reveal)
        (d / ".mnt").mkdir(exist_ok=True, mode=0o700)
        for i in range(n):
            (d / ".mnt" / str(i)).mkdir(exist_ok=True, mode=0o700)
        if reveal:
            log.info("model servers run as %s in their own mount namespace; revealed read-only: %s",
                     settings.serve_sandbox_user, ", ".join(c for _, cs in reveal for c in cs))
    return Sandbox(d, uid, gid, reveal)
