"""LLM clients over each provider's own HTTP protocol (httpx, no vendor SDK).

- OpenAI chat completions: `POST {base}/v1/chat/completions`, `Authorization: Bearer`,
  `response_format: {"type": "json_object"}`; images as `image_url` parts.
- Google Gemini: `POST {base}/v1beta/models/{model}:generateContent`, `x-goog-api-key`,
  `generationConfig.responseMimeType: application/json`; images, video and audio as
  `fileData {mimeType, fileUri}` parts when Google can fetch the URL itself (public
  `https`: the Developer API fetches public and signed URLs since January 2026),
  otherwise the labeler downloads the bytes and sends them as `inlineData` (a
  presigned URL of a self-hosted S3, `http://`, a private or loopback host). Media
  over `inline_media_max_bytes` is mentioned by URL in the text instead.
- Anthropic messages: `POST {base}/v1/messages`, `x-api-key`, `anthropic-version`;
  images as `{"type": "image", "source": {"type": "url"}}` blocks.
Media a provider cannot take (video on OpenAI or Anthropic) is sent as its URL in text.

The run's `parameters` are forwarded into the request (OpenAI and Anthropic: as body
fields; Gemini: into `generationConfig`, camel-cased), with the usual names mapped
(`max_tokens` <-> `max_output_tokens` / `maxOutputTokens`), except those the model
refuses (`services.labeler.models.accepted_parameters`). `json_output: false` turns
the JSON mode off. A retired model name calls its successor (`models.resolve_model`).
What was changed is recorded in `client.notes`, which the run reports as warnings.

Retries: 429, 408, 409, 425, 5xx and 529, timeouts and connection errors, with
exponential backoff (`backoff_s * 2**n`, capped), the provider's retry delay honoured
(capped at `retry_after_max_s`): `Retry-After` / `retry-after-ms` headers, or Gemini's
`google.rpc.RetryInfo.retryDelay` in the body; at most `max_attempts` tries. A 429 that
can never succeed (OpenAI `insufficient_quota`, a spend or credit limit) is not retried. Every try is recorded in
`client.attempts` with the delay slept after it; `sleep` is injectable.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from contracts.api import LLMProvider
from services.labeler.models import accepted_parameters, is_openai_reasoning, resolve_model
from services.labeler.prompts import Prompt, TextPart
from services.labeler.texts import Media

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})

Sleep = Callable[[float], Awaitable[None]]


class LLMError(Exception):
    """A call that did not produce a reply."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class LLMRequestError(LLMError):
    """The provider refused the request (4xx other than 429): retrying will not help."""


class LLMUnavailable(LLMError):
    """Every attempt failed with a transient error (429, 5xx, timeout)."""


@dataclass(frozen=True)
class Attempt:
    number: int
    outcome: str  # the HTTP status ("200", "429"...) or the exception's name
    delay: float | None  # seconds slept before the next attempt; None when none followed


@dataclass
class RetryPolicy:
    max_attempts: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_max_s))
        return min(self.backoff_s * (2 ** (attempt - 1)), self.backoff_max_s)


@dataclass
class LLMReply:
    text: str
    model: str
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None


