"""Local stand-ins for the LLM providers: our own HTTP servers speaking each wire format.

`FakeLLM` is one ASGI app that serves the three protocols the labeler uses:
- OpenAI chat completions `POST /v1/chat/completions`,
- Google Gemini `POST /v1beta/models/{model}:generateContent`,
- Anthropic messages `POST /v1/messages`.

Each request is checked the way the provider checks it (auth header, required fields,
part and block types); a malformed one gets the provider's 4xx error body, so a test
that passes proves the request shape. Every request is recorded (`requests`).

By default it answers like a model that follows the prompt: it reads the clusters
(`### Cluster cl_N`) and their samples and returns valid JSON (labels from the most
frequent words, or an instance of the JSON schema the prompt asks for). Scripted
actions, consumed one per request (`push`), replace the default: `Reply(text)`,
`RateLimited(retry_after)` (Gemini puts the delay in the body's `RetryInfo`, the
others in `Retry-After`), `QuotaExhausted()` (a 429 that never succeeds),
`ServerError(status)`, `Slow(seconds)`, `NotJSON()`.

It is as strict as the real APIs were on 2026-12-01 (independently of the rules in
`services.labeler.models`, so that a test catches the labeler breaking them):
- retired model names answer 404 (`RETIRED`);
- Anthropic API version 2026-10-21+, and `claude-opus-4-7` on any version, refuse
  `temperature`/`top_p`/`top_k`; Claude 4.1+ refuse `temperature` with `top_p`;
- OpenAI reasoning models (o-series, gpt-5 family) refuse `temperature`, `top_p`,
  the penalties and `max_tokens`;
- media URLs the provider cannot reach (not public https) are refused with a 400,
  as the provider fails to fetch them. `GET /media/{name}` serves `media` bytes, for
  the labeler to download and send inline.

Serve it in-process with `transport()` (httpx.ASGITransport, no socket) or on a real
port with `LLMServer` (uvicorn in a thread), e.g. for timeouts.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

API_KEY = "test-key-123"

RETIRED = frozenset({"claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022", "claude-sonnet-4-5-20250929",
                     "o3-mini-2025-01-31", "gemini-3.1-flash-lite"})


def _unreachable(url: str) -> bool:
    """A URL the provider's servers could not fetch (what a real provider finds out)."""
    import ipaddress
    parsed = httpx.URL(url)
    host = parsed.host or ""
    if parsed.scheme == "data":
        return False
    if parsed.scheme != "https" or host in ("localhost", "llm.test") or host.endswith((".local", ".internal")):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def _claude_at_least(model: str, major: int, minor: int) -> bool:
    m = re.match(r"^claude-(?:opus|sonnet|haiku)-(\d+)(?:-(\d))?(?:-|$)", model)
    return bool(m) and (int(m.group(1)), int(m.group(2) or 0)) >= (major, minor)


# ------------------------------------------------------------------------- actions

@dataclass
class Reply:
    """Answer with this text as the model's output."""

    text: str


@dataclass
class RateLimited:
    retry_after: float | None = 1.0


@dataclass
class ServerError:
    status: int = 500


@dataclass
class Slow:
    """Wait, then answer normally (or with `then`)."""

    seconds: float
    then: Any = None


@dataclass
class QuotaExhausted:
    """A 429 that no retry can fix: OpenAI's insufficient_quota, Anthropic's spend limit."""


@dataclass
class NotJSON:
    text: str = "Sure! Here are some great labels for your clusters: Space, Cooking and Sports."


@dataclass
class Recorded:
    provider: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    prompt: str  # all text parts of the request, system included
    at: float = field(default_factory=time.monotonic)


# ----------------------------------------------------------------- default answers

def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in ENGLISH_STOP_WORDS and len(w) > 2]


