"""Train a RandomForest, log it to MLflow as sklearn AND ONNX, register a version, move aliases.

``train_and_register`` is what a training job runs (``mlstack.training.run`` on Ray): everything it needs
arrives in ``TrainConfig`` (no settings or clients at import), and it returns a plain dict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlstack.monitoring.profile import log_reference_profile
from mlstack.registry import CANDIDATE, CHAMPION, PRIMARY_METRIC
from mlstack.training.data import ObjectStore, parse_csv, read_bytes

log = logging.getLogger(__name__)
ONNX_INPUT = "X"
SKOPS_TRUSTED = ["sklearn.tree._tree.Tree"]


@dataclass
class TrainConfig:
    tracking_uri: str
    experiment: str
    model_name: str
    data_uri: str
    target: str
    hyperparameters: dict
    store: ObjectStore = field(default_factory=ObjectStore)
    job_id: str = ""


def detect_task(y: pd.Series) -> str:
    """Classification for labels (strings, bools, or few distinct integers); regression for continuous values."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    if pd.api.types.is_integer_dtype(y) or np.allclose(y, np.round(y)):
        return "classification" if y.nunique() <= max(20, int(0.05 * len(y))) else "regression"
    return "regression"


def split_features(df: pd.DataFrame, target: str) -> tuple[list[str], np.ndarray, pd.Series]:
    features = [c for c in df.columns if c != target and pd.api.types.is_numeric_dtype(df[c])]
    X = df[features].fillna(0).to_numpy(dtype=np.float32)
    return features, X, df[target]


def fit(df: pd.DataFrame, target: str, hp: dict) -> dict:
    """Fit and evaluate; pure (no MLflow): returns the model, task, metrics and test data."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, precision_score, r2_score, recall_score
    from sklearn.model_selection import train_test_split

    features, X, y = split_features(df, target)
    task = detect_task(y)
    params = {k: v for k, v in hp.items() if k != "test_size"}
    stratify = y if task == "classification" and y.value_counts().min() >= 2 else None
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=hp.get("test_size", 0.2),
                                              random_state=hp.get("random_state", 42), stratify=stratify)
    if task == "classification":
        model = RandomForestClassifier(**params, n_jobs=1).fit(X_tr, y_tr)
        pred = model.predict(X_te)
        avg = "binary" if y.nunique() == 2 else "weighted"
        metrics = {
            "accuracy": accuracy_score(y_te, pred),
            "precision": precision_score(y_te, pred, average=avg, zero_division=0),
            "recall": recall_score(y_te, pred, average=avg, zero_division=0),
            "f1": f1_score(y_te, pred, average=avg, zero_division=0),
        }
    else:
        model = RandomForestRegressor(**params, n_jobs=1).fit(X_tr, y_tr)
        pred = model.predict(X_te)
        metrics = {"r2": r2_score(y_te, pred), "rmse": float(np.sqrt(mean_squared_error(y_te, pred)))}
    return {"model": model, "task": task, "features": features, "metrics": {k: float(v) for k, v in metrics.items()},
            "X_test": X_te, "n_train": len(X_tr), "n_test": len(X_te)}


def to_onnx(model, n_features: int, task: str):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model): {"zipmap": False}} if task == "classification" else None
    return convert_sklearn(model, initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))], options=options)


def _champion_metric(client, name: str, metric: str) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    value = client.get_run(mv.run_id).data.metrics.get(metric) if mv.run_id else None
    return mv.version, value


def job_runs(client, experiment: str, job_id: str, status: str | None = None) -> list:
    """The MLflow runs of training job ``job_id`` (tag ``mlstack.job_id``) in ``experiment``, of ``status`` if given."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    where = f"tags.`mlstack.job_id` = '{job_id}'" + (f" and attributes.status = '{status}'" if status else "")
    return client.search_runs([exp.experiment_id], filter_string=where)


def result_of_run(client, experiment: str, model_name: str, job_id: str) -> dict | None:
    """What ``train_and_register`` returned for job ``job_id``, read back from MLflow: its FINISHED run and the
    version registered from it (None when there is none). For a job whose process ended without saying (Ray lost
    it, or its log lost the result line) after its version was registered."""
    for run in job_runs(client, experiment, job_id, "FINISHED"):
        task = run.data.tags.get("mlstack.task")
        versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
        if not versions or task not in PRIMARY_METRIC:
            continue
        version = str(max(int(v.version) for v in versions))
        champion, _ = _champion_metric(client, model_name, PRIMARY_METRIC[task])
        return {"run_id": run.info.run_id, "version": version, "task": task, "metrics": dict(run.data.metrics),
                "champion": champion == version, "previous_champion": None if champion == version else champion,
                "primary_metric": PRIMARY_METRIC[task]}
    return None


