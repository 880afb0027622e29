"""The three providers over their HTTP protocols (served in-process by our FakeLLM),
retries with observable attempts and delays, and provider inference."""
from __future__ import annotations

import json

import pytest

from contracts.api import LLMLabeling, LLMProvider, provider_for_model
from services.labeler.app import LLMClients
from services.labeler.handler import choose_model
from services.labeler.prompts import MediaPart, Prompt, TextPart
from services.labeler.providers import (
    AnthropicClient,
    GeminiClient,
    LLMRequestError,
    LLMUnavailable,
    OpenAIClient,
    RetryPolicy,
)
from services.labeler.settings import LabelerSettings
from services.labeler.texts import Media
from tests.support.llm_servers import API_KEY, FakeLLM, NotJSON, RateLimited, Reply, ServerError

PROMPT = Prompt(system="Answer with JSON only.", parts=[
    TextPart("Label these clusters as JSON.\n### Cluster cl_0 (3 documents)\n1. rocket launch orbit\n"),
    MediaPart(Media("image", "https://img.example.com/a.png")),
    MediaPart(Media("video", "https://vid.example.com/b.mp4")),
])


def _client(kind, fake: FakeLLM, sleeps: list[float] | None = None, **retry):
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    common = dict(api_key=API_KEY, base_url="http://llm.test", transport=fake.transport(), sleep=sleep,
                  retry=RetryPolicy(**({"max_attempts": 4, "backoff_s": 1.0, "backoff_max_s": 30.0} | retry)))
    if kind == "openai":
        return OpenAIClient(model="gpt-4o-mini-2024-07-18", **common)
    if kind == "google":
        return GeminiClient(model="gemini-3.1-flash-lite", **common)
    return AnthropicClient(model="claude-haiku-4-5-20251001", **common)


async def test_openai_chat_completions_request_and_reply():
    fake = FakeLLM()
    fake.push(Reply('{"clusters": []}'))
    client = _client("openai", fake)
    reply = await client.complete(PROMPT, {"temperature": 0.2, "max_output_tokens": 300, "top_p": 0.9})
    await client.aclose()
    assert reply.text == '{"clusters": []}' and reply.finish_reason == "stop"
    req = fake.requests[0]
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == f"Bearer {API_KEY}"
    body = req.body
    assert body["model"] == "gpt-4o-mini-2024-07-18"
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0.2 and body["max_tokens"] == 300 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "Answer with JSON only."}
    parts = body["messages"][1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://img.example.com/a.png"}}
    assert parts[2] == {"type": "text", "text": "[video: https://vid.example.com/b.mp4]\n"}  # no video on OpenAI


async def test_gemini_generate_content_request_and_reply_with_the_model_alias_resolved():
    fake = FakeLLM()
    fake.push(Reply('{"label": "x"}'))
    client = _client("google", fake)
    reply = await client.complete(PROMPT, {"temperature": 0.1, "top_k": 20, "max_tokens": 256})
    await client.aclose()
    assert reply.text == '{"label": "x"}' and reply.finish_reason == "STOP"
    req = fake.requests[0]
    assert req.path == "/v1beta/models/gemini-2.5-flash-lite:generateContent"  # 3.1 alias -> 2.5
    assert req.headers["x-goog-api-key"] == API_KEY and "key" not in req.query
    body = req.body
    assert body["generationConfig"] == {"responseMimeType": "application/json", "temperature": 0.1, "topK": 20,
                                        "maxOutputTokens": 256}
    assert body["systemInstruction"] == {"parts": [{"text": "Answer with JSON only."}]}
    parts = body["contents"][0]["parts"]
    assert parts[1] == {"fileData": {"mimeType": "image/png", "fileUri": "https://img.example.com/a.png"}}
    assert parts[2] == {"fileData": {"mimeType": "video/mp4", "fileUri": "https://vid.example.com/b.mp4"}}


async def test_anthropic_messages_request_and_reply():
    fake = FakeLLM()
    fake.push(Reply('{"label": "y"}'))
    client = _client("anthropic", fake)
    reply = await client.complete(PROMPT, {"temperature": 0.3})
    await client.aclose()
    assert reply.text == '{"label": "y"}' and reply.finish_reason == "end_turn"
    req = fake.requests[0]
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == API_KEY and req.headers["anthropic-version"] == "2023-06-01"
    body = req.body
    assert body["model"] == "claude-haiku-4-5-20251001" and body["max_tokens"] == 4096
    assert body["temperature"] == 0.3 and body["system"] == "Answer with JSON only."
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "url", "url": "https://img.example.com/a.png"}}
    assert blocks[2]["type"] == "text" and "vid.example.com" in blocks[2]["text"]


async def test_json_output_false_turns_the_json_mode_off():
    fake = FakeLLM()
    fake.push(Reply("{}"), Reply("{}"))
    openai, google = _client("openai", fake), _client("google", fake)
    await openai.complete(PROMPT, {"json_output": False})
    await google.complete(PROMPT, {"json_output": False})
    assert "response_format" not in fake.requests[0].body and "json_output" not in fake.requests[0].body
    assert "responseMimeType" not in fake.requests[1].body["generationConfig"]


