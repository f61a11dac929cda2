"""Slurm's commands, run as argument lists and answered as typed values.

:class:`SlurmCli` runs ``scontrol``, ``sbatch``, ``squeue`` and ``scancel``
without a shell, each with a bounded time, in an environment that carries
``SLURM_CONF`` when one is given. It never runs ``sacct``: that needs
slurmdbd, which many clusters (and every small one) lack. A job that
``squeue`` no longer lists has ended.

Failures become cobalt errors whose message names the command, what it
printed and what to do:

- :class:`~cobalt_common.errors.ConfigError`: the commands are not installed,
  or they cannot read the cluster's configuration.
- :class:`~cobalt_common.errors.UnsatisfiableError`: ``sbatch`` refused a job
  that the cluster can never run (no such partition, gres type or node size).
- :class:`~cobalt_common.errors.DispatchError`: anything else (slurmctld
  unreachable or too slow, an answer that cannot be read).

Example:
    >>> cli = SlurmCli("/etc/slurm/slurm.conf", timeout_s=10)
    >>> cli.env["SLURM_CONF"]
    '/etc/slurm/slurm.conf'
"""

from __future__ import annotations

import os
import re
import signal as signals
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from cobalt_common.errors import ConfigError, DispatchError, Error, UnsatisfiableError
from cobalt_executors.slurm._parse import (
    SQUEUE_FORMAT,
    JobState,
    NodeInfo,
    ParseError,
    PartitionInfo,
    parse_jobs,
    parse_nodes,
    parse_partitions,
    parse_submitted,
)

__all__ = ["SlurmCli"]

_T = TypeVar("_T")

_JOB_ID = re.compile(r"\d+(?:_\d+)?")
_IDS_PER_SQUEUE = 500

_CONFIG_PROBLEMS = (
    "could not establish a configuration source",
    "unable to process configuration file",
)
_NEVER_RUNS = (
    "requested node configuration is not available",
    "memory specification can not be satisfied",
    "invalid generic resource",
    "invalid partition",
    "invalid account",
    "invalid qos",
    "requested time limit is invalid",
    "more processors requested than permitted",
    "node count specification invalid",
)
_ALL_GONE = "invalid job id specified"


