"""The API's settings as one tree, built once at startup (``Config.from_env``) and passed down: each subsystem's
``start`` gets its section; nothing reads the environment or a hidden singleton on its own.

Each section keeps its own environment variables (``MLSTACK_...``, see each class); the tree only gathers them.
The other processes build what they need the same way, once, at their entry point: ``mlstack serve`` a
``Settings``, ``mlstack monitor`` its sections (``mlstack.monitoring.cluster.serve``), the operator its
``OperatorSettings``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlstack.alerts.settings import AlertSettings
from mlstack.api.quotas import QuotaSettings
from mlstack.auth.settings import AuthSettings
from mlstack.deployments.settings import DeploymentSettings
from mlstack.kubeapi import KubeSettings
from mlstack.monitoring.series import SeriesSettings
from mlstack.monitoring.settings import MonitorSettings
from mlstack.packages.limits import PackageLimits
from mlstack.schedules.settings import ScheduleSettings
from mlstack.settings import Settings


@dataclass(frozen=True)
class Config:
    core: Settings  # hosts, ports, Redis, MLflow, the object store, Ray, serving, training
    alerts: AlertSettings
    auth: AuthSettings
    deployments: DeploymentSettings
    kube: KubeSettings
    monitor: MonitorSettings
    series: SeriesSettings
    schedules: ScheduleSettings
    quotas: QuotaSettings
    packages: PackageLimits  # model package uploads

    @classmethod
    def from_env(cls, core: Settings | None = None) -> Config:
        """Every section from the environment (``core`` given: that one as it is)."""
        return cls(core=core or Settings(), alerts=AlertSettings(), auth=AuthSettings(),
                   deployments=DeploymentSettings(), kube=KubeSettings(), monitor=MonitorSettings(),
                   series=SeriesSettings(), schedules=ScheduleSettings(), quotas=QuotaSettings(),
                   packages=PackageLimits())
