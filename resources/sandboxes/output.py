"""A command's output as every provider handles it: each line passed on as it arrives, the last
lines kept for the command's result."""

from __future__ import annotations

from collections import deque

from resources.sandboxes.base import OutputCallback

TAIL_LINES = 80  # lines of output a result keeps


class OutputTail:
    """The last `TAIL_LINES` lines of one command's merged output streams; every complete line
    also goes to `on_output` when it arrives (a live log)."""

    def __init__(self, on_output: OutputCallback | None = None):
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._on_output = on_output
        # Bytes of an unfinished line, per stream (1 stdout, 2 stderr): streams are split into
        # lines separately, and a line is decoded whole (a character may span two chunks).
        self._pending: dict[int, bytes] = {1: b"", 2: b""}

    def feed(self, data: bytes, stream: int = 1) -> None:
        """Take a chunk of one stream; every line it completes is kept and passed on."""
        *lines, self._pending[stream] = (self._pending.get(stream, b"") + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            self._lines.append(text + "\n")
            if self._on_output:
                self._on_output(text)

    def finish(self, *, newline: bool = False) -> None:
        """The streams ended: an unfinished last line is kept (ended with a newline when
        `newline`) and passed on too."""
        for stream, rest in self._pending.items():
            if rest:
                text = rest.decode("utf-8", "replace")
                self._lines.append(text + "\n" if newline else text)
                if self._on_output:
                    self._on_output(text)
            self._pending[stream] = b""

    def note(self, text: str) -> None:
        """Add the platform's own words to the tail (not passed on: they are not output)."""
        self._lines.append(text)

    def text(self) -> str:
        """The kept lines as one text."""
        return "".join(self._lines)
