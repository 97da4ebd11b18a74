"""Summaries for the RESET_WITH_SUMMARY context strategy.

A summarizer is any ``async (messages, instruction) -> str``. :class:`OpenAISummarizer` asks
an OpenAI-compatible endpoint (one non-streamed request). The Dhara manager bounds the call in
time (``summary_timeout``) and falls back to a plain reset, reported, when it fails or is late.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

import httpx

from ..exceptions import RustvaniError
from ..services.llm.openai import OpenAILLMConfig

__all__ = ["OpenAISummarizer", "Summarizer", "SummaryError", "transcript"]

Summarizer: TypeAlias = Callable[[Sequence[Mapping[str, Any]], str], Awaitable[str]]


class SummaryError(RustvaniError):
    """A summary request failed."""


def _shown(url: str) -> str:
    """``url`` without credentials (a proxy's ``https://user:password@host/v1``)."""
    try:
        return str(httpx.URL(url).copy_with(userinfo=b""))
    except Exception:
        return "the configured base_url"


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """The conversation as plain text lines (system messages left out), for a summary
    request: tool calls and results become readable lines, not protocol messages."""
    lines: list[str] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        text = _content(message)
        if role == "assistant":
            for call in message.get("tool_calls") or ():
                fn = call.get("function", {})
                lines.append(f"assistant called {fn.get('name')}({fn.get('arguments', '')})")
            if text:
                lines.append(f"assistant: {text}")
        elif role == "tool":
            lines.append(f"tool result: {text}")
        else:
            lines.append(f"{role}: {text}")
    return "\n".join(lines)


class OpenAISummarizer:
    """Summarises with one non-streamed chat completion on an OpenAI-compatible endpoint.

    ``http_client`` may be shared (it is never closed here); otherwise a client is opened per
    summary. Errors never include the API key.
    """

    def __init__(
        self, config: OpenAILLMConfig, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.http_client = http_client

    async def __call__(self, messages: Sequence[Mapping[str, Any]], instruction: str) -> str:
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "stream": False,
            "messages": [
                {"role": "system", "content": instruction},
                {"role": "user", "content": transcript(messages) or "(no conversation yet)"},
            ],
        }
        headers = {k: v for k, v in cfg.headers().items() if k.lower() != "accept"}
        timeout = httpx.Timeout(cfg.first_token_timeout, connect=cfg.connect_timeout)
        try:
            if self.http_client is not None:
                response = await self._post(self.http_client, body, headers, timeout)
            else:
                async with httpx.AsyncClient(timeout=timeout) as client:
                    response = await self._post(client, body, headers, timeout)
        except httpx.HTTPError as exc:
            raise SummaryError(
                f"summary request to {_shown(cfg.base_url)} failed: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise SummaryError(f"summary request failed with HTTP {response.status_code}")
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SummaryError("the summary response has no message content") from None
        if not isinstance(text, str) or not text.strip():
            raise SummaryError("the summary came back empty")
        return text.strip()

    async def _post(
        self,
        client: httpx.AsyncClient,
        body: dict[str, Any],
        headers: dict[str, str],
        limits: httpx.Timeout,
    ) -> httpx.Response:
        cfg = self.config
        return await client.post(
            cfg.chat_completions_url(),
            content=json.dumps(body),
            headers={**headers, "Content-Type": "application/json"},
            params=dict(cfg.extra_query) or None,
            timeout=limits,
        )
