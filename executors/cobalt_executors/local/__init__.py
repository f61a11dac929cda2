"""The local executor (the embedded default)."""

from cobalt_executors.local._executor import LocalExecutor

__all__ = ["LocalExecutor"]
