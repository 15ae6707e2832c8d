"""Server-sent events, decoded a line at a time as the WHATWG HTML standard's event-stream
interpretation says (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

Pure: no I/O. A caller feeds the lines of a streamed answer as they arrive (``httpx``'s
``iter_lines`` or ``aiter_lines``, line breaks removed) and gets each event once its blank line
ends it, so the same decoder serves a blocking and an asynchronous reader.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    """The ``event:`` field; ``message`` when the event named none."""
    data: str


class SSEDecoder:
    """Feeds on lines; comments (``: keep-alive``) and fields other than ``event``/``data`` are
    skipped, as the standard says."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> ServerSentEvent | None:
        """The event that ``line`` ends (a blank line after data), else None."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def finish(self) -> ServerSentEvent | None:
        """The last event of a stream that ended without its blank line."""
        return self.feed("")