def clusters_in_prompt(prompt: str) -> dict[str, list[str]]:
    """Cluster id -> its sample lines, as the labeler's prompt lays them out."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"### Cluster (cl_-?\d+)[^\n]*\n(.*?)(?=\n### Cluster |\Z)", prompt, re.S):
        samples = [re.sub(r"(^|\| )\w+: ", " ", line.split(". ", 1)[1]) for line in m.group(2).splitlines()
                   if re.match(r"^\d+\. ", line)]
        out[m.group(1)] = samples
    return out


def schema_in_prompt(prompt: str) -> dict[str, Any] | None:
    m = re.search(r"fields of this JSON schema:\n(.*)\n", prompt)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


def instance_of(schema: dict[str, Any], words: list[str]) -> Any:
    """A small valid instance of a (simple) JSON schema, made of `words`."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {k: instance_of(v, words) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        n = min(schema.get("maxItems", 3), 3)
        return [instance_of(schema.get("items") or {"type": "string"}, words[i:]) for i in range(n)]
    if kind == "number":
        low, high = schema.get("minimum", 0.0), schema.get("maximum", 1.0)
        return (low + high) / 2
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return " ".join(w.title() for w in words[:2]) or "Topic"


def default_answer(prompt: str) -> str:
    """What an obliging model replies: every cluster, labelled by its frequent words."""
    schema = schema_in_prompt(prompt) or {"type": "object", "properties": {
        "label": {"type": "string"}, "summary": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}}}}
    entries = []
    for cid, samples in clusters_in_prompt(prompt).items():
        top = [w for w, _ in Counter(_words(" ".join(samples))).most_common(6)] or ["misc"]
        item = instance_of(schema, top)
        if "label" in item:
            item["label"] = " ".join(w.title() for w in top[:2])
        if "summary" in item:
            item["summary"] = f"Documents about {', '.join(top[:3])}."
        if "keywords" in item and isinstance(item["keywords"], list):
            item["keywords"] = top[:5]
        entries.append({"cluster_id": cid, **item})
    return json.dumps({"clusters": entries})


# ------------------------------------------------------------------------ the app

