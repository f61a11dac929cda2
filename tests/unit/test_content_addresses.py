"""Content addresses from requests: exactly 64 lowercase hex digits, the hash of
their bytes, and never echoed back whole when wrong."""

from __future__ import annotations

import hashlib

import pytest

from cobalt_common.checks import brief, check_content, is_sha256, validate_sha256
from cobalt_common.errors import ContentAddressError, Error

pytestmark = pytest.mark.unit

GOOD = hashlib.sha256(b"payload").hexdigest()


def test_a_sha256_of_64_lowercase_hex_digits_is_a_content_address() -> None:
    assert is_sha256(GOOD)
    assert validate_sha256(GOOD) == GOOD


@pytest.mark.parametrize(
    "value",
    ["/etc/passwd", "./../controller.json", GOOD.upper(), GOOD[:-1], GOOD + "0", "", f" {GOOD}"],
    ids=["path", "relative path", "uppercase", "too short", "too long", "empty", "padded"],
)
def test_anything_else_is_refused_with_one_error(value: str) -> None:
    assert not is_sha256(value)
    with pytest.raises(ContentAddressError, match="64 lowercase hex digits"):
        validate_sha256(value)


def test_the_content_address_error_is_a_cobalt_error_and_a_value_error() -> None:
    assert issubclass(ContentAddressError, Error)
    assert issubclass(ContentAddressError, ValueError)


def test_a_refused_sha256_is_echoed_as_a_short_prefix_and_its_length() -> None:
    huge = "/" + "x" * (10 * 1024 * 1024)
    with pytest.raises(ContentAddressError) as refused:
        validate_sha256(huge, "function")
    message = str(refused.value)
    assert len(message) < 200
    assert "'/xxxxxxxxxxxxxxx'" in message
    assert f"{len(huge)} characters" in message
    assert message.startswith("function sha256")


def test_bytes_that_hash_to_their_sha256_are_accepted() -> None:
    check_content(GOOD, b"payload")


def test_bytes_sent_under_another_payloads_sha256_are_refused() -> None:
    with pytest.raises(ContentAddressError, match="does not hash to its sha256"):
        check_content(GOOD, b"POISONED")


def test_a_short_id_is_echoed_whole_and_a_long_one_shortened() -> None:
    dispatch_id = "0123456789abcdef" * 2
    assert brief(dispatch_id) == repr(dispatch_id)
    long = "d" * (1 << 20)
    assert brief(long) == f"{'d' * 16!r}... ({1 << 20} characters)"


def test_control_characters_in_an_echoed_value_are_escaped() -> None:
    assert brief("a\nforged log line") == repr("a\nforged log line")
    assert "\n" not in brief("a\nforged log line")
