"""A task's or dispatch's status is one vocabulary: ``cobalt_common.status.Status``,
used by the SDK (``ct.Status``), the controller and the executors, with one
mapping to the proto enum that carries it on the wire."""

from __future__ import annotations

import doctest
import json
from typing import get_args

import pytest

import cobalt as ct
from cobalt_common import status as vocabulary
from cobalt_common import wire
from cobalt_common.status import DISPATCH_ENDED, ENDED, OUTCOME_STATUSES, TASK_ENDED, Status
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import STATUS_TO_PB, status_from_pb, status_to_pb
from cobalt_controller.dispatch import _model
from cobalt_executors import base

pytestmark = pytest.mark.unit


def test_the_sdk_s_status_is_the_shared_one() -> None:
    assert ct.Status is Status


def test_every_status_has_its_own_proto_value_and_comes_back_from_it() -> None:
    values = {status_to_pb(s) for s in Status}
    assert len(values) == len(Status)
    for s in Status:
        assert pb.Status.Name(status_to_pb(s)) == f"STATUS_{s.name}"
        assert status_from_pb(status_to_pb(s)) is s


def test_every_proto_status_but_unspecified_is_a_status() -> None:
    wire = {v for name, v in pb.Status.items() if name != "STATUS_UNSPECIFIED"}
    assert wire == set(STATUS_TO_PB.values())


def test_an_unset_or_unknown_proto_value_reads_as_new() -> None:
    assert status_from_pb(pb.STATUS_UNSPECIFIED) is Status.NEW
    assert status_from_pb(999) is Status.NEW


def test_a_status_is_its_string_in_comparisons_hashes_text_and_json() -> None:
    # Rows read back from the state store hold plain strings.
    for s in Status:
        assert s == s.name and hash(s) == hash(s.name)
        assert str(s) == f"{s}" == s.name
        assert status_to_pb(s.name) == status_to_pb(s)
    assert "COMPLETED" in DISPATCH_ENDED and Status.SKIPPED in TASK_ENDED
    assert json.dumps({"status": Status.FAILED}) == '{"status": "FAILED"}'


def test_ended_statuses_are_those_a_task_or_dispatch_ends_in() -> None:
    assert {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "SKIPPED"} == TASK_ENDED
    assert {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT", "BUDGET_EXCEEDED"} == DISPATCH_ENDED
    assert {s for s in Status if s.ended} == ENDED
    assert not (Status.NEW.ended or Status.PENDING.ended or Status.RUNNING.ended)


def test_an_executor_reports_a_subset_of_the_statuses() -> None:
    assert base.OutcomeStatus is vocabulary.OutcomeStatus
    assert set(get_args(vocabulary.OutcomeStatus)) == OUTCOME_STATUSES
    assert {
        Status.COMPLETED,
        Status.FAILED,
        Status.TIMED_OUT,
        Status.CANCELLED,
    } == OUTCOME_STATUSES
    assert OUTCOME_STATUSES <= TASK_ENDED


def test_the_controller_s_status_names_are_the_shared_members() -> None:
    for s in Status:
        assert getattr(_model, s.name) is s
    assert _model.TERMINAL == TASK_ENDED


def test_the_examples_in_the_vocabulary_s_docstrings_run() -> None:
    assert doctest.testmod(vocabulary).failed == 0
    assert doctest.testmod(wire).failed == 0
