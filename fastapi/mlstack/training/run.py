"""A training job's entrypoint on Ray (Job Submission): ``python -m mlstack.training.run``.

It does what the Ray task did before (``train.run_job``), as a process of its own that Ray supervises, so
the job does not depend on the API process that submitted it. The job comes in the environment variable
``MLSTACK_TRAIN_JOB`` (JSON: job_id, model_name, data_uri, target, hyperparameters); MLflow and the object
store come from the usual ``MLSTACK_*`` settings (the Ray node's environment, plus what the API passed in
the job's ``runtime_env``).

Output: the training log on stdout (Ray keeps it as the job's log, readable while the job runs), then one
last line ``RESULT_MARKER <json>`` (``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``)
that the API reads when Ray says the job ended. Exit status 0 when trained, 1 when not. SIGTERM (``ray job
stop``, ``DELETE /training/{id}``) ends the job's MLflow run as KILLED before exiting.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime

RESULT_MARKER = "MLSTACK_TRAINING_RESULT"
JOB_ENV = "MLSTACK_TRAIN_JOB"


def parse_result(logs: str) -> dict | None:
    """The entrypoint's answer in a job's log (its last ``RESULT_MARKER`` line), or None."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER + " "):
            try:
                return json.loads(line[len(RESULT_MARKER) + 1:])
            except ValueError:
                return None
    return None


def strip_result(logs: str) -> str:
    return "\n".join(line for line in logs.splitlines() if not line.startswith(RESULT_MARKER + " ")) + "\n"


def _on_sigterm(signum, frame) -> None:
    """Stopped: end the MLflow run as KILLED (the API does it too, should this not get the chance)."""
    try:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
    finally:
        os._exit(128 + signum)


def _ppid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _die_with_ray(interval: float = 1.0) -> None:
    """Stop (SIGTERM: the run ends KILLED) when the Ray job supervisor that started this process is gone.

    Ray runs the entrypoint in a new session (``sh -c`` under the supervisor's worker): when the Ray node stops,
    the job would otherwise train on, unseen, and register a model version the API already reported failed.
    The parent and grandparent are watched (one of them is the supervisor's worker); Linux ``/proc`` only."""
    import threading

    watched = [p for p in (os.getppid(), _ppid_of(os.getppid())) if p and p > 1]

    def watch() -> None:
        while True:
            time.sleep(interval)
            for pid in watched:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                except PermissionError:
                    pass

    threading.Thread(target=watch, name="die-with-ray", daemon=True).start()


def main() -> int:
    from mlstack.settings import Settings
    from mlstack.training.data import ObjectStore
    from mlstack.training.train import TrainConfig, run_job

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("mlstack", "mlflow", "py.warnings"):
        logging.getLogger(name).addHandler(handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if os.path.isdir("/proc"):
        _die_with_ray()
    started = datetime.now(UTC).isoformat()  # when this process got its CPUs (Ray's start_time is submission)
    try:
        spec = json.loads(os.environ[JOB_ENV])
        s = Settings()
        cfg = TrainConfig(tracking_uri=s.mlflow_tracking_uri, experiment=s.mlflow_experiment,
                          model_name=spec["model_name"], data_uri=spec["data_uri"], target=spec["target"],
                          hyperparameters=spec["hyperparameters"], store=ObjectStore.from_settings(s),
                          job_id=spec["job_id"])
    except Exception as e:  # a malformed job: say so in the result, as a failed training would
        out = {"ok": False, "error": f"bad training job: {type(e).__name__}: {e}"}
    else:
        out = run_job(cfg)  # logs both to stdout (above) and to its own buffer
        out.pop("logs", None)
    out.update(started_at=started, finished_at=datetime.now(UTC).isoformat())
    sys.stdout.flush()
    print(f"{RESULT_MARKER} {json.dumps(out, default=str)}", flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
