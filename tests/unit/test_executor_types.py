"""Every executor type's name and options are written once, in
``cobalt_common.executor_types``: the SDK's descriptors, the registry of
implementations and the controller's ``config.toml`` checks agree with it,
so that an option cannot be accepted on one side and refused on the other."""

from __future__ import annotations

import inspect

import pytest

import cobalt as ct
from cobalt._cluster_executors import ClusterExecutor
from cobalt._executors import Executor as Descriptor
from cobalt_common.errors import SpecError
from cobalt_common.executor_types import COMMON_OPTIONS, EXECUTOR_TYPES
from cobalt_controller._executor_match import MATCH_KEYS
from cobalt_executors import base
from cobalt_executors.registry import EXECUTOR_TYPES as IMPLEMENTATIONS

pytestmark = pytest.mark.unit


def _all_descriptors() -> list[type[Descriptor]]:
    found: list[type[Descriptor]] = []
    todo = list(Descriptor.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _descriptors() -> list[type[Descriptor]]:
    """Descriptors whose options the controller instantiates an executor from."""
    return [cls for cls in _all_descriptors() if not issubclass(cls, ClusterExecutor)]


def _matchers() -> list[type[ClusterExecutor]]:
    """Covalent-style cluster descriptors: a match among configured executors."""
    return [cls for cls in _all_descriptors() if issubclass(cls, ClusterExecutor) and cls.type_name]


def test_every_registered_implementation_has_the_table_s_name_and_options() -> None:
    assert set(IMPLEMENTATIONS) == set(EXECUTOR_TYPES)
    for name, cls in IMPLEMENTATIONS.items():
        kind = EXECUTOR_TYPES[name]
        assert cls.type_name == name
        assert cls.accepted_options | base.COMMON_OPTIONS == kind.config_options, name


def test_executors_accept_the_same_common_options_as_the_table() -> None:
    assert base.COMMON_OPTIONS is COMMON_OPTIONS


@pytest.mark.parametrize("cls", _descriptors(), ids=lambda c: c.__name__)
def test_every_sdk_descriptor_accepts_what_its_type_accepts_from_a_client(
    cls: type[Descriptor],
) -> None:
    kind = EXECUTOR_TYPES[cls.type_name]
    assert cls.accepted_options == kind.client_options
    keywords = {
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert keywords - cls.covalent_arguments == kind.client_options, (
        f"{cls.__name__}'s keyword arguments differ from the options its type accepts"
    )


@pytest.mark.parametrize("cls", _matchers(), ids=lambda c: c.__name__)
def test_a_cluster_descriptor_sends_no_options_and_matches_only_on_known_keys(
    cls: type[ClusterExecutor],
) -> None:
    assert cls.accepted_options == frozenset()
    assert cls().options == {} and cls().match == {}
    assert cls.type_name in MATCH_KEYS
    assert not EXECUTOR_TYPES[cls.type_name].options, (
        "every option of a cluster type is the controller's own"
    )


def test_an_option_only_config_toml_may_set_is_refused_in_a_descriptor() -> None:
    config_only = EXECUTOR_TYPES["local"].config_only
    assert config_only
    for option in config_only:
        with pytest.raises(SpecError, match="accepted options are"):
            ct.LocalExecutor(**{option: False})
