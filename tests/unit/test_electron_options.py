from __future__ import annotations

from typing import Any

import pytest

from cobalt._deps import DepsBash, DepsCall, DepsPip
from cobalt._electron import Electron, electron
from cobalt._executors import LocalExecutor
from cobalt._lattice import Lattice, lattice
from cobalt._options import OPTION_NAMES, Options
from cobalt._sentinel import UNSET
from cobalt_common.errors import SpecError
from cobalt_common.hardware import GPU_TYPES, HardwareSpec

pytestmark = pytest.mark.unit


def test_the_pitch_example_works_verbatim() -> None:
    @electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h")
    def train(data: list[float]) -> float:
        return sum(data)

    assert train.hardware() == HardwareSpec(
        gpu="h100", gpus=1, cpus=24, memory_mb=48 * 1024, time_limit_s=18 * 3600
    )
    assert train.hardware().describe() == "1x H100, 24 CPUs, 48 GB, limit 18h"


def test_electron_works_bare_with_empty_parentheses_and_called_directly() -> None:
    def f(x: int) -> int:
        return x

    @electron
    def bare(x: int) -> int:
        return x

    @electron()
    def empty(x: int) -> int:
        return x

    direct = electron(f, gpu="l4")
    assert all(isinstance(e, Electron) for e in (bare, empty, direct))
    assert direct.hardware().gpu == "l4"


def test_electron_keeps_the_functions_name_doc_and_module() -> None:
    @electron(cpus=2)
    def preprocess(path: str) -> str:
        """Clean one file."""
        return path

    assert preprocess.__name__ == "preprocess"
    assert preprocess.__doc__ == "Clean one file."
    assert preprocess.__module__ == __name__
    assert preprocess.__wrapped__ is preprocess.function


def test_options_record_what_the_user_set_and_unset_for_the_rest() -> None:
    @electron(gpu=None, memory="1GB")
    def f() -> None: ...

    assert f.options.gpu is None
    assert f.options.memory == 1024
    assert f.options.cpus is UNSET
    assert f.options.given() == {"gpu": None, "memory": 1024}


def test_unknown_option_lists_accepted_options() -> None:
    with pytest.raises(SpecError) as info:
        electron(gpus_per_node=2)  # type: ignore[call-overload]
    message = str(info.value)
    assert "'gpus_per_node'" in message
    assert all(name in message for name in OPTION_NAMES)


def test_misspelled_option_suggests_the_right_name() -> None:
    with pytest.raises(SpecError, match="Did you mean time_limit="):
        electron(time_limt="1h")  # type: ignore[call-overload]


