"""The controller's configuration: ``$COBALT_HOME/config.toml``.

Example::

    [controller]
    address = "127.0.0.1:0"               # host:port; port 0 picks a free one. Beyond
                                          # loopback it is TLS only (agents pin the cert)
    agent_address = "head.example:50051"  # where agents dial, when not the address itself
    dashboard_address = "127.0.0.1:0"     # the web dashboard; "" turns it off
    gateway_address = "127.0.0.1:0"       # deployments' HTTP gateway; "" turns it off.
                                          # Port 0 reuses the port of the last run when free
    autoscale_interval_s = 1.0            # seconds between autoscaling decisions
    database_url = "sqlite:////data/cobalt.db"
    retry_backoff_s = 1.0                 # first retry waits this, then doubles
    retry_backoff_max_s = 60.0
    wait_for_cheaper_s = 0.0              # a ready task waits this long for a cheaper
                                          # executor (free, on-premises) before a pricier one
    inline_limit = 65536                  # payloads above this go to the blob store
    max_agents = 256                      # agents connected at once; more are refused
                                          # (and retry) so that they never starve clients

    [executors.local]
    type = "local"
    emulate_gpus = { h100 = 2 }
    prices = { base = "list", gpu_hour = { h100 = 2.10 } }   # or "list"; default "zero"

    [blobs]                               # where large payloads live; default: blob_dir
    type = "s3"                           # or "local" (blob_dir)
    bucket = "my-cobalt-payloads"         # must exist
    prefix = "cobalt/blobs"               # objects are <prefix>/<sha[:2]>/<sha>
    endpoint_url = "http://127.0.0.1:8333"   # an S3-compatible server; omit for AWS
    region = "us-east-1"
    presign_ttl_s = 3600                  # how long a worker's download URL stays valid

Every key is optional. Without a file the controller has one executor,
``local``, with this machine's CPUs, memory and GPUs, and keeps large payloads
in ``blob_dir``. S3 credentials come from boto3's usual chain (environment,
``AWS_PROFILE``, an instance role), never from this file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cobalt_common.errors import ConfigError, SpecError
from cobalt_common.executor_types import COMMON_OPTIONS
from cobalt_common.paths import config_file
from cobalt_common.pricing import parse_prices
from cobalt_executors.registry import EXECUTOR_TYPES

_CONTROLLER_KEYS = {
    "address",
    "agent_address",
    "dashboard_address",
    "gateway_address",
    "autoscale_interval_s",
    "database_url",
    "blob_dir",
    "retry_backoff_s",
    "retry_backoff_max_s",
    "wait_for_cheaper_s",
    "inline_limit",
    "max_agents",
}


_S3_KEYS = {"type", "bucket", "prefix", "endpoint_url", "region", "presign_ttl_s"}


@dataclass(frozen=True, slots=True)
class S3Settings:
    """The ``[blobs]`` table with ``type = "s3"``; see :mod:`cobalt_controller.blobs.s3`."""

    bucket: str
    prefix: str = "cobalt/blobs"
    endpoint_url: str | None = None
    region: str | None = None
    presign_ttl_s: float = 3600.0


@dataclass(slots=True)
class ExecutorConfig:
    name: str
    type: str
    options: dict[str, Any]


@dataclass(slots=True)
class ControllerConfig:
    home: Path
    address: str = "127.0.0.1:0"
    agent_address: str = ""
    """Where agents dial when that is not ``address`` (a name behind NAT, say)."""
    dashboard_address: str = "127.0.0.1:0"
    gateway_address: str = "127.0.0.1:0"
    """Where deployments are served; "" turns the gateway (and deployments) off.
    Port 0 reuses the port the gateway had last time for this home when it is
    free, so deployment URLs survive restarts."""
    autoscale_interval_s: float = 1.0
    database_url: str = ""
    blob_dir: Path = Path()
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    wait_for_cheaper_s: float = 0.0
    """How long a ready task waits for a cheaper executor with room before it
    goes to a pricier one that has room now (0: it never waits)."""
    inline_limit: int = 64 * 1024
    max_agents: int = 256
    """Agents connected at once. Each holds one of the controller's RPC threads for
    as long as it is connected; the pool has this many more than the clients use,
    and an agent beyond it is refused (it retries), so agents never starve clients."""
    executors: list[ExecutorConfig] = field(default_factory=list)
    s3: S3Settings | None = None
    """Large payloads in S3 instead of ``blob_dir`` (the ``[blobs]`` table)."""

    def __post_init__(self) -> None:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'cobalt.db'}"
        if self.blob_dir == Path():
            self.blob_dir = self.home / "blobs"
        if not self.executors:
            self.executors = [ExecutorConfig("local", "local", {})]


def _number(path: Path, key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (positive and value <= 0):
        raise ConfigError(f"{path}: [controller] {key} must be a positive number, got {value!r}.")
    return float(value)


def _address(path: Path, key: str, value: Any) -> str:
    """``host:port`` with a port from 0 to 65535, or "" for off."""
    if not isinstance(value, str):
        raise ConfigError(f'{path}: [controller] {key} must be text such as "127.0.0.1:0".')
    if value == "":
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f'{path}: [controller] {key} must be "host:port" (port 0 picks a free one) or "" '
            f"to turn it off, got {value!r}."
        )
    return value


def load_config(home: Path, path: Path | None = None) -> ControllerConfig:
    """Reads and validates the configuration; errors name the file and key."""
    path = path or config_file(home)
    if not path.exists():
        return ControllerConfig(home=home)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"controller", "executors", "blobs"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
            "known sections are [controller], [blobs] and [executors.<name>]."
        )
    section = data.get("controller", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [controller] must be a table of settings.")
    bad = set(section) - _CONTROLLER_KEYS
    if bad:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(bad))} in [controller]; "
            f"known keys are: {', '.join(sorted(_CONTROLLER_KEYS))}."
        )
    cfg = ControllerConfig(home=home)
    if "address" in section:
        cfg.address = str(section["address"])
    if "agent_address" in section:
        cfg.agent_address = _address(path, "agent_address", section["agent_address"])
    if "dashboard_address" in section:
        cfg.dashboard_address = str(section["dashboard_address"])
    if "gateway_address" in section:
        cfg.gateway_address = _address(path, "gateway_address", section["gateway_address"])
    if "autoscale_interval_s" in section:
        cfg.autoscale_interval_s = _number(
            path, "autoscale_interval_s", section["autoscale_interval_s"]
        )
    if "database_url" in section:
        cfg.database_url = str(section["database_url"])
    if "blob_dir" in section:
        cfg.blob_dir = Path(str(section["blob_dir"])).expanduser()
    if "retry_backoff_s" in section:
        cfg.retry_backoff_s = _number(path, "retry_backoff_s", section["retry_backoff_s"])
    if "wait_for_cheaper_s" in section:
        value = section["wait_for_cheaper_s"]
        cfg.wait_for_cheaper_s = 0.0 if value == 0 else _number(path, "wait_for_cheaper_s", value)
    if "retry_backoff_max_s" in section:
        cfg.retry_backoff_max_s = _number(
            path, "retry_backoff_max_s", section["retry_backoff_max_s"]
        )
    if "inline_limit" in section:
        cfg.inline_limit = int(_number(path, "inline_limit", section["inline_limit"]))
    if "max_agents" in section:
        value = section["max_agents"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
            raise ConfigError(
                f"{path}: [controller] max_agents must be a whole number from 1 to 4096, "
                f"got {value!r}."
            )
        cfg.max_agents = value
    if "blobs" in data:
        cfg.s3 = _blobs(path, data["blobs"])
    executors = data.get("executors", {})
    if not isinstance(executors, dict):
        raise ConfigError(f"{path}: executors must be tables such as [executors.local].")
    if executors:
        cfg.executors = []
        for name, table in executors.items():
            if not isinstance(table, dict) or "type" not in table:
                raise ConfigError(
                    f'{path}: [executors.{name}] needs a type, for example type = "local".'
                )
            options = {k: v for k, v in table.items() if k != "type"}
            cfg.executors.append(_executor(path, str(name), table["type"], options))
    return cfg


def _blobs(path: Path, table: Any) -> S3Settings | None:
    """The ``[blobs]`` table: None for the local directory, else the S3 settings."""
    if not isinstance(table, dict) or table.get("type", "local") not in ("local", "s3"):
        raise ConfigError(f'{path}: [blobs] type must be "local" or "s3".')
    if table.get("type", "local") == "local":
        if set(table) - {"type"}:
            raise ConfigError(
                f'{path}: [blobs] of type "local" takes no other key; '
                "its directory is [controller] blob_dir."
            )
        return None
    unknown = sorted(set(table) - _S3_KEYS)
    if unknown:
        secret = any("key" in k or "secret" in k or "token" in k for k in unknown)
        hint = (
            " Credentials never go in this file: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the controller's environment."
            if secret
            else ""
        )
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} in [blobs]; "
            f"an s3 blob store accepts: {', '.join(sorted(_S3_KEYS))}.{hint}"
        )
    text = {}
    for key in ("bucket", "prefix", "endpoint_url", "region"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{path}: [blobs] {key} must be non-empty text, got {value!r}.")
        text[key] = value
    if text["bucket"] is None:
        raise ConfigError(f'{path}: [blobs] of type "s3" needs a bucket, e.g. bucket = "payloads".')
    endpoint = text["endpoint_url"]
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"{path}: [blobs] endpoint_url must start with http:// or https://, got {endpoint!r}."
        )
    ttl = table.get("presign_ttl_s", 3600)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= 7 * 86400:
        raise ConfigError(
            f"{path}: [blobs] presign_ttl_s must be seconds from 1 to 604800 (7 days, "
            f"S3's limit), got {ttl!r}."
        )
    return S3Settings(
        bucket=text["bucket"],
        prefix=text["prefix"] if text["prefix"] is not None else "cobalt/blobs",
        endpoint_url=endpoint,
        region=text["region"],
        presign_ttl_s=float(ttl),
    )


def _executor(path: Path, name: str, type_name: Any, options: dict[str, Any]) -> ExecutorConfig:
    """Checks the type and option names here, so errors name the file and table."""
    cls = EXECUTOR_TYPES.get(str(type_name))
    if cls is None:
        raise ConfigError(
            f"{path}: [executors.{name}] type {type_name!r} is not an executor type; "
            f"known types are: {', '.join(sorted(EXECUTOR_TYPES))}."
        )
    accepted = cls.accepted_options | COMMON_OPTIONS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} in [executors.{name}]; "
            f"a {cls.type_name!r} executor accepts: {', '.join(sorted(accepted))}."
        )
    try:
        parse_prices(
            options.get("prices"), where=f"[executors.{name}] prices", default=cls.default_prices
        )
    except SpecError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return ExecutorConfig(name, cls.type_name, options)
