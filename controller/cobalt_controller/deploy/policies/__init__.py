"""Autoscaling policies: :mod:`.base` and one module per built-in."""

from cobalt_controller.deploy.policies.base import Decision, Metrics, Policy, ReplicaProbe
from cobalt_controller.deploy.policies.custom import Custom
from cobalt_controller.deploy.policies.requests_per_second import RequestsPerSecond
from cobalt_controller.deploy.policies.schedules import Schedules
from cobalt_controller.deploy.policies.target_concurrency import TargetConcurrency
from cobalt_controller.deploy.policies.utilization import Utilization

BUILT_IN: tuple[type[Policy], ...] = (
    TargetConcurrency,
    RequestsPerSecond,
    Utilization,
    Schedules,
    Custom,
)
"""Every built-in policy, in the order decisions are listed."""

__all__ = [
    "BUILT_IN",
    "Custom",
    "Decision",
    "Metrics",
    "Policy",
    "ReplicaProbe",
    "RequestsPerSecond",
    "Schedules",
    "TargetConcurrency",
    "Utilization",
]