def test_unknown_gpu_type_lists_valid_types() -> None:
    with pytest.raises(SpecError) as info:
        electron(gpu="h1000")
    message = str(info.value)
    assert "gpu='h1000'" in message and 'Did you mean "h100"' in message
    assert all(name in message for name in GPU_TYPES)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"gpus": 0}, "gpus=0"),
        ({"gpus": -1}, "gpus=-1"),
        ({"gpus": True}, "gpus=True"),
        ({"gpus": 1.5}, "gpus=1.5"),
        ({"gpu": "h100", "gpus": 0}, "gpus=0"),
        ({"cpus": 0}, "cpus=0"),
        ({"cpus": -2}, "cpus=-2"),
        ({"cpus": "4"}, "cpus='4'"),
        ({"cpus": True}, "cpus=True"),
        ({"memory": "48 gigs"}, "memory='48 gigs'"),
        ({"memory": 0}, "memory=0"),
        ({"time_limit": "soon"}, "time_limit='soon'"),
        ({"time_limit": -1}, "time_limit=-1"),
        ({"retries": -1}, "retries=-1"),
        ({"retries": False}, "retries=False"),
        ({"executor": 3}, "executor=3"),
        ({"executor": ""}, "executor=''"),
        ({"deps_pip": 3}, "deps_pip must be"),
        ({"deps_bash": 3}, "deps_bash must be"),
        ({"call_before": "setup"}, "call_before must be"),
        ({"call_after": [DepsBash("x"), 1]}, "call_after must be"),
    ],
)
def test_invalid_option_values_are_rejected_naming_the_option(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(SpecError, match="electron") as info:
        electron(**options)
    assert named in str(info.value)


def test_options_are_validated_when_the_decorator_runs_with_the_function_named() -> None:
    def train() -> None: ...

    with pytest.raises(SpecError, match="electron 'train': cpus=0"):
        electron(train, cpus=0)


def test_gpus_with_gpu_none_is_a_contradiction() -> None:
    with pytest.raises(SpecError, match="gpus=2 asks for GPUs but gpu=None"):
        electron(gpu=None, gpus=2)


@pytest.mark.parametrize(
    ("value", "suggestion"),
    [
        ("h100", '@ct.electron(gpu="h100")'),
        ("A100", '@ct.electron(gpu="A100")'),
        ("48GB", '@ct.electron(memory="48GB")'),
        ("18h", '@ct.electron(time_limit="18h")'),
    ],
)
def test_positional_option_suggests_the_keyword(value: str, suggestion: str) -> None:
    with pytest.raises(SpecError, match="Did you mean") as info:
        electron(value)  # type: ignore[call-overload]
    assert suggestion in str(info.value)


def test_positional_non_function_without_a_likely_option_lists_the_options() -> None:
    with pytest.raises(SpecError, match="takes a function, or keyword options only"):
        electron(42)  # type: ignore[call-overload]
    with pytest.raises(SpecError, match=r'Did you mean @ct.lattice\(gpu="h100"\)'):
        lattice("h100")  # type: ignore[call-overload]


def test_gpus_default_to_one_when_a_gpu_type_is_set() -> None:
    @electron(gpu="a100")
    def f() -> None: ...

    assert (f.hardware().gpu, f.hardware().gpus) == ("a100-40gb", 1)
    assert electron(f.function, gpu="h200", gpus=8).hardware().gpus == 8


def test_unset_options_take_the_defaults_without_a_lattice() -> None:
    @electron
    def f() -> None: ...

    assert f.hardware() == HardwareSpec(gpu=None, gpus=0, cpus=1.0, memory_mb=0, time_limit_s=None)


def test_unset_options_inherit_the_lattice_values() -> None:
    @electron(cpus=4)
    def f() -> None: ...

    defaults = Options(gpu="l4", gpus=2, cpus=8, memory=2048, time_limit=60.0)
    assert f.hardware(defaults) == HardwareSpec(
        gpu="l4", gpus=2, cpus=4, memory_mb=2048, time_limit_s=60.0
    )


def test_gpu_none_on_an_electron_overrides_the_lattice_gpu() -> None:
    @electron(gpu=None)
    def f() -> None: ...

    assert f.hardware(Options(gpu="h100", gpus=4)).gpu is None
    assert f.hardware(Options(gpu="h100", gpus=4)).gpus == 0


def test_gpu_type_and_count_inherit_together() -> None:
    @electron(gpu="a100-80gb")
    def f() -> None: ...

    assert f.hardware(Options(gpu="h100", gpus=4)).gpus == 1


def test_electron_gpus_without_any_gpu_type_fails_naming_the_electron() -> None:
    @electron(gpus=2)
    def f() -> None: ...

    assert f.hardware(Options(gpu="t4")).gpus == 2
    with pytest.raises(SpecError, match="electron 'f': gpus=2 asks for GPUs"):
        f.hardware()


def test_executor_accepts_a_name_a_descriptor_or_none() -> None:
    ex = LocalExecutor(workers=2)
    assert electron(executor="local")(print).options.executor == "local"
    assert electron(executor=ex)(print).options.executor is ex
    assert electron(executor=None)(print).options.executor is None


def test_deps_options_accept_shorthands() -> None:
    hook = DepsCall(print)

    @electron(deps_pip=["numpy"], deps_bash="make", call_before=hook, call_after=[hook])
    def f() -> None: ...

    assert f.options.deps_pip == DepsPip(["numpy"])
    assert f.options.deps_bash == DepsBash(["make"])
    assert f.options.call_before == (hook,)
    assert f.options.call_after == (hook,)


def test_outside_a_lattice_an_electron_runs_the_plain_function_without_deps() -> None:
    calls: list[str] = []

    @electron(gpu="h100", call_before=DepsCall(calls.append, args=["hook"]))
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    assert calls == []


def test_electron_repr_shows_the_spec() -> None:
    @electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h", retries=2)
    def train() -> None: ...

    assert repr(train) == "<electron train: 1x H100, 24 CPUs, 48 GB, limit 18h, retries=2>"
    assert "GPU type from its lattice" in repr(electron(gpus=2)(print))


def test_lattice_accepts_the_same_options_and_validates_them() -> None:
    @lattice(gpu="l40s", cpus=2, memory=512, time_limit=60, retries=1, executor="local")
    def wf() -> None: ...

    assert isinstance(wf, Lattice)
    assert wf.options.gpu == "l40s" and wf.options.retries == 1
    with pytest.raises(SpecError, match=r"@ct\.lattice\(\.\.\.\): gpu='h1000'"):

        @lattice(gpu="h1000")
        def wf2() -> None: ...


def test_lattice_gpus_without_a_gpu_type_fails_at_decoration() -> None:
    with pytest.raises(SpecError, match="lattice 'wf': gpus=2"):

        @lattice(gpus=2)
        def wf() -> None: ...


def test_lattice_keeps_the_functions_name_and_doc() -> None:
    @lattice
    def pipeline() -> None:
        """Run everything."""

    assert pipeline.__name__ == "pipeline" and pipeline.__doc__ == "Run everything."
    assert repr(pipeline) == "<lattice pipeline: no defaults>"


def test_calling_a_lattice_directly_runs_it_locally_with_plain_electrons() -> None:
    @electron(gpu="h100")
    def square(x: int) -> int:
        return x * x

    @lattice
    def total(n: int) -> int:
        return sum(square(i) for i in range(n))

    assert total(4) == 14


def test_an_electron_wrapping_a_lattice_rejects_deps() -> None:
    @lattice
    def inner() -> None: ...

    with pytest.raises(SpecError, match=r"wraps a lattice.*deps_pip"):
        electron(inner, deps_pip=["numpy"])
