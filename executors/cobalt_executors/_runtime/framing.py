"""Length-prefixed protobuf messages on a byte stream."""

from __future__ import annotations

import struct
from typing import Protocol, TypeVar

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 31


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...
    def ParseFromString(self, data: bytes) -> int: ...


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    data = message.SerializeToString()
    return _HEADER.pack(len(data)) + data


def read_message(stream: Readable, message: M) -> M | None:
    """Reads one message into ``message``; None at a clean end of stream."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise EOFError("stream ended inside a message header")
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes exceeds the limit")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("stream ended inside a message")
    message.ParseFromString(data)
    return message