class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeLLM:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.actions: deque[Any] = deque()
        self.answer: Callable[[str], str] = default_answer
        self.media: dict[str, bytes] = {}  # what GET /media/{name} serves
        self.downloads: list[str] = []
        self.app = self._build()

    def push(self, *actions: Any) -> None:
        self.actions.extend(actions)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def calls(self, provider: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if provider is None or r.provider == provider]

    # --------------------------------------------------------------- protocol bits

    @staticmethod
    def _error(provider: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        if provider == "openai":
            kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "invalid_request_error"
                                                                            if status < 500 else "server_error")
            body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        elif provider == "google":
            kind = {429: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED", 400: "INVALID_ARGUMENT"}.get(
                status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
            body = {"error": {"code": status, "message": message, "status": kind}}
        else:
            kind = {429: "rate_limit_error", 401: "authentication_error", 529: "overloaded_error"}.get(
                status, "api_error" if status >= 500 else "invalid_request_error")
            body = {"type": "error", "error": {"type": kind, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers)

    @staticmethod
    def _quota_exhausted(provider: str) -> JSONResponse:
        if provider == "openai":
            return JSONResponse({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}, status_code=429)
        if provider == "anthropic":
            return JSONResponse({"type": "error", "error": {
                "type": "rate_limit_error",
                "message": "This request would exceed your organization's monthly spend limit."}}, status_code=429)
        return FakeLLM._error(provider, 429, "Resource has been exhausted (e.g. check quota).")

    @staticmethod
    def _ok(provider: str, model: str, text: str) -> JSONResponse:
        if provider == "openai":
            return JSONResponse({
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
            })
        if provider == "google":
            return JSONResponse({
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                                "index": 0}],
                "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 50, "totalTokenCount": 150},
                "modelVersion": model,
            })
        return JSONResponse({
            "id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 50},
        })

    def _check_openai(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[str, str]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            raise BadRequest(401, "Incorrect API key provided.")
        if not isinstance(body.get("model"), str):
            raise BadRequest(400, "you must provide a model parameter")
        model = body["model"]
        if model in RETIRED:
            raise BadRequest(404, f"The model `{model}` does not exist or you do not have access to it.")
        if re.match(r"^(o\d|gpt-5)", model):
            for param in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "max_tokens"):
                if param in body:
                    raise BadRequest(400, f"Unsupported parameter: '{param}' is not supported with this model.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(400, "'messages' must be a non-empty array")
        texts = []
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant", "developer"):
                raise BadRequest(400, f"invalid role {m.get('role')!r}")
            content = m.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            if not isinstance(content, list):
                raise BadRequest(400, "content must be a string or an array of parts")
            for part in content:
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif part.get("type") == "image_url" and isinstance((part.get("image_url") or {}).get("url"), str):
                    if m.get("role") != "user":
                        raise BadRequest(400, "image_url parts are only allowed in user messages")
                    if _unreachable(part["image_url"]["url"]):
                        raise BadRequest(400, "Error while downloading " + part["image_url"]["url"])
                else:
                    raise BadRequest(400, f"invalid content part {part!r}")
        fmt = body.get("response_format")
        prompt = "\n".join(texts)
        if fmt is not None:
            if fmt.get("type") not in ("json_object", "json_schema", "text"):
                raise BadRequest(400, f"invalid response_format {fmt!r}")
            if fmt["type"] == "json_object" and "json" not in prompt.lower():
                raise BadRequest(400, "'messages' must contain the word 'json' in some form, to use "
                                      "'response_format' of type 'json_object'.")
        return body["model"], prompt

    _GEMINI_CONFIG = {"temperature", "topK", "topP", "maxOutputTokens", "candidateCount", "stopSequences",
                      "responseMimeType", "responseSchema", "presencePenalty", "frequencyPenalty", "seed",
                      "responseJsonSchema", "thinkingConfig"}

    def _check_google(self, headers: dict[str, str], query: dict[str, str], body: dict[str, Any],
                      model: str | None) -> str:
        key = headers.get("x-goog-api-key") or query.get("key")
        if key != self.api_key:
            raise BadRequest(403, "Method doesn't allow unregistered callers (callers without established "
                                  "identity). Please use API Key or other form of API consumer identity.")
        if model in RETIRED:
            raise BadRequest(404, f"models/{model} is not found for API version v1beta, or is not supported "
                                  "for generateContent.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest(400, "* GenerateContentRequest.contents: contents is not specified")
        texts = [p.get("text", "") for p in ((body.get("systemInstruction") or {}).get("parts") or [])]
        for content in contents:
            if content.get("role") not in (None, "user", "model"):
                raise BadRequest(400, f"Please use a valid role: user, model. Got {content.get('role')!r}")
            for part in content.get("parts") or []:
                kinds = {"text", "fileData", "inlineData"} & part.keys()
                if len(kinds) != 1 or len(part) != 1:
                    raise BadRequest(400, f"Invalid part {part!r}: exactly one of text, fileData, inlineData")
                if "fileData" in part and not {"mimeType", "fileUri"} <= part["fileData"].keys():
                    raise BadRequest(400, "fileData needs mimeType and fileUri")
                if "fileData" in part and _unreachable(part["fileData"]["fileUri"]):
                    raise BadRequest(400, "Cannot fetch content from the provided URL.")
                if "inlineData" in part and not {"mimeType", "data"} <= part["inlineData"].keys():
                    raise BadRequest(400, "inlineData needs mimeType and data")
                if "text" in part:
                    texts.append(part["text"])
        config = body.get("generationConfig") or {}
        unknown = set(config) - self._GEMINI_CONFIG
        if unknown:
            raise BadRequest(400, f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r} at "
                                  "'generation_config': Cannot find field.")
        return "\n".join(texts)

    def _check_anthropic(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[str, str]:
        if headers.get("x-api-key") != self.api_key:
            raise BadRequest(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            raise BadRequest(400, "anthropic-version: header is required")
        if not isinstance(body.get("model"), str):
            raise BadRequest(400, "model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            raise BadRequest(400, "max_tokens: Field required")
        model = body["model"]
        if model in RETIRED:
            raise BadRequest(404, f"model: {model}")
        sampling = [p for p in ("temperature", "top_p", "top_k") if p in body]
        if sampling and (headers["anthropic-version"] >= "2026-10-21" or model.startswith("claude-opus-4-7")):
            raise BadRequest(400, f"`{sampling[0]}` is not supported for this model.")
        if "temperature" in body and "top_p" in body and _claude_at_least(model, 4, 1):
            raise BadRequest(400, "`temperature` and `top_p` cannot both be specified for this model. "
                                  "Please use only one.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
            raise BadRequest(400, "messages: the first message must use the 'user' role")
        texts = [body["system"]] if isinstance(body.get("system"), str) else []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            for block in content or []:
                if block.get("type") == "text" and isinstance(block.get("text"), str):
                    texts.append(block["text"])
                elif block.get("type") == "image" and (block.get("source") or {}).get("type") == "base64":
                    if not {"media_type", "data"} <= block["source"].keys():
                        raise BadRequest(400, "messages: a base64 image needs media_type and data")
                elif block.get("type") == "image" and (block.get("source") or {}).get("type") == "url":
                    if _unreachable(block["source"].get("url", "")):
                        raise BadRequest(400, "Unable to download the file. Please verify the URL and try again.")
                else:
                    raise BadRequest(400, f"messages: invalid content block {block!r}")
        return body["model"], "\n".join(texts)

    # ---------------------------------------------------------------------- serve

    async def _serve(self, provider: str, request: Request, model: str | None = None) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query_params)
        try:
            body = await request.json()
        except ValueError:
            return self._error(provider, 400, "the body is not JSON")
        try:
            if provider == "openai":
                model, prompt = self._check_openai(headers, body)
            elif provider == "google":
                prompt = self._check_google(headers, query, body, model)
            else:
                model, prompt = self._check_anthropic(headers, body)
        except BadRequest as exc:
            self.requests.append(Recorded(provider, request.url.path, headers, query, body, ""))
            return self._error(provider, exc.status, exc.message)
        self.requests.append(Recorded(provider, request.url.path, headers, query, body, prompt))

        action = self.actions.popleft() if self.actions else None
        while isinstance(action, Slow):
            await asyncio.sleep(action.seconds)
            action = action.then
        if isinstance(action, RateLimited):
            if provider == "google":  # Gemini says when in the body, never in a header
                response = self._error(provider, 429, "Resource has been exhausted (e.g. check quota).")
                if action.retry_after is not None:
                    data = json.loads(response.body)
                    data["error"]["details"] = [
                        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{action.retry_after:g}s"},
                    ]
                    response = JSONResponse(data, status_code=429)
                return response
            extra = {} if action.retry_after is None else {"retry-after": f"{action.retry_after:g}"}
            return self._error(provider, 429, "Rate limit reached; please retry later.", extra)
        if isinstance(action, QuotaExhausted):
            return self._quota_exhausted(provider)
        if isinstance(action, ServerError):
            return self._error(provider, action.status, "The server had an error while processing your request.")
        if isinstance(action, NotJSON):
            return self._ok(provider, model or "", action.text)
        if isinstance(action, Reply):
            return self._ok(provider, model or "", action.text)
        return self._ok(provider, model or "", self.answer(prompt))

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def openai(request: Request) -> JSONResponse:
            return await self._serve("openai", request)

        @app.post("/v1beta/models/{target}")
        async def gemini(target: str, request: Request) -> JSONResponse:
            model, _, method = target.partition(":")
            if method != "generateContent":
                return self._error("google", 404, f"method {method!r} not found")
            return await self._serve("google", request, model)

        @app.post("/v1/messages")
        async def anthropic(request: Request) -> JSONResponse:
            return await self._serve("anthropic", request)

        @app.get("/media/{name}")
        async def media(name: str) -> Response:
            if name not in self.media:
                return Response(status_code=404)
            self.downloads.append(name)
            return Response(self.media[name], media_type="application/octet-stream")

        return app


class LLMServer:
    """`FakeLLM` on a real port (uvicorn in a daemon thread). Use as a context manager."""

    def __init__(self, fake: FakeLLM | None = None) -> None:
        self.fake = fake or FakeLLM()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.fake.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> LLMServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake LLM server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
