"""One settings class for the API, the trainer and the model server (env prefix ``MLSTACK_``).

Every host, port, bucket, path and credential lives here; each process builds ``Settings()`` once at its entry point and
passes it down (the API: ``mlstack.api.config.Config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=None, extra="ignore")

    mode: Literal["local", "cluster"] = Field(
        "local", description="local: serve on this machine; cluster: through Kubernetes")

    # MLflow
    mlflow_tracking_uri: str = "http://127.0.0.1:5555"
    mlflow_experiment: str = "mlstack"
    mlflow_http_retries: int = Field(2, ge=0, le=10)
    mlflow_http_timeout: int = Field(10, ge=1, le=600)
    model_name: str = Field("iris_model", description="registered model that training writes and /inference reads")

    # S3 / MinIO (only the trainer reading s3:// data uses these; MLflow artifacts are proxied by the server)
    s3_endpoint_url: str | None = Field(None, description="S3/MinIO endpoint (unset: see object_store_dir)")
    object_store_dir: Path | None = Field(None, description="local mode: s3://bucket/key maps to DIR/bucket/key")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    data_uri: str = "s3://mlops/data/iris.csv"
    data_target: str = "target"
    data_dir: Path | None = Field(None, description="local mode: the one directory local data paths may name "
                                  "(unset: only s3:// data)")
    data_shared_prefixes: list[str] = Field(
        default_factory=lambda: ["s3://mlops/data/"],
        description="cluster mode: s3:// prefixes every organisation may read besides data_uri (the platform's data)")
    org_data_prefix: str = Field("s3://mlops/orgs/{org}/",
                                 description="cluster mode: an organisation's own data ({org}: its name)")
    upload_prefix: str = "s3://mlops/uploads"

    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Ray: empty = start a local Ray on this machine
    ray_address: str | None = None
    ray_jobs_url: str | None = Field(None, description="Ray's job server (the dashboard, http://HEAD:8265) that "
                                     "training jobs are submitted to; unset: derived from ray_address, and "
                                     "with neither the API starts a local Ray head of its own")
    ray_num_cpus: int = 2
    ray_object_store_mb: int = 256
    ray_temp_dir: Path = Path("/tmp/mlstack-ray")
    train_num_cpus: float = 1.0
    train_python: str | None = Field(None, description="the Python that runs a training job on a Ray node "
                                     "(unset: the API's own in local mode, `python` in cluster mode)")
    train_poll_seconds: float = Field(1.0, gt=0, le=60, description="how often a job's state is asked of Ray")
    train_ray_unreachable_seconds: float = Field(
        600.0, gt=0, description="a job whose Ray job server stays unreachable this long is marked failed")

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8888
    api_max_body_bytes: int = Field(1024 * 1024, ge=0, description="largest request body of a route not in "
                                    "api_body_limits (413 before reading it)")
    api_body_limits: dict[str, int] = Field(
        default_factory=lambda: {"POST /inference": 16 * 1024 * 1024},
        description='per-route body limits, "METHOD /path/{template}" -> bytes (the uploads default to their own '
                    "limits: MAX_CSV_BYTES for /train, MLSTACK_PACKAGE_MAX_UPLOAD_BYTES for model packages)")
    predict_max_upload_bytes: int = Field(2 * 1024 ** 3, ge=1024, description="largest CSV for POST /predict "
                                          "(batch scoring; spooled to disk, streamed back in batches)")
    api_max_header_bytes: int = Field(32 * 1024, ge=4096, le=1024 * 1024,
                                      description="largest request line + headers; more is a 431")
    registry_cache_seconds: float = Field(5.0, ge=0, description="alias -> version cache for /inference")
    alert_accuracy_threshold: float = Field(0.9, ge=0, le=1)

    # local model servers started by the API (mode=local)
    serve_host: str = "127.0.0.1"
    serve_port_range: tuple[int, int] = (30000, 30999)  # clear of Ray worker ports and the ephemeral range
    serve_start_timeout: float = 120.0
    serve_max_batch: int = Field(64, ge=1)
    serve_batch_window_ms: float = Field(0.0, ge=0, le=100, description="extra wait to fill a batch (0: one loop turn)")
    serve_intra_op_threads: int = Field(1, ge=1, le=64, description="onnxruntime threads per model server")
    serve_canary_url: str | None = Field(None, description="mlstack serve: the canary's model server URL")
    serve_canary_percent: int | None = Field(None, ge=1, le=99, description="mlstack serve: exactly this many of "
                                             "every 100 inference requests are forwarded to the canary")
    serve_grpc_server: Literal["h2", "grpcio"] = Field("h2", description="mlstack serve --grpc-port: h2 (an "
                                                      "HTTP/2 server on the HTTP server's loop) or grpcio "
                                                      "(grpc.aio, its own threads: ~3x the CPU per call)")
    serve_http_server: Literal["http1", "uvicorn"] = Field("http1", description="mlstack serve: http1 (its own "
                                                           "HTTP/1.1 protocol, no ASGI) or uvicorn (the ASGI app "
                                                           "under uvicorn: ~2x the CPU per request)")
    serve_canary_grpc: str | None = Field(None, description="mlstack serve: HOST:PORT of the canary's gRPC v2 port")
    serve_canary_timeout_seconds: float = Field(2.0, gt=0, le=60, description="mlstack serve: a forwarded request "
                                                "the canary has not answered by then is answered by stable")
    serve_shadow_url: str | None = Field(None, description="mlstack serve: the shadow version's model server URL")
    serve_shadow_percent: float | None = Field(None, gt=0, le=100, description="mlstack serve: this share of "
                                               "inference requests is mirrored to the shadow (answers never returned)")
    serve_shadow_timeout_seconds: float = Field(2.0, gt=0, le=60, description="mlstack serve: a mirrored request "
                                                "the shadow has not answered by then counts as failed")
    serve_shadow_max_in_flight: int = Field(64, ge=1, le=10_000, description="mlstack serve: mirrors waiting for "
                                            "the shadow at once; a turn beyond is dropped (and counted)")
    state_dir: Path = Path("outputs/state")
    serve_monitoring_sample_rate: float = Field(0.05, ge=0, le=1, description="mlstack serve: the share of "
                                                "inference requests kept for the monitor (payload log); 0: off")
    serve_monitoring_capacity: int = Field(10_000, ge=1, le=1_000_000, description="mlstack serve: sampled "
                                           "requests kept until the monitor reads them (oldest overwritten)")
    serve_track: str = Field("stable", pattern=r"^(stable|canary|shadow)$", description="mlstack serve: the "
                             "track this server is (stable, canary or shadow), as the payload log records it")
    serve_sandbox_user: str = Field("mlstack-sandbox", description="when the API runs as root, model servers run "
                                    "as this unprivileged user (created if missing; empty: as root)")
    serve_sandbox_dir: Path = Field(Path("/tmp/mlstack-sandbox"), description="model servers' private working, "
                                    "home and cache directories (one per API state dir, mode 0700)")

    # where `mlstack serve` keeps downloaded model artifacts
    model_cache_dir: Path = Path("/tmp/mlstack-models")

    def boto3_kwargs(self) -> dict:
        """Keyword arguments for ``boto3.client("s3", ...)`` from these settings."""
        kw: dict = {"region_name": self.s3_region}
        if self.s3_endpoint_url:
            kw["endpoint_url"] = self.s3_endpoint_url
        if self.s3_access_key and self.s3_secret_key:
            kw["aws_access_key_id"] = self.s3_access_key.get_secret_value()
            kw["aws_secret_access_key"] = self.s3_secret_key.get_secret_value()
        return kw
