"""Turning a stream of token ids into a stream of text, and stopping at stop strings.

Text is decoded incrementally from a short window of recent tokens, so a
token that only completes a multi-byte character, or changes how the
previous word is spelled, never produces broken text. Text that could be
the start of a stop string is held back until it is known not to be one;
the stop string itself is never sent.

Example:
    >>> class Chars:  # a tokenizer whose tokens are characters
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return "".join(chr(i) for i in ids)
    >>> text = TextStream(Chars(), stop=("END",))
    >>> [text.push(ord(c)) for c in "hi E"]
    ['h', 'i', ' ', '']
    >>> text.push(ord("N")), text.push(ord("D")), text.stopped
    ('', '', True)
    >>> text.text
    'hi '

Bytes that never complete a character come out as U+FFFD, never silently dropped:

    >>> class Bytes:
    ...     def decode(self, ids, skip_special_tokens=True):
    ...         return bytes(ids).decode("utf-8", errors="replace")
    >>> text = TextStream(Bytes())
    >>> [text.push(b) for b in "é".encode()], text.push(0xC3), text.finish()
    (['', 'é'], '', '\ufffd')
"""

from __future__ import annotations

from typing import Any

_INCOMPLETE = "\ufffd"
_MAX_CHAR_TOKENS = 4  # a UTF-8 character spans at most 4 bytes, so at most 4 tokens


class TextStream:
    """The text of one generation so far, fed one token at a time."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here gives context for spacing
        self._read = 0  # tokens whose text is already in ``_decoded``
        self._decoded = ""  # all text decoded so far
        self.text = ""  # text sent so far
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; the text that can be sent now (often empty near a stop string)."""
        self._ids.append(token)
        window_before = self._decode(self._ids[self._prefix : self._read])
        window = self._decode(self._ids[self._prefix :])
        incomplete = window.endswith(_INCOMPLETE) and len(self._ids) - self._read < _MAX_CHAR_TOKENS
        if len(window) > len(window_before) and not incomplete:
            self._take(window, window_before)
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held back, once the generation has ended without a stop string."""
        if self._read < len(self._ids):  # bytes that never completed a character
            before = self._decode(self._ids[self._prefix : self._read])
            self._take(self._decode(self._ids[self._prefix :]), before)
        return self._release(final=True)

    def _take(self, window: str, window_before: str) -> None:
        self._decoded += window[len(window_before) :]
        self._prefix, self._read = self._read, len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""

    def _release(self, *, final: bool) -> str:
        if self.stopped:
            return ""
        decoded = self._decoded
        for stop in self._stop:
            at = decoded.find(stop, max(0, len(self.text) - len(stop)))
            if at != -1:
                decoded = decoded[:at]
                self.stopped = True
        if not self.stopped and not final:
            decoded = decoded[: len(decoded) - self._held(decoded)]
        new = decoded[len(self.text) :]
        self.text += new
        return new

    def _held(self, decoded: str) -> int:
        """How many trailing characters could begin a stop string."""
        held = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(decoded)), held, -1):
                if decoded.endswith(stop[:n]):
                    held = n
                    break
        return held
