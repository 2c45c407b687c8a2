"""Settings of the alerts subsystem (env prefix ``MLSTACK_``), kept beside the code that reads them."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=None, extra="ignore")

    alerts_stream: str = Field("mlstack:alerts", min_length=1, description="the Redis Stream every alert goes to")
    alerts_maxlen: int = Field(10_000, ge=100, description="stream cap (XADD MAXLEN ~)")
    alerts_heartbeat_seconds: float = Field(15.0, gt=0, le=300, description="SSE ping interval")
    alerts_client_queue: int = Field(1000, ge=1, description="per-client queue; overflow = reconnect + replay")
    alerts_ring_size: int = Field(2000, ge=0, description="recent alerts kept in memory to replay without Redis")
    alerts_replay_max: int = Field(10_000, ge=1, description="most alerts replayed to one reconnecting client")
    alerts_buffer_max: int = Field(10_000, ge=0, description="alerts held in memory while Redis is unreachable")
    alerts_block_ms: int = Field(5000, ge=10, le=60_000, description="XREAD BLOCK of the reader")
    alerts_read_count: int = Field(500, ge=1, description="XREAD COUNT of the reader")
    alerts_send_timeout: float = Field(30.0, gt=0, description="a client whose socket takes longer is dropped")
    alerts_retry_ms: int = Field(1000, ge=0, description="SSE 'retry:' reconnection delay sent to browsers")
    alerts_redis_timeout: float = Field(2.0, gt=0, description="timeout of one XADD/XRANGE")
    alerts_ticket_seconds: int = Field(30, ge=1, le=600, description="life of a single-use SSE stream ticket "
                                       "(POST /alerts/ticket)")
