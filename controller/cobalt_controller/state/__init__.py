"""State stores: base, SQL (SQLAlchemy) and in-memory backends."""

from cobalt_controller.state.base import DispatchRow, NodeRow, StateStore, WriteBatch
from cobalt_controller.state.memory import MemoryStateStore
from cobalt_controller.state.sql import SqlStateStore

__all__ = [
    "DispatchRow",
    "MemoryStateStore",
    "NodeRow",
    "SqlStateStore",
    "StateStore",
    "WriteBatch",
]
