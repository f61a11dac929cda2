"""Covalent's cluster executor classes: ``ct.executor.SlurmExecutor(...)`` and kin.

A Covalent plugin connects to the cluster or host its arguments name. cobalt's
controller never does that for a client: a descriptor of a cluster type is a
*match*, and the controller runs the task on the executor of that type its
``config.toml`` configures whose address, hosts or partition match what the
descriptor names (without such arguments, on its sole executor of that type).
When none matches, the dispatch fails with the ``config.toml`` table the
operator would add. Each class's docstring says what becomes of every argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cobalt._executor_args import (
    TaskSettings,
    common,
    kubernetes_memory_mb,
    options_dict,
    positive_cpus,
    refuse_set,
    slurm_gres,
    slurm_memory_mb,
    slurm_time_s,
    text,
)
from cobalt._executors import Executor
from cobalt_common.errors import SpecError
from cobalt_common.executor_types import DASK, KUBERNETES, SLURM, SSH

_IDENTITY = "the controller reaches the cluster as its own config.toml says, so it is not used"


class ClusterExecutor(Executor):
    """A Covalent-style descriptor that picks one of the controller's configured
    executors of its type; it sends no options of its own."""

    def __init__(
        self, match: Mapping[str, str], settings: TaskSettings, defaults: dict[str, Any]
    ) -> None:
        super().__init__(None)
        self.match = {key: value for key, value in match.items() if value}
        self.settings = settings
        self.defaults = defaults


class DaskExecutor(ClusterExecutor):
    """Covalent's ``DaskExecutor``: runs tasks on a Dask cluster the controller is
    configured for.

    Args:
        scheduler_address: picks the configured ``type = "dask"`` executor
            whose ``address`` is this one; unset: the sole Dask executor.
        log_stdout, log_stderr: files the task's stdout and stderr are appended
            to on the Dask worker's machine, besides its record.
        workdir: the directory the task runs in on the worker.
        time_limit: seconds (-1: none); retries: the tasks' defaults.
        cache_dir, current_env_on_conda_fail: accepted and unused.
        conda_env, create_unique_workdir=True: refused, with what to do instead.

    Example:
        >>> import cobalt as ct
        >>> ex = ct.executor.DaskExecutor(scheduler_address="tcp://10.0.0.5:8786")
        >>> ex.match
        {'address': 'tcp://10.0.0.5:8786'}
    """

    type_name = DASK.name

    def __init__(
        self,
        scheduler_address: str = "",
        log_stdout: str = "",
        log_stderr: str = "",
        conda_env: str = "",
        cache_dir: str = "",
        current_env_on_conda_fail: bool = False,
        workdir: str = "",
        create_unique_workdir: bool | None = None,
        *,
        time_limit: float = -1,
        retries: int = 0,
    ) -> None:
        owner = "DaskExecutor"
        settings, defaults = common(
            owner,
            log_stdout=log_stdout,
            log_stderr=log_stderr,
            workdir=workdir,
            create_unique_workdir=create_unique_workdir,
            conda_env=conda_env,
            time_limit=time_limit,
            retries=retries,
        )
        text(owner, "cache_dir", cache_dir)
        address = text(owner, "scheduler_address", scheduler_address)
        super().__init__({"address": address}, settings, defaults)


_SLURM_MATCHED = {"partition": "partition", "p": "partition", "account": "account"}
_SLURM_MATCHED |= {"A": "account", "qos": "qos", "q": "qos"}
_SLURM_UNUSED = frozenset({"parsable", "job-name", "J", "comment", "mail-type", "mail-user"})
_SLURM_RESOURCES = ("cpus-per-task", "c", "mem", "gres", "time", "t", "nodes", "N", "ntasks", "n")


def _slurm_options(owner: str, options: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Slurm ``options`` into (match, defaults)."""
    match: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for key, value in options.items():
        where = f'{owner} options["{key}"]'
        if key in _SLURM_MATCHED:
            match[_SLURM_MATCHED[key]] = text(owner, f'options["{key}"]', value)
        elif key in ("cpus-per-task", "c"):
            defaults["cpus"] = positive_cpus(owner, f'options["{key}"]', value)
        elif key == "mem":
            defaults["memory"] = slurm_memory_mb(owner, value)
        elif key == "gres":
            defaults.update(slurm_gres(owner, value))
        elif key in ("time", "t"):
            defaults["time_limit"] = slurm_time_s(owner, value)
        elif key in ("nodes", "N", "ntasks", "n"):
            if str(value).strip() != "1":
                refuse_set(
                    owner,
                    f'options["{key}"]',
                    value,
                    "a cobalt task runs in one process on one node; split the work into "
                    "electrons, which run in parallel.",
                )
        elif key not in _SLURM_UNUSED:
            accepted = sorted({*_SLURM_MATCHED, *_SLURM_UNUSED, *_SLURM_RESOURCES})
            raise SpecError(
                f"{where} has no cobalt equivalent; accepted options are "
                f"{', '.join(accepted)}. Site-wide sbatch options belong in the Slurm "
                "executor's sbatch_options in the controller's config.toml."
            )
    return match, defaults


