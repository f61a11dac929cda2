"""State stores: base, SQL (SQLAlchemy) and in-memory backends."""

from cobalt_controller.state.base import (
    LIVE_REPLICA_STATUSES,
    REUSED,
    CostRow,
    DeploymentEventRow,
    DeploymentRow,
    DispatchRow,
    NodeRow,
    ReplicaRow,
    StateStore,
    WriteBatch,
)
from cobalt_controller.state.memory import MemoryStateStore
from cobalt_controller.state.sql import SqlStateStore

__all__ = [
    "LIVE_REPLICA_STATUSES",
    "REUSED",
    "CostRow",
    "DeploymentEventRow",
    "DeploymentRow",
    "DispatchRow",
    "MemoryStateStore",
    "NodeRow",
    "ReplicaRow",
    "SqlStateStore",
    "StateStore",
    "WriteBatch",
]
