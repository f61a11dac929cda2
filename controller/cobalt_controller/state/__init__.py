"""State stores: base, SQL (SQLAlchemy) and in-memory backends."""

from cobalt_controller.state.base import CostRow, DispatchRow, NodeRow, StateStore, WriteBatch
from cobalt_controller.state.memory import MemoryStateStore
from cobalt_controller.state.sql import SqlStateStore

__all__ = [
    "CostRow",
    "DispatchRow",
    "MemoryStateStore",
    "NodeRow",
    "SqlStateStore",
    "StateStore",
    "WriteBatch",
]