def _signal_name(value: str | int) -> str:
    """Checks a signal for ``scancel --signal`` and returns its name without ``SIG``."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return signals.Signals(value).name.removeprefix("SIG")
        if isinstance(value, str):
            return signals.Signals["SIG" + value.upper().removeprefix("SIG")].name[3:]
    except (KeyError, ValueError):
        pass
    raise ValueError(
        f"signal={value!r} is not a signal; use a name such as 'TERM', 'KILL', 'USR1' or "
        "a signal.Signals value."
    )


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or _JOB_ID.fullmatch(job_id) is None:
        raise ValueError(f"{job_id!r} is not a Slurm job id (digits, as sbatch --parsable gives).")
    return job_id


class SlurmCli:
    """Slurm's commands for one cluster.

    Holds no state but its settings, so one instance may serve many threads.

    Args:
        slurm_conf: the cluster's ``slurm.conf``, passed as ``SLURM_CONF``; None
            lets the commands find it themselves (``/etc/slurm`` or configless).
        env: variables for the commands, over this process's environment.
        timeout_s: the longest one command may take before it is killed.
        bin_dir: where the commands are; None looks them up on ``PATH``.
    """

    def __init__(
        self,
        slurm_conf: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds.")
        self.env: dict[str, str] = {**os.environ, **(env or {})}
        if slurm_conf is not None:
            self.env["SLURM_CONF"] = os.fspath(slurm_conf)
        self.timeout_s = float(timeout_s)
        self.bin_dir = Path(bin_dir) if bin_dir is not None else None

    def nodes(self) -> list[NodeInfo]:
        """Every node of the cluster, from ``scontrol show node -o``."""
        text = self._run(["scontrol", "show", "node", "-o"], what="scontrol show node")
        return self._parsed(parse_nodes, text, "scontrol show node")

    def partitions(self) -> list[PartitionInfo]:
        """Every partition of the cluster, from ``scontrol show partition -o``."""
        text = self._run(["scontrol", "show", "partition", "-o"], what="scontrol show partition")
        return self._parsed(parse_partitions, text, "scontrol show partition")

    def submit(self, options: Sequence[str], script: str) -> str:
        """Submits a batch job and returns its id.

        Args:
            options: ``sbatch`` options, each one argument starting with ``-``
                (``cobalt_executors.slurm._sbatch`` makes them from a hardware spec).
            script: the batch script's text, starting with ``#!``; it goes on
                stdin, so no file is written.
        """
        for option in options:
            if not isinstance(option, str) or not option.startswith("-") or "\n" in option:
                raise ValueError(f"sbatch option {option!r} must be one argument starting with -.")
        if not script.startswith("#!"):
            raise ValueError("a batch script must start with #! (for example #!/bin/sh).")
        text = self._run(["sbatch", "--parsable", *options], what="sbatch", stdin=script)
        return self._parsed(parse_submitted, text, "sbatch --parsable")

    def jobs(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """Where each job stands, by id, from ``squeue -t all``.

        A job absent from the answer has ended and Slurm has forgotten it
        (after ``MinJobAge``); one that ended more recently is present with
        an ended state (:attr:`JobState.ended`).
        """
        ids = sorted({_check_job_id(job_id) for job_id in job_ids})
        states: dict[str, JobState] = {}
        for start in range(0, len(ids), _IDS_PER_SQUEUE):
            chunk = ",".join(ids[start : start + _IDS_PER_SQUEUE])
            argv = ["squeue", "-h", "-t", "all", "-o", SQUEUE_FORMAT, "-j", chunk]
            text = self._run(argv, what="squeue", gone_is_empty=True)
            states.update(self._parsed(parse_jobs, text, "squeue"))
        return states

    def cancel(self, job_id: str, signal: str | int | None = None) -> None:
        """Cancels a job, or sends it ``signal`` (its batch script and every step).

        Cancelling a job that has already ended does nothing.
        """
        argv = ["scancel"]
        if signal is not None:
            argv += [f"--signal={_signal_name(signal)}", "--full"]
        self._run([*argv, _check_job_id(job_id)], what="scancel", gone_is_empty=True)

    def _parsed(self, parse: Callable[[str], _T], text: str, what: str) -> _T:
        try:
            return parse(text)
        except ParseError as exc:
            raise DispatchError(
                f"could not read what `{what}` printed ({exc}). cobalt reads Slurm 22.05 and "
                "later; check `sinfo --version` against the cluster's Slurm."
            ) from exc

    def _run(
        self, argv: list[str], *, what: str, stdin: str | None = None, gone_is_empty: bool = False
    ) -> str:
        conf = self.env.get("SLURM_CONF")
        if conf and not os.path.exists(conf):  # Slurm's commands would retry for a minute
            raise ConfigError(
                f"`{what}` cannot run: the Slurm configuration {conf} does not exist; set the "
                "executor's slurm_conf to the cluster's slurm.conf."
            )
        program = str(self.bin_dir / argv[0]) if self.bin_dir is not None else argv[0]
        try:
            done = subprocess.run(
                [program, *argv[1:]],
                input=stdin,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ConfigError(
                f"`{argv[0]}` was not found ({program}); install Slurm's client commands "
                "(Debian: slurm-client) or set the executor's bin_dir to where they are."
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise DispatchError(
                f"`{what}` did not answer within {self.timeout_s:g} s and was stopped; "
                "slurmctld is unreachable or overloaded. Check `scontrol ping`, or raise "
                "the command timeout."
            ) from exc
        if done.returncode == 0:
            return done.stdout
        stderr = " ".join(done.stderr.split()) or "(nothing on stderr)"
        lowered = stderr.lower()
        if gone_is_empty and _ALL_GONE in lowered:
            return ""
        raise self._error(what, done.returncode, stderr, lowered)

    def _error(self, what: str, code: int, stderr: str, lowered: str) -> Error:
        said = f"`{what}` failed (exit {code}): {stderr}"
        if any(problem in lowered for problem in _CONFIG_PROBLEMS):
            conf = self.env.get("SLURM_CONF", "(SLURM_CONF unset)")
            return ConfigError(
                f"{said}. Slurm's commands cannot read the cluster's configuration "
                f"{conf}; set the executor's slurm_conf to the cluster's slurm.conf."
            )
        if what == "sbatch" and any(refusal in lowered for refusal in _NEVER_RUNS):
            return UnsatisfiableError(
                f"{said}. The cluster can never run this job as asked; lower the task's "
                "hardware, or check the executor's partition, account, qos and gpu_types."
            )
        return DispatchError(
            f"{said}. Check that slurmctld answers (`scontrol ping`) and that this "
            "user may submit to the cluster."
        )
