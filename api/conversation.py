"""Conversations of the chat-shaped dialects (Anthropic Messages, OpenAI Chat) in the canonical
shape: earlier turns and the current one, texts and images in the order the caller sent them.

Two rules about what is *not* the user's words, shared by those dialects:

- **Client scaffolding in a prompt.** Coding agents wrap context of their own into the user's
  turn: Claude Code puts ``<system-reminder>…</system-reminder>`` blocks (the date, the project's
  memory files) and the output of its own commands (``<local-command-stdout>``…) beside what the
  user typed. Those blocks (:data:`SCAFFOLDING_TAGS`) are cut out of every user text before it
  becomes a prompt; a text left empty is dropped. When anything was cut, ``applied.ignored``
  says ``<system-reminder>`` (the tags found).
- **A client's own system prompt.** A request that defines tools (``tools``) comes from an agent
  whose system prompt instructs a language model how to use them (Claude Code's runs to
  thousands of tokens): it is not forwarded to an image model and not billed, and
  ``applied.ignored`` lists ``system`` and ``tools``. ``IMAGEGATE_AGENT_SYSTEM_PROMPT=forward``
  forwards it all the same. A request without tools keeps its system prompt.

Images of earlier turns are kept where they were: an image the assistant made, sent back in a
markdown image (``![...](data:...)``, as imagegate answers on these dialects) or in
``message.images``, is an image of the assistant's turn, so that a follow-up ("now make it blue")
edits it (see :meth:`core.generation.GenerationRequest.images_for`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from api.inputs import ImageRef
from core.generation import Part, Turn

SCAFFOLDING_TAGS = ("system-reminder", "local-command-stdout", "local-command-stderr", "local-command-caveat")
_SCAFFOLDING = re.compile(r"<(?P<tag>" + "|".join(SCAFFOLDING_TAGS) + r")>.*?</(?P=tag)>\s*", re.DOTALL)
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]*\]\((?P<url>data:image/[^)\s]+|https?://[^)\s]+)\)")

AgentSystemPrompt = Literal["drop", "forward"]


def strip_scaffolding(text: str) -> tuple[str, list[str]]:
    """``text`` without the client's scaffolding blocks, and the tags that were cut."""
    found = [f"<{m.group('tag')}>" for m in _SCAFFOLDING.finditer(text)]
    return (_SCAFFOLDING.sub("", text).strip() if found else text.strip()), found


def split_markdown_images(text: str) -> Iterator[tuple[str, str | None]]:
    """The pieces of an assistant's text in order: ``(text, None)`` and ``("", url)`` for each
    markdown image whose URL is a data URL or an http(s) URL."""
    at = 0
    for match in _MARKDOWN_IMAGE.finditer(text):
        if text[at:match.start()].strip():
            yield text[at:match.start()].strip(), None
        yield "", match.group("url")
        at = match.end()
    if text[at:].strip():
        yield text[at:].strip(), None


@dataclass
class ConversationBuilder:
    """Collects turns in order; the last user turn becomes the current one (:meth:`finish`)."""

    images: list[ImageRef] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    _parts: list[Part] = field(default_factory=list)
    _role: Literal["user", "model"] | None = None

    def start(self, role: Literal["user", "model"]) -> None:
        self.end()
        self._role = role

    def end(self) -> None:
        """Close the turn being built (an empty one too: a last user turn with nothing left is
        not an earlier turn's prompt)."""
        if self._role is not None:
            self.turns.append(Turn(role=self._role, parts=self._parts))
        self._role, self._parts = None, []

    def text(self, text: str, *, param: str) -> None:
        """A text of the current turn (``param`` names it in errors): scaffolding cut from the
        user's; the assistant's markdown images become its images."""
        if self._role != "model":
            text, cut = strip_scaffolding(text)
            self.ignored += [tag for tag in cut if tag not in self.ignored]
            if text:
                self._parts.append(Part(text=text))
            return
        for piece, url in split_markdown_images(text):
            if url is None:
                self._parts.append(Part(text=piece))
            else:
                self.image(ImageRef(param=param, url=url))

    def image(self, ref: ImageRef) -> None:
        self._parts.append(Part(image=len(self.images)))
        self.images.append(ref)

    def finish(self) -> tuple[list[Turn], list[Part]] | None:
        """``(history, current parts)``: the turns before the last user turn, and its parts
        (turns after it, such as a prefilled assistant answer, are left out); None when there is
        no user turn or the last one has no text (the prompt)."""
        self.end()
        last = max((i for i, t in enumerate(self.turns) if t.role == "user"), default=None)
        if last is None or not any(p.text for p in self.turns[last].parts):
            return None
        return [t for t in self.turns[:last] if t.parts], self.turns[last].parts

    def prompt_of(self, parts: list[Part]) -> str:
        return "\n".join(p.text for p in parts if p.text).strip()


def agent_system(system: str | None, *, has_tools: bool, rule: AgentSystemPrompt,
                 ignored: list[str]) -> str | None:
    """The system prompt to forward: none for an agent's request (one with tools) unless the
    operator forwards it (``IMAGEGATE_AGENT_SYSTEM_PROMPT``); ``ignored`` says what was left out."""
    if not has_tools:
        return system
    ignored.append("tools")
    if rule == "forward" or not system:
        return system
    ignored.append("system")
    return None
