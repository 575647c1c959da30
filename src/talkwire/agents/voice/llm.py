"""A bridge to any OpenAI-compatible chat-completions endpoint (off unless configured).

The reply is streamed (``stream: true``, server-sent events) so that its
first sentence reaches text-to-speech while the model is still writing the
rest. Works with the OpenAI API, vLLM, llama.cpp's server, Ollama and the
like; the API key comes from the environment, never from a command line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from talkwire.agents.voice.responder import Message

DEFAULT_INSTRUCTIONS: Final = (
    "You are a helpful voice assistant. Your words are spoken aloud: answer in one or "
    "two short sentences of plain speech, without lists, markup or emoji."
)
MAX_HISTORY: Final = 20  # messages sent back to the model, newest kept
_MAX_LINE: Final = 1 << 20


class LlmError(Exception):
    """The model endpoint failed; the message says how (never the key)."""


@dataclass(frozen=True, slots=True)
class LlmSettings:
    url: str  # a base URL (…/v1) or the full …/chat/completions URL
    model: str
    api_key: str | None = None
    timeout_s: float = 20.0
    max_tokens: int = 200
    temperature: float = 0.7

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


def chat_messages(history: Sequence[Message], instructions: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": instructions.strip() or DEFAULT_INSTRUCTIONS}]
    messages += [{"role": m.role, "content": m.text} for m in history[-MAX_HISTORY:] if m.text]
    return messages


def parse_sse_line(line: str) -> str | None:
    """One ``data:`` line of the stream → its text delta ("" if none); None at ``[DONE]``."""
    if not line.startswith("data:"):
        return ""
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise LlmError(f"the model sent a malformed event: {data[:80]!r}") from exc
    if isinstance(chunk, dict) and "error" in chunk:
        raise LlmError(f"the model reported an error: {str(chunk['error'])[:200]}")
    try:
        content = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


class ChatCompletionsResponder:
    def __init__(self, settings: LlmSettings, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._http = http

    async def reply(self, history: Sequence[Message], instructions: str) -> AsyncIterator[str]:
        s = self._settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": chat_messages(history, instructions),
            "stream": True,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
        }
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        try:
            async with self._http.post(
                s.endpoint,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=s.timeout_s),
            ) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise LlmError(f"the model answered {response.status}: {text}")
                async for raw in response.content:
                    if len(raw) > _MAX_LINE:
                        raise LlmError("the model sent an oversized event")
                    delta = parse_sse_line(raw.decode("utf-8", "replace").strip())
                    if delta is None:
                        return
                    if delta:
                        yield delta
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LlmError(f"the model at {s.endpoint} is unreachable: {exc!r}"[:300]) from exc
