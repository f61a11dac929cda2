"""The SQL store builds node rows by position, so its columns must be NodeRow's fields."""

from __future__ import annotations

import dataclasses

import pytest

from cobalt_controller.state.base import NodeRow
from cobalt_controller.state.sql import _NODE_COLUMNS, _NODE_COLUMNS_NO_LOGS

pytestmark = pytest.mark.unit


def test_the_nodes_table_has_node_rows_fields_in_order() -> None:
    fields = [f.name for f in dataclasses.fields(NodeRow)]

    assert [c.name for c in _NODE_COLUMNS] == fields
    assert [c.name for c in _NODE_COLUMNS_NO_LOGS] == fields