class SlurmExecutor(ClusterExecutor):
    """The Covalent Slurm plugin's ``SlurmExecutor``: runs tasks on a Slurm cluster
    the controller is configured for, in its pilot allocations.

    Args:
        address: the login node: picks the configured ``type = "slurm"``
            executor named after it (``[executors."login.cluster.org"]``).
        options: ``partition``/``account``/``qos`` (and ``-p``/``-A``/``-q``)
            pick the configured Slurm executor with that ``partition``,
            ``account``, ``qos``; ``cpus-per-task``, ``mem``,
            ``gres="gpu:TYPE:N"`` and ``time`` become the tasks' ``cpus``,
            ``memory``, ``gpu``/``gpus`` and ``time_limit`` where the electron
            and lattice set none; ``nodes``/``ntasks`` may only be 1;
            ``parsable``, ``job-name``, ``comment``, ``mail-*`` are unused; any
            other option is refused (site-wide sbatch options belong in the
            executor's ``sbatch_options`` in config.toml).
        remote_workdir: the directory the task runs in on the compute node.
        log_stdout, log_stderr: files the task's output is appended to on the
            compute node, besides its record.
        time_limit (seconds; -1: none), retries: the tasks' defaults.
        username, ssh_key_file, cert_file, sshproxy, slurm_path, bashrc_path:
            accepted and unused: the controller submits to Slurm as its own
            config.toml says and never logs in with a client's credentials.
        use_srun, poll_freq, cleanup, cache_dir, ignore_versions: accepted and
            unused (cobalt starts tasks in a warm worker, not through srun, and
            learns of their end from the agent, not by polling).
        conda_env, variables, prerun_commands, postrun_commands, srun_options,
        srun_append, create_unique_workdir=True: refused, each with what to do
            instead.

    Example:
        >>> from cobalt.executor import SlurmExecutor
        >>> ex = SlurmExecutor(
        ...     address="login.hpc.example",
        ...     options={"partition": "gpu", "gres": "gpu:h100:2", "time": "2:00:00"},
        ... )
        >>> ex.match
        {'address': 'login.hpc.example', 'partition': 'gpu'}
        >>> ex.defaults
        {'gpu': 'h100', 'gpus': 2, 'time_limit': 7200.0}
    """

    type_name = SLURM.name

    def __init__(
        self,
        username: str | None = None,
        address: str | None = None,
        ssh_key_file: str | None = None,
        cert_file: str | None = None,
        remote_workdir: str | None = None,
        create_unique_workdir: bool | None = None,
        options: dict[str, Any] | None = None,
        variables: dict[str, str] | None = None,
        conda_env: str | None = None,
        prerun_commands: list[str] | None = None,
        postrun_commands: list[str] | None = None,
        use_srun: bool | None = None,
        srun_options: dict[str, Any] | None = None,
        srun_append: str | None = None,
        bashrc_path: str | None = None,
        slurm_path: str | None = None,
        poll_freq: int | None = None,
        cleanup: bool | None = None,
        cache_dir: str | None = None,
        *,
        log_stdout: str = "",
        log_stderr: str = "",
        time_limit: float = -1,
        retries: int = 0,
        ignore_versions: bool | None = None,
        sshproxy: dict[str, Any] | None = None,
    ) -> None:
        owner = "SlurmExecutor"
        for argument, value in (
            ("username", username),
            ("ssh_key_file", ssh_key_file),
            ("cert_file", cert_file),
            ("slurm_path", slurm_path),
            ("bashrc_path", bashrc_path),
            ("cache_dir", cache_dir),
        ):
            text(owner, argument, value)
        refuse_set(
            owner,
            "variables",
            variables,
            "set environment variables in the task itself (os.environ) or in a "
            "call_before=ct.DepsCall(...) hook.",
        )
        refuse_set(
            owner, "prerun_commands", prerun_commands, "use deps_bash=[...] on the electron."
        )
        refuse_set(
            owner,
            "postrun_commands",
            postrun_commands,
            "use call_after=ct.DepsCall(...) on the electron.",
        )
        srun: tuple[tuple[str, object], ...] = (
            ("srun_options", srun_options),
            ("srun_append", srun_append),
        )
        for srun_argument, srun_value in srun:
            refuse_set(
                owner,
                srun_argument,
                srun_value,
                "cobalt runs tasks in warm workers inside its own allocations, not "
                "through srun; site-wide sbatch options belong in the Slurm executor's "
                "sbatch_options in the controller's config.toml.",
            )
        settings, defaults = common(
            owner,
            log_stdout=log_stdout,
            log_stderr=log_stderr,
            workdir=remote_workdir,
            create_unique_workdir=create_unique_workdir,
            conda_env=conda_env,
            time_limit=time_limit,
            retries=retries,
        )
        match, resources = _slurm_options(owner, options_dict(owner, "options", options))
        match = {"address": text(owner, "address", address), **match}
        super().__init__(match, settings, {**defaults, **resources})


