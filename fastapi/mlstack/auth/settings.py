"""Settings of authentication, roles and organisations (env prefix ``MLSTACK_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack.auth.roles import RoleName
from mlstack_operator.contract import NamespaceName


class LocalToken(BaseModel):
    """One local-mode token: who it is, its role and (optionally) its home namespace."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128)
    role: RoleName
    token: SecretStr = Field(..., min_length=16, description="at least 16 characters (init.sh makes 43)")
    namespace: NamespaceName | None = Field(None,
                                  description="where its deployments go (default: the deployments namespace)")


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=None, extra="ignore")

    auth_mode: Literal["auto", "off", "tokens", "kubernetes"] = Field(
        "auto", description="auto: cluster mode -> kubernetes; local mode -> tokens if any are set, else off")
    auth_tokens: list[LocalToken] = Field(default_factory=list, description="local mode: JSON list of tokens")
    auth_tokens_file: Path | None = Field(None, description="local mode: a JSON file with the same list")
    auth_cache_seconds: float = Field(10.0, ge=0, le=300,
                                      description="cluster mode: reuse of TokenReview/SubjectAccessReview answers")
    auth_cache_size: int = Field(10000, ge=1)

    org_namespace_prefix: str = Field("org-", max_length=20, pattern=r"^([a-z0-9][-a-z0-9]*)?$",
                                      description="an organisation NAME lives in namespace PREFIX+NAME")
    org_invite_max_seconds: int = Field(7 * 24 * 3600, ge=60, description="longest validity of an invite")
    org_token_seconds: int = Field(30 * 24 * 3600, ge=600, description="validity of a token from /orgs/join")
    org_redis_prefix: str = Field("mlstack:orgs", min_length=1)

    def tokens(self) -> list[LocalToken]:
        """``auth_tokens`` plus the file's; a bad file is an error at startup, not a silent open API."""
        tokens = list(self.auth_tokens)
        if self.auth_tokens_file is not None:
            try:
                raw = json.loads(self.auth_tokens_file.read_text())
                tokens += TypeAdapter(list[LocalToken]).validate_python(raw)
            except (OSError, ValueError, ValidationError) as e:
                raise ValueError(f"MLSTACK_AUTH_TOKENS_FILE {self.auth_tokens_file}: {e}") from None
        seen: set[str] = set()
        for t in tokens:
            secret = t.token.get_secret_value()
            if secret in seen:
                raise ValueError(f"token of {t.name!r} is listed twice")
            seen.add(secret)
        return tokens