class LLMClient(Protocol):
    provider: LLMProvider
    model: str
    attempts: list[Attempt]
    supports_media: frozenset[str]
    notes: list[str]  # what the provider was not sent as asked (see services.labeler.models)

    async def complete(self, prompt: Prompt, parameters: dict[str, Any] | None = None) -> LLMReply: ...
    async def aclose(self) -> None: ...


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _body_retry_delay(response: httpx.Response) -> float | None:
    """Gemini's retry delay: `error.details[]` entry `google.rpc.RetryInfo`,
    `retryDelay` a protobuf Duration ("37s", "1.5s")."""
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(detail.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None


# 429s that say the account cannot pay for the call: retrying only repeats them.
_NO_QUOTA = re.compile(r"insufficient_quota|billing|credit balance|spend(?:ing)? limit|usage limit", re.I)


def permanent_rate_limit(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return False
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    return any(_NO_QUOTA.search(str(error.get(k) or "")) for k in ("code", "type", "message"))


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` (seconds or an HTTP date), `retry-after-ms`, or Gemini's
    `RetryInfo` in the error body."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return _body_retry_delay(response)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HTTPLLMClient:
    """The retrying transport shared by the three providers."""

    provider: LLMProvider
    supports_media: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        default_max_tokens: int = 4096,
        successors: dict[str, str] | None = None,
        inline_media_max_bytes: int = 20 * 1024 * 1024,
        private_media_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.requested_model = model
        self.model, note = resolve_model(model, successors)
        self.notes: list[str] = [note] if note else []
        self.inline_media_max_bytes = inline_media_max_bytes
        self.private_media_hosts = private_media_hosts
        self.inline: dict[str, str] = {}  # media url -> its bytes in base64, for what cannot be fetched
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.default_max_tokens = default_max_tokens
        self.attempts: list[Attempt] = []
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def complete(self, prompt: Prompt, parameters: dict[str, Any] | None = None) -> LLMReply:
        params = dict(parameters or {})
        json_output = bool(params.pop("json_output", True))
        params, notes = accepted_parameters(self.provider, self.model, params, **self._rules())
        self.note(*notes)
        prompt = await self.prepare(prompt)
        url, headers, body = self.request(prompt, params, json_output)
        return self.parse(await self._post(url, headers, body))

    def reachable(self, media: Media) -> bool:
        return media.url in self.inline or publicly_fetchable(media.url, self.private_media_hosts)

    def note(self, *notes: str) -> None:
        self.notes.extend(n for n in notes if n not in self.notes)

    def _rules(self) -> dict[str, Any]:
        return {}

    async def prepare(self, prompt: Prompt) -> Prompt:
        """Download the media the provider's servers cannot fetch themselves (a presigned
        URL of a self-hosted S3, a private host), to send inline (`self.inline`)."""
        for part in prompt.parts:
            if isinstance(part, TextPart) or part.media.kind not in self.supports_media:
                continue
            url = part.media.url
            if url not in self.inline and not publicly_fetchable(url, self.private_media_hosts):
                data = await self._download(part.media)
                if data is not None:
                    self.inline[url] = base64.b64encode(data).decode("ascii")
        return prompt

    async def _download(self, media: Media) -> bytes | None:
        """The media's bytes, or None (with a note) when they cannot be had within the cap."""
        try:
            async with self.http.stream("GET", media.url) as response:
                if response.status_code >= 300:
                    self.note(f"{media.kind} {media.url} is named in the text only: fetching it "
                              f"answered HTTP {response.status_code}")
                    return None
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.inline_media_max_bytes:
                        self.note(f"{media.kind} {media.url} is named in the text only: it is over "
                                  f"{self.inline_media_max_bytes} bytes, the inline limit")
                        return None
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            self.note(f"{media.kind} {media.url} is named in the text only: fetching it failed ({type(exc).__name__})")
            return None

    def content_blocks(self, prompt: Prompt, media_block: Callable[[Media], dict[str, Any]]
                       ) -> list[dict[str, Any]]:
        """The prompt's parts as chat content blocks (OpenAI's and Anthropic's shape):
        text, `media_block(media)` for the media this provider reads (by URL, or inline
        when it was downloaded), a text mention of the rest."""
        blocks: list[dict[str, Any]] = []
        for part in prompt.parts:
            if isinstance(part, TextPart):
                blocks.append({"type": "text", "text": part.text})
            elif part.media.kind in self.supports_media and self.reachable(part.media):
                blocks.append(media_block(part.media))
            else:
                blocks.append({"type": "text", "text": f"[{part.media.kind}: {part.media.url}]\n"})
        return blocks

    # Each provider builds its request and reads its response.
    def request(self, prompt: Prompt, params: dict[str, Any], json_output: bool
                ) -> tuple[str, dict[str, str], dict[str, Any]]:
        raise NotImplementedError

    def parse(self, data: dict[str, Any]) -> LLMReply:
        raise NotImplementedError

    async def _post(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        last: LLMError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = await self.http.post(url, headers=headers, json=body)
            except httpx.TimeoutException as exc:
                outcome, last = "timeout", LLMUnavailable(f"{self.provider.value}: timed out ({type(exc).__name__})")
            except httpx.TransportError as exc:
                outcome, last = type(exc).__name__, LLMUnavailable(f"{self.provider.value}: {type(exc).__name__}: {exc}")
            else:
                outcome = str(response.status_code)
                if response.status_code < 300:
                    self.attempts.append(Attempt(attempt, outcome, None))
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise LLMError(f"{self.provider.value}: the response is not JSON",
                                       status=response.status_code, body=response.text[:500]) from exc
                message = _error_message(response)
                if response.status_code not in RETRY_STATUSES or permanent_rate_limit(response):
                    self.attempts.append(Attempt(attempt, outcome, None))
                    raise LLMRequestError(f"{self.provider.value} refused the request "
                                          f"(HTTP {response.status_code}): {message}",
                                          status=response.status_code, body=response.text[:500])
                retry_after = retry_after_seconds(response)
                last = LLMUnavailable(f"{self.provider.value}: HTTP {response.status_code}: {message}",
                                      status=response.status_code, body=response.text[:500])
            if attempt == self.retry.max_attempts:
                self.attempts.append(Attempt(attempt, outcome, None))
                break
            delay = self.retry.delay(attempt, retry_after)
            self.attempts.append(Attempt(attempt, outcome, delay))
            await self.sleep(delay)
        assert last is not None
        raise LLMUnavailable(f"{last} (gave up after {self.retry.max_attempts} attempts)",
                             status=last.status, body=last.body)


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error or data)[:300]


# ------------------------------------------------------------------------- OpenAI

class OpenAIClient(HTTPLLMClient):
    provider = LLMProvider.openai
    supports_media = frozenset({"image"})

    def _data_url(self, media: Media) -> str:
        if media.url in self.inline:
            return f"data:{media.mime_type};base64,{self.inline[media.url]}"
        return media.url

    def request(self, prompt, params, json_output):
        content = self.content_blocks(
            prompt, lambda media: {"type": "image_url", "image_url": {"url": self._data_url(media)}})
        user: str | list[dict[str, Any]] = content
        if all(c["type"] == "text" for c in content):
            user = "".join(c["text"] for c in content)
        if "max_output_tokens" in params:
            params.setdefault("max_tokens", params.pop("max_output_tokens"))
        if is_openai_reasoning(self.model) and "max_tokens" in params:
            params.setdefault("max_completion_tokens", params.pop("max_tokens"))  # reasoning models
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}],
        }
        # JSON mode needs the word "JSON" in the messages (a custom prompt may lack it).
        if json_output and "json" in (prompt.system + prompt.text).lower():
            body["response_format"] = {"type": "json_object"}
        body.update(params)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return f"{self.base_url}/v1/chat/completions", headers, body

    def parse(self, data):
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"openai: unexpected response layout: {str(data)[:300]}") from exc
        if message.get("refusal"):
            raise LLMError(f"openai refused: {message['refusal']}")
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return LLMReply(text=content, model=data.get("model", self.model), usage=data.get("usage") or {},
                        finish_reason=choice.get("finish_reason"))


# ------------------------------------------------------------------------- Gemini

def publicly_fetchable(url: str, private_hosts: frozenset[str] = frozenset()) -> bool:
    """Whether a provider's servers can fetch this URL themselves: public `https` only. A
    loopback, private or link-local address, `localhost`, a `.local`/`.internal` name
    or one of `private_hosts` (the deployment's own S3 endpoint) cannot be."""
    parsed = httpx.URL(url)
    host = (parsed.host or "").lower()
    if parsed.scheme != "https" or not host or host in private_hosts:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return address.is_global


_GEMINI_RENAMES = {"max_tokens": "maxOutputTokens", "max_output_tokens": "maxOutputTokens",
                   "top_k": "topK", "top_p": "topP", "stop": "stopSequences",
                   "stop_sequences": "stopSequences", "candidate_count": "candidateCount",
                   "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty",
                   "response_mime_type": "responseMimeType", "seed": "seed"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


class GeminiClient(HTTPLLMClient):
    provider = LLMProvider.google
    supports_media = frozenset({"image", "video", "audio"})

    def request(self, prompt, params, json_output):
        parts: list[dict[str, Any]] = []
        for part in prompt.parts:
            if isinstance(part, TextPart):
                parts.append({"text": part.text})
            elif part.media.url in self.inline:
                parts.append({"inlineData": {"mimeType": part.media.mime_type, "data": self.inline[part.media.url]}})
            elif self.reachable(part.media):
                parts.append({"fileData": {"mimeType": part.media.mime_type, "fileUri": part.media.url}})
            else:
                parts.append({"text": f"[{part.media.kind}: {part.media.url}]\n"})
        config: dict[str, Any] = {}
        if json_output:
            config["responseMimeType"] = "application/json"
        extra: dict[str, Any] = {}
        for key, value in params.items():
            if key in ("safety_settings", "safetySettings", "tools", "tool_config", "toolConfig"):
                extra[_camel(key)] = value  # request-level fields, not generation settings
            else:
                config[_GEMINI_RENAMES.get(key, _camel(key))] = value
        body: dict[str, Any] = {
            "systemInstruction": {"parts": [{"text": prompt.system}]},
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": config,
            **extra,
        }
        headers = {"x-goog-api-key": self.api_key}
        return f"{self.base_url}/v1beta/models/{self.model}:generateContent", headers, body

    def parse(self, data):
        feedback = data.get("promptFeedback") or {}
        candidates = data.get("candidates") or []
        if not candidates:
            reason = feedback.get("blockReason") or "no candidates"
            raise LLMError(f"google returned no answer ({reason})")
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))
        return LLMReply(text=text, model=data.get("modelVersion", self.model),
                        usage=data.get("usageMetadata") or {}, finish_reason=candidate.get("finishReason"))


# ---------------------------------------------------------------------- Anthropic

class AnthropicClient(HTTPLLMClient):
    provider = LLMProvider.anthropic
    supports_media = frozenset({"image"})

    def __init__(self, *, version: str = "2023-06-01", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    def _rules(self) -> dict[str, Any]:
        return {"anthropic_version": self.version}

    def _image_block(self, media: Media) -> dict[str, Any]:
        if media.url in self.inline:
            return {"type": "image", "source": {"type": "base64", "media_type": media.mime_type,
                                                "data": self.inline[media.url]}}
        return {"type": "image", "source": {"type": "url", "url": media.url}}

    def request(self, prompt, params, json_output):
        content = self.content_blocks(prompt, self._image_block)
        if "max_output_tokens" in params:
            params.setdefault("max_tokens", params.pop("max_output_tokens"))
        if "stop" in params:
            params.setdefault("stop_sequences", params.pop("stop"))
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.pop("max_tokens", self.default_max_tokens),
            "system": prompt.system,
            "messages": [{"role": "user", "content": content}],
        }
        body.update(params)
        headers = {"x-api-key": self.api_key, "anthropic-version": self.version}
        return f"{self.base_url}/v1/messages", headers, body

    def parse(self, data):
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise LLMError(f"anthropic: unexpected response layout: {str(data)[:300]}")
        text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        return LLMReply(text=text, model=data.get("model", self.model), usage=data.get("usage") or {},
                        finish_reason=data.get("stop_reason"))


CLIENTS: dict[LLMProvider, type[HTTPLLMClient]] = {
    LLMProvider.openai: OpenAIClient,
    LLMProvider.google: GeminiClient,
    LLMProvider.anthropic: AnthropicClient,
}