class SSHExecutor(ClusterExecutor):
    """The Covalent SSH plugin's ``SSHExecutor``: runs tasks on a machine the
    controller reaches over SSH as its config.toml says.

    Args:
        hostname: picks the configured ``type = "ssh"`` executor whose ``hosts``
            include it (its tasks may run on any of that executor's hosts:
            configure one executor per host to pin them); unset: the sole SSH
            executor.
        remote_workdir: the directory the task runs in on the host.
        log_stdout, log_stderr: files the task's output is appended to on the
            host, besides its record.
        time_limit (seconds; -1: none), retries: the tasks' defaults.
        username, ssh_key_file, python_path: accepted and unused: the
            controller logs in and picks the interpreter as each host's entry
            in config.toml says, never with a client's credentials.
        cache_dir, remote_cache, poll_freq, do_cleanup, retry_connect,
        max_connection_attempts, retry_wait_time: accepted and unused.
        conda_env, run_local_on_ssh_fail=True, create_unique_workdir=True:
            refused, each with what to do instead.

    Example:
        >>> import cobalt as ct
        >>> ct.executor.SSHExecutor(username="me", hostname="gpu1.lab.example").match
        {'hostname': 'gpu1.lab.example'}
    """

    type_name = SSH.name

    def __init__(
        self,
        username: str | None = None,
        hostname: str | None = None,
        ssh_key_file: str | None = None,
        cache_dir: str | None = None,
        python_path: str = "",
        conda_env: str | None = None,
        remote_cache: str = "",
        run_local_on_ssh_fail: bool = False,
        remote_workdir: str = "",
        create_unique_workdir: bool | None = None,
        poll_freq: int = 15,
        do_cleanup: bool = True,
        retry_connect: bool = True,
        max_connection_attempts: int = 5,
        retry_wait_time: int = 5,
        *,
        log_stdout: str = "",
        log_stderr: str = "",
        time_limit: float = -1,
        retries: int = 0,
    ) -> None:
        owner = "SSHExecutor"
        for argument, value in (
            ("username", username),
            ("ssh_key_file", ssh_key_file),
            ("cache_dir", cache_dir),
            ("python_path", python_path),
            ("remote_cache", remote_cache),
        ):
            text(owner, argument, value)
        refuse_set(
            owner,
            "run_local_on_ssh_fail",
            run_local_on_ssh_fail,
            "leave executor unset to let the controller place the task wherever it fits.",
        )
        settings, defaults = common(
            owner,
            log_stdout=log_stdout,
            log_stderr=log_stderr,
            workdir=remote_workdir,
            create_unique_workdir=create_unique_workdir,
            conda_env=conda_env,
            time_limit=time_limit,
            retries=retries,
        )
        super().__init__({"hostname": text(owner, "hostname", hostname)}, settings, defaults)