async def test_openai_json_mode_is_not_requested_when_the_prompt_never_says_json():
    fake = FakeLLM()
    fake.push(Reply("{}"))
    client = _client("openai", fake)
    await client.complete(Prompt(system="Name things.", parts=[TextPart("emoji labels please")]))
    assert "response_format" not in fake.requests[0].body  # OpenAI would answer 400 otherwise


@pytest.mark.parametrize("kind", ["openai", "google", "anthropic"])
async def test_429_retry_after_is_honoured_and_5xx_backs_off_exponentially(kind):
    fake = FakeLLM()
    fake.push(RateLimited(retry_after=7), ServerError(503), ServerError(500), Reply('{"ok": true}'))
    sleeps: list[float] = []
    client = _client(kind, fake, sleeps)
    reply = await client.complete(PROMPT)
    assert json.loads(reply.text) == {"ok": True}
    assert [(a.outcome, a.delay) for a in client.attempts] == [("429", 7.0), ("503", 2.0), ("500", 4.0),
                                                                ("200", None)]
    assert sleeps == [7.0, 2.0, 4.0]
    assert len(fake.requests) == 4


async def test_retries_are_bounded_and_a_long_retry_after_is_capped():
    fake = FakeLLM()
    fake.push(RateLimited(retry_after=3600), ServerError(502), ServerError(502), ServerError(502))
    sleeps: list[float] = []
    client = _client("openai", fake, sleeps, retry_after_max_s=60.0)
    with pytest.raises(LLMUnavailable) as info:
        await client.complete(PROMPT)
    assert "gave up after 4 attempts" in str(info.value) and info.value.status == 502
    assert sleeps == [60.0, 2.0, 4.0]
    assert [a.delay for a in client.attempts][-1] is None and len(client.attempts) == 4


async def test_backoff_without_retry_after_and_the_cap():
    fake = FakeLLM()
    fake.push(RateLimited(retry_after=None), ServerError(500), ServerError(500), Reply("{}"))
    sleeps: list[float] = []
    client = _client("google", fake, sleeps, backoff_s=1.5, backoff_max_s=4.0)
    await client.complete(PROMPT)
    assert sleeps == [1.5, 3.0, 4.0]


async def test_a_refused_request_is_not_retried():
    fake = FakeLLM(api_key="another-key")  # our key is wrong for this server
    sleeps: list[float] = []
    client = _client("anthropic", fake, sleeps)
    with pytest.raises(LLMRequestError) as info:
        await client.complete(PROMPT)
    assert info.value.status == 401 and "invalid x-api-key" in str(info.value)
    assert sleeps == [] and len(client.attempts) == 1


async def test_the_fake_server_rejects_malformed_requests_like_the_provider():
    # If our request shape were wrong, the fake would answer 400 and the client raise.
    fake = FakeLLM()
    client = _client("google", fake)
    _, headers, body = client.request(PROMPT, {"not_a_field": 1}, True)
    assert body["generationConfig"]["notAField"] == 1
    with pytest.raises(LLMRequestError) as info:
        await client.complete(PROMPT, {"not_a_field": 1})
    assert info.value.status == 400 and "notAField" in str(info.value)


async def test_not_json_reply_is_returned_as_text_for_the_caller_to_judge():
    fake = FakeLLM()
    fake.push(NotJSON())
    client = _client("openai", fake)
    reply = await client.complete(PROMPT)
    assert reply.text.startswith("Sure!")


def test_provider_inferred_from_the_model_and_defaults():
    assert provider_for_model("gpt-4.1-2025-04-14") is LLMProvider.openai
    assert provider_for_model("gemini-3.1-flash-lite") is LLMProvider.google
    assert provider_for_model("claude-3-5-haiku-20241022") is LLMProvider.anthropic
    assert LLMLabeling(enabled=True, model_name="claude-3-5-haiku-20241022").provider is LLMProvider.anthropic

    keyless = LabelerSettings(openai_api_key=None, google_api_key=None, anthropic_api_key=None)
    assert choose_model(LLMLabeling(enabled=True), keyless) == (LLMProvider.google, "gemini-2.5-flash-lite")
    only_anthropic = LabelerSettings(google_api_key=None, openai_api_key=None, anthropic_api_key="k")
    assert choose_model(LLMLabeling(enabled=True), only_anthropic)[0] is LLMProvider.anthropic
    assert choose_model(LLMLabeling(enabled=True, provider="openai"), keyless) == (
        LLMProvider.openai, "gpt-4o-mini-2024-07-18")
    assert choose_model(LLMLabeling(enabled=True, model_name="o3-mini-2025-01-31"), keyless) == (
        LLMProvider.openai, "o3-mini-2025-01-31")


def test_no_client_without_an_api_key():
    clients = LLMClients(LabelerSettings(openai_api_key=None, google_api_key="g", anthropic_api_key=None))
    assert clients(LLMProvider.openai, "gpt-4o-mini-2024-07-18") is None
    google = clients(LLMProvider.google, "gemini-2.5-pro")
    assert isinstance(google, GeminiClient) and google.model == "gemini-2.5-pro"