def train_and_register(cfg: TrainConfig) -> dict:
    import mlflow
    import mlflow.onnx
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    log.info("reading %s (target %r)", cfg.data_uri, cfg.target)
    df = parse_csv(read_bytes(cfg.data_uri, cfg.store), cfg.target, cfg.data_uri)
    log.info("%d rows, %d columns; fitting with %s", len(df), len(df.columns), cfg.hyperparameters)
    result = fit(df, cfg.target, cfg.hyperparameters)
    model, task, metrics, X_test = result["model"], result["task"], result["metrics"], result["X_test"]
    log.info("%s on %d/%d rows: %s", task, result["n_train"], result["n_test"],
             ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    example = X_test[:5]

    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    # tagged from the start: a run whose job died is found by its job id and ended (jobs.JobManager)
    with mlflow.start_run(run_name=f"train-{cfg.job_id}" if cfg.job_id else None,
                          tags={"mlstack.job_id": cfg.job_id}) as run:
        mlflow.log_params({**cfg.hyperparameters, "data_uri": cfg.data_uri, "target": cfg.target, "task": task,
                           "n_train": result["n_train"], "n_test": result["n_test"],
                           "features": ",".join(result["features"])})
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"mlstack.job_id": cfg.job_id, "mlstack.task": task})
        # the drift monitor's baseline: feature bins and predictions of the training data (issue 15)
        log_reference_profile(model, split_features(df, cfg.target)[1], result["features"], task)
        sk_info = mlflow.sklearn.log_model(
            model, name="sklearn-model", signature=infer_signature(example, model.predict(example)),
            input_example=example, skops_trusted_types=SKOPS_TRUSTED,
        )
        onx = to_onnx(model, len(result["features"]), task)
        onnx_info = mlflow.onnx.log_model(
            onx, name="model", input_example={ONNX_INPUT: example}, registered_model_name=cfg.model_name,
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    version = str(onnx_info.registered_model_version)
    log.info("MLflow run %s: registered %s version %s (ONNX; sklearn at %s)", run.info.run_id, cfg.model_name,
             version, sk_info.model_uri)
    primary = PRIMARY_METRIC[task]
    for k, v in {"mlstack.task": task, "mlstack.job_id": cfg.job_id, "mlstack.data_uri": cfg.data_uri,
                 "mlstack.sklearn_model_uri": sk_info.model_uri, "mlstack.primary_metric": primary,
                 "mlstack.features": ",".join(result["features"])}.items():
        client.set_model_version_tag(cfg.model_name, version, k, v)

    previous, previous_value = _champion_metric(client, cfg.model_name, primary)
    client.set_registered_model_alias(cfg.model_name, CANDIDATE, version)
    champion = previous is None or previous_value is None or metrics[primary] > previous_value
    if champion:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
        log.info("@%s -> v%s (%s %.4f beats %s)", CHAMPION, version, primary, metrics[primary],
                 "no champion" if previous is None else f"v{previous} at {previous_value}")
    else:
        log.info("@%s stays v%s (%s %.4f does not beat %.4f)", CHAMPION, previous, primary, metrics[primary],
                 previous_value)
    return {"run_id": run.info.run_id, "version": version, "task": task, "metrics": metrics, "champion": champion,
            "previous_champion": previous, "primary_metric": primary}


def run_job(cfg: TrainConfig) -> dict:
    """What a training job runs (``mlstack.training.run``): ``train_and_register`` with its log captured.

    Returns ``{"ok": True, "result": ..., "logs": ...}`` or ``{"ok": False, "error": ..., "logs": ...}``
    so that a failed job keeps the log that explains it.
    """
    import io
    import traceback

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("mlstack", "mlflow", "py.warnings")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        result = train_and_register(cfg)
        return {"ok": True, "result": result, "logs": buf.getvalue()}
    except Exception as e:
        message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        log.error("training failed: %s\n%s", message, traceback.format_exc())
        return {"ok": False, "error": str(message), "logs": buf.getvalue()}
    finally:
        logging.captureWarnings(False)
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)

