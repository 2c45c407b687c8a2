"""Authentication and authorisation: who calls (bearer tokens) and what they may do (roles / RBAC)."""

from mlstack.auth.base import CLUSTER, HOME, Authority, Caller, Principal

__all__ = ["CLUSTER", "HOME", "Authority", "Caller", "Principal"]
