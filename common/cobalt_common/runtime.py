"""What must match between a client that pickles a task and the interpreter that
unpickles it: the Python minor version, cloudpickle's and cobalt's versions.

The client sends :func:`runtime_versions` with every dispatch; an agent on
another machine compares them with its own before it runs a task
(:func:`version_mismatch`), and fails the task with both sides named instead
of letting an unpickling error surface from inside the worker.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

from cobalt_common.version import __version__

RUNTIME_KEYS = ("python", "cloudpickle", "cobalt")
_NAMES = {"python": "Python", "cloudpickle": "cloudpickle", "cobalt": "cobalt"}


def runtime_versions() -> dict[str, str]:
    """This interpreter's versions of what must match."""
    import cloudpickle

    major, minor, _ = platform.python_version_tuple()
    return {
        "python": f"{major}.{minor}",
        "cloudpickle": str(cloudpickle.__version__),
        "cobalt": __version__,
    }


def version_mismatch(client: Mapping[str, str], agent: Mapping[str, str]) -> str:
    """Why a task pickled under ``client`` cannot run under ``agent``; "" when it can.

    Example:
        >>> version_mismatch({"python": "3.11"}, {"python": "3.12"})[:40]
        'the client runs Python 3.11 but this age'
        >>> version_mismatch({"python": "3.11"}, {"python": "3.11"})
        ''
    """
    wrong = [
        (_NAMES[key], client[key], agent.get(key, "?"))
        for key in RUNTIME_KEYS
        if client.get(key) and client[key] != agent.get(key)
    ]
    if not wrong:
        return ""
    sides = "; ".join(f"the client runs {n} {c} but this agent runs {n} {a}" for n, c, a in wrong)
    return (
        f"{sides}. A task pickled by one version may not load in another: install the "
        "client's versions on the agent's machine (or the agent's in the client's "
        "environment) and dispatch again."
    )
