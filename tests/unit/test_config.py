"""Loading ``$COBALT_HOME/config.toml``: defaults, values, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cobalt_common.errors import ConfigError
from cobalt_controller._config import ControllerConfig, ExecutorConfig, S3Settings, load_config

pytestmark = pytest.mark.unit


def _home(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.toml").write_text(text)
    return tmp_path


def _error(tmp_path: Path, text: str) -> str:
    home = _home(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(home)
    message = str(info.value)
    assert str(home / "config.toml") in message, f"the message does not name the file: {message}"
    return message


def test_without_a_file_the_controller_has_one_local_executor_and_embedded_storage(
    tmp_path: Path,
) -> None:
    config = load_config(tmp_path)
    assert config == ControllerConfig(home=tmp_path)
    assert config.address == "127.0.0.1:0"
    assert config.database_url == f"sqlite:///{tmp_path / 'cobalt.db'}"
    assert config.blob_dir == tmp_path / "blobs"
    assert config.executors == [ExecutorConfig("local", "local", {})]
    assert config.retry_backoff_s == 1.0 and config.inline_limit == 64 * 1024


def test_every_key_of_a_full_file_is_read(tmp_path: Path) -> None:
    home = _home(
        tmp_path,
        """
        [controller]
        address = "127.0.0.1:7777"
        database_url = "postgresql://db/cobalt"
        blob_dir = "/data/blobs"
        retry_backoff_s = 0.05
        retry_backoff_max_s = 2
        inline_limit = 1024
        max_agents = 16

        [executors.local]
        type = "local"
        workers = 4

        [executors.gpu]
        type = "local"
        emulate_gpus = { h100 = 2 }
        memory = "256GB"
        """,
    )
    config = load_config(home)
    assert config.address == "127.0.0.1:7777"
    assert config.database_url == "postgresql://db/cobalt"
    assert config.blob_dir == Path("/data/blobs")
    assert config.retry_backoff_s == 0.05
    assert config.retry_backoff_max_s == 2.0
    assert config.inline_limit == 1024
    assert config.max_agents == 16
    assert config.executors == [
        ExecutorConfig("local", "local", {"workers": 4}),
        ExecutorConfig("gpu", "local", {"emulate_gpus": {"h100": 2}, "memory": "256GB"}),
    ]


def test_an_explicit_path_is_read_instead_of_the_homes_file(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[controller]\ninline_limit = 10\n")
    assert load_config(tmp_path, other).inline_limit == 10


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    message = _error(tmp_path, "[controller\nretry_backoff_s = 1\n")
    assert "not valid TOML" in message


def test_an_unknown_section_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, "[controler]\nretry_backoff_s = 1\n")
    assert "controler" in message
    assert "[controller]" in message and "[executors.<name>]" in message


def test_an_unknown_controller_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, "[controller]\nretry_backof_s = 1\n")
    assert "retry_backof_s" in message and "[controller]" in message
    assert "retry_backoff_s" in message, "the known keys are listed"


@pytest.mark.parametrize("key", ["retry_backoff_s", "retry_backoff_max_s", "inline_limit"])
@pytest.mark.parametrize("value", ["0", "-1", '"fast"', "true"])
def test_a_number_that_is_not_positive_is_named(tmp_path: Path, key: str, value: str) -> None:
    message = _error(tmp_path, f"[controller]\n{key} = {value}\n")
    assert f"[controller] {key}" in message
    assert "positive number" in message


@pytest.mark.parametrize("value", ["0", "5000", "2.5", '"many"', "true"])
def test_max_agents_that_is_not_a_whole_number_in_range_is_named(
    tmp_path: Path, value: str
) -> None:
    message = _error(tmp_path, f"[controller]\nmax_agents = {value}\n")
    assert "[controller] max_agents must be a whole number from 1 to 4096" in message


def test_an_executor_without_a_type_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, "[executors.gpu]\nemulate_gpus = { h100 = 2 }\n")
    assert "[executors.gpu]" in message and "type" in message


def test_an_executor_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, 'executors = { gpu = "local" }\n')
    assert "[executors.gpu]" in message


def test_an_unknown_executor_type_is_named_with_the_known_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, '[executors.gpu]\ntype = "slurmish"\n')
    assert "[executors.gpu]" in message and "slurmish" in message
    assert "local" in message, "the known types are listed"


def test_an_unknown_executor_option_is_named_with_the_accepted_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, '[executors.gpu]\ntype = "local"\nemulate_gpu = { h100 = 2 }\n')
    assert "[executors.gpu]" in message and "emulate_gpu" in message
    assert "emulate_gpus" in message, "the accepted options are listed"


def test_a_controller_section_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, "controller = 5\n")
    assert "[controller]" in message


def test_config_errors_are_cobalt_errors() -> None:
    from cobalt_common.errors import Error

    assert issubclass(ConfigError, Error)


@pytest.mark.parametrize(
    ("prices", "named"),
    [
        ("{ cpu_core_hour = -0.5 }", "[executors.box] prices.cpu_core_hour must be a finite price"),
        ('{ memory_gb_hour = "cheap" }', "[executors.box] prices.memory_gb_hour must be a number"),
        ("{ gpu_hour = { h999 = 2.0 } }", "[executors.box] prices.gpu_hour='h999' is not a known"),
        ('"aws"', '[executors.box] prices must be "list", "zero" or a table'),
    ],
)
def test_bad_prices_are_named_with_file_executor_and_key(
    tmp_path: Path, prices: str, named: str
) -> None:
    message = _error(tmp_path, f'[executors.box]\ntype = "local"\nprices = {prices}\n')
    assert named in message


def test_prices_are_read_per_executor(tmp_path: Path) -> None:
    home = _home(
        tmp_path,
        '[executors.box]\ntype = "local"\nprices = { base = "list", gpu_hour = { h100 = 2.5 } }\n',
    )
    (box,) = load_config(home).executors
    assert box.options["prices"] == {"base": "list", "gpu_hour": {"h100": 2.5}}


def test_the_gateway_defaults_to_loopback_and_can_be_turned_off(tmp_path: Path) -> None:
    default = load_config(tmp_path)
    assert (default.gateway_address, default.autoscale_interval_s) == ("127.0.0.1:0", 1.0)
    home = _home(tmp_path, '[controller]\ngateway_address = ""\nautoscale_interval_s = 0.2\n')
    config = load_config(home)
    assert (config.gateway_address, config.autoscale_interval_s) == ("", 0.2)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('gateway_address = "localhost"', "gateway_address must be"),
        ('gateway_address = "127.0.0.1:99999"', "gateway_address must be"),
        ("gateway_address = 8080", "gateway_address must be text"),
        ("autoscale_interval_s = 0", "autoscale_interval_s must be a positive number"),
    ],
)
def test_bad_gateway_settings_are_named_with_file_and_key(
    tmp_path: Path, line: str, named: str
) -> None:
    assert named in _error(tmp_path, f"[controller]\n{line}\n")


def test_a_controller_with_a_bad_file_exits_with_a_line_its_starter_turns_into_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cobalt_common.startup import CONFIG_EXIT_CODE, find_config_error
    from cobalt_controller.__main__ import main

    home = _home(tmp_path, "[controller]\ninline_limit = 0\n")
    assert main(["serve", "--home", str(home)]) == CONFIG_EXIT_CODE
    out = capsys.readouterr()
    message = find_config_error(out.out + out.err)
    assert message is not None, out
    assert message.startswith(f"{home / 'config.toml'}: [controller] inline_limit")
    assert f"cobalt controller: {message}" in out.err, "a person reading the log sees it too"


def test_an_s3_blob_store_is_read_from_the_blobs_table(tmp_path: Path) -> None:
    config = load_config(
        _home(
            tmp_path,
            '[blobs]\ntype = "s3"\nbucket = "payloads"\nprefix = "team/cobalt"\n'
            'endpoint_url = "http://127.0.0.1:8333"\nregion = "eu-west-1"\npresign_ttl_s = 600\n',
        )
    )
    assert config.s3 == S3Settings(
        bucket="payloads",
        prefix="team/cobalt",
        endpoint_url="http://127.0.0.1:8333",
        region="eu-west-1",
        presign_ttl_s=600.0,
    )
    assert load_config(_home(tmp_path, '[blobs]\ntype = "local"\n')).s3 is None
    assert load_config(_home(tmp_path, "")).s3 is None


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('type = "s3"', 'needs a bucket, e.g. bucket = "payloads"'),
        ('type = "gcs"\nbucket = "b"', '[blobs] type must be "local" or "s3"'),
        ('type = "local"\nbucket = "b"', "its directory is [controller] blob_dir"),
        ('type = "s3"\nbucket = ""', "[blobs] bucket must be non-empty text"),
        ('type = "s3"\nbucket = "b"\nendpoint_url = "127.0.0.1:8333"', "must start with http://"),
        ('type = "s3"\nbucket = "b"\npresign_ttl_s = 0', "presign_ttl_s must be seconds from 1"),
        ('type = "s3"\nbucket = "b"\npresign_ttl_s = 864000', "(7 days, S3's limit)"),
        ('type = "s3"\nbucket = "b"\nregoin = "x"', "unknown key(s) regoin in [blobs]"),
    ],
)
def test_bad_blob_store_settings_are_named_with_file_and_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    assert expected in _error(tmp_path, f"[blobs]\n{table}\n")


def test_credentials_in_the_blobs_table_are_refused_with_where_they_belong(
    tmp_path: Path,
) -> None:
    message = _error(
        tmp_path,
        '[blobs]\ntype = "s3"\nbucket = "b"\naws_secret_access_key = "hunter2"\n',
    )
    assert "unknown key(s) aws_secret_access_key" in message
    assert "AWS_SECRET_ACCESS_KEY" in message and "AWS_PROFILE" in message
    assert "hunter2" not in message