class KubernetesExecutor(ClusterExecutor):
    """The Covalent Kubernetes plugin's ``KubernetesExecutor``: runs tasks on a
    Kubernetes cluster the controller is configured for, in its pods.

    Args:
        k8s_context, k8s_config_file, base_image: pick the configured
            ``type = "kubernetes"`` executor whose ``context``, ``kubeconfig``
            and ``image`` are these; unset: the sole Kubernetes executor.
            cobalt builds no image per task: the executor's image must hold
            what the task imports.
        vcpu (``"500m"``, ``2``), memory (``"1G"``, ``"512Mi"``): the tasks'
            ``cpus`` and ``memory`` where the electron and lattice set none.
        log_stdout, log_stderr: files the task's output is appended to in its
            pod, besides its record.
        time_limit (seconds; -1: none), retries: the tasks' defaults.
        image_repo, registry, registry_credentials_file, data_store, region,
        poll_freq, cache_dir: accepted and unused (no image is built or pushed;
            payloads travel as the controller's config says).

    Example:
        >>> import cobalt as ct
        >>> ex = ct.executor.KubernetesExecutor(k8s_context="kind-dev", vcpu="500m", memory="1G")
        >>> ex.match, ex.defaults
        ({'context': 'kind-dev'}, {'cpus': 0.5, 'memory': 954})
    """

    type_name = KUBERNETES.name

    def __init__(
        self,
        base_image: str = "",
        k8s_config_file: str = "",
        k8s_context: str = "",
        image_repo: str = "",
        registry: str = "",
        registry_credentials_file: str = "",
        data_store: str = "",
        region: str = "",
        poll_freq: int = 0,
        vcpu: str | float = "",
        memory: str | int = "",
        *,
        log_stdout: str = "",
        log_stderr: str = "",
        cache_dir: str = "",
        time_limit: float = -1,
        retries: int = 0,
    ) -> None:
        owner = "KubernetesExecutor"
        for argument, value in (
            ("image_repo", image_repo),
            ("registry", registry),
            ("registry_credentials_file", registry_credentials_file),
            ("data_store", data_store),
            ("region", region),
            ("cache_dir", cache_dir),
        ):
            text(owner, argument, value)
        settings, defaults = common(
            owner,
            log_stdout=log_stdout,
            log_stderr=log_stderr,
            time_limit=time_limit,
            retries=retries,
        )
        if vcpu not in ("", None):
            defaults["cpus"] = positive_cpus(owner, "vcpu", vcpu)
        if memory not in ("", None):
            defaults["memory"] = kubernetes_memory_mb(owner, memory)
        match = {
            "context": text(owner, "k8s_context", k8s_context),
            "kubeconfig": text(owner, "k8s_config_file", k8s_config_file),
            "image": text(owner, "base_image", base_image),
        }
        super().__init__(match, settings, defaults)
