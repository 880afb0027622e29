"""The three providers over their HTTP protocols (served in-process by our FakeLLM),
retries with observable attempts and delays, and provider inference."""
from __future__ import annotations

import base64
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
    publicly_fetchable,
)
from services.labeler.settings import LabelerSettings
from services.labeler.texts import Media
from tests.support.llm_servers import (
    API_KEY,
    FakeLLM,
    NotJSON,
    QuotaExhausted,
    RateLimited,
    Reply,
    ServerError,
)

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


# ------------------------------------------- the providers as they behave today

def _raw(kind, fake: FakeLLM, model: str, sleeps: list[float] | None = None, **extra):
    """A client for `model` straight from its class (no successor table applied by the test)."""
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    cls = {"openai": OpenAIClient, "google": GeminiClient, "anthropic": AnthropicClient}[kind]
    return cls(model=model, api_key=API_KEY, base_url="http://llm.test", transport=fake.transport(),
               sleep=sleep, **extra)


@pytest.mark.parametrize("kind, name, called", [
    ("anthropic", "claude-3-5-sonnet-20241022", "claude-sonnet-4-6"),
    ("anthropic", "claude-3-5-haiku-20241022", "claude-haiku-4-5-20251001"),
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-6"),
    ("openai", "o3-mini-2025-01-31", "gpt-5.5"),
    ("google", "gemini-3.1-flash-lite", "gemini-2.5-flash-lite"),
])
async def test_a_retired_model_name_calls_its_successor_and_says_so(kind, name, called):
    fake = FakeLLM()
    client = _raw(kind, fake, name)
    await client.complete(PROMPT, {"temperature": 0.2})  # the fake answers 404 to the retired name
    await client.aclose()
    assert client.requested_model == name and client.model == called
    sent = fake.requests[0]
    assert (sent.body.get("model") or sent.path.split("/")[-1].split(":")[0]) == called
    assert any(name in n and called in n for n in client.notes)


async def test_an_operator_successor_wins_over_the_table():
    fake = FakeLLM()
    client = _raw("anthropic", fake, "claude-3-5-haiku-20241022",
                  successors={"claude-3-5-haiku-20241022": "claude-opus-4-7"})
    await client.complete(PROMPT)
    assert fake.requests[0].body["model"] == "claude-opus-4-7"
    assert "CLUSTERFLOW_LLM_MODEL_SUCCESSORS" in client.notes[0]


async def test_anthropic_version_2026_10_21_gets_no_sampling_parameters():
    fake = FakeLLM()
    client = _raw("anthropic", fake, "claude-haiku-4-5-20251001", version="2026-10-21")
    await client.complete(PROMPT, {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "max_tokens": 300})
    body = fake.requests[0].body
    assert not {"temperature", "top_p", "top_k"} & body.keys() and body["max_tokens"] == 300
    assert fake.requests[0].headers["anthropic-version"] == "2026-10-21"
    assert len(client.notes) == 3 and all("2026-10-21" in n for n in client.notes)


async def test_anthropic_models_that_refuse_sampling_on_any_version():
    fake = FakeLLM()
    opus = _raw("anthropic", fake, "claude-opus-4-7")
    await opus.complete(PROMPT, {"temperature": 0.2})
    assert "temperature" not in fake.requests[0].body and "claude-opus-4-7 refuses" in opus.notes[0]
    # Claude 4.1+ take temperature, but not together with top_p: temperature is kept.
    sonnet = _raw("anthropic", fake, "claude-sonnet-4-6")
    await sonnet.complete(PROMPT, {"temperature": 0.2, "top_p": 0.9})
    assert fake.requests[1].body["temperature"] == 0.2 and "top_p" not in fake.requests[1].body
    # The version the labeler defaults to, on a model that takes both alone: sent as is.
    haiku = _raw("anthropic", fake, "claude-haiku-4-5-20251001")
    await haiku.complete(PROMPT, {"top_p": 0.9})
    assert fake.requests[2].body["top_p"] == 0.9 and haiku.notes == []


@pytest.mark.parametrize("model", ["o3-mini-2025-01-31", "gpt-5.5"])
async def test_openai_reasoning_models_get_no_temperature_or_penalties(model):
    fake = FakeLLM()
    client = _raw("openai", fake, model)
    await client.complete(PROMPT, {"temperature": 0.2, "presence_penalty": 0.5, "frequency_penalty": 0.1,
                                   "max_tokens": 500, "seed": 3})
    body = fake.requests[0].body
    assert not {"temperature", "presence_penalty", "frequency_penalty", "max_tokens"} & body.keys()
    assert body["max_completion_tokens"] == 500 and body["seed"] == 3
    assert sum("refuses it" in n for n in client.notes) == 3


async def test_the_fake_refuses_what_the_real_apis_refuse():
    """Without the rules above, each of these calls fails: the fake is as strict as the API."""
    fake = FakeLLM()
    for kind, model, params in [("anthropic", "claude-sonnet-4-6", {"temperature": 0.1, "top_p": 0.5}),
                                ("anthropic", "claude-opus-4-7", {"temperature": 0.1}),
                                ("openai", "gpt-5.5", {"temperature": 0.1})]:
        client = _raw(kind, fake, model)
        _, headers, body = client.request(PROMPT, dict(params), True)
        path = "/v1/messages" if kind == "anthropic" else "/v1/chat/completions"
        response = await client.http.post(f"http://llm.test{path}", headers=headers, json=body)
        assert response.status_code == 400, (model, params)
    client = _raw("anthropic", fake, "claude-3-5-haiku-20241022")
    _, headers, body = client.request(PROMPT, {}, True)
    body["model"] = "claude-3-5-haiku-20241022"
    assert (await client.http.post("http://llm.test/v1/messages", headers=headers, json=body)).status_code == 404


async def test_gemini_retry_delay_in_the_body_is_honoured():
    fake = FakeLLM()
    fake.push(RateLimited(retry_after=37), Reply("{}"))
    sleeps: list[float] = []
    client = _raw("google", fake, "gemini-2.5-flash", sleeps)
    await client.complete(PROMPT)
    assert sleeps == [37.0]  # not the 1 s backoff: Gemini asked for 37 s in RetryInfo


@pytest.mark.parametrize("kind, model", [("openai", "gpt-4o-mini-2024-07-18"),
                                         ("anthropic", "claude-haiku-4-5-20251001")])
async def test_a_429_that_can_never_succeed_is_not_retried(kind, model):
    fake = FakeLLM()
    fake.push(QuotaExhausted(), Reply("{}"))
    sleeps: list[float] = []
    client = _raw(kind, fake, model, sleeps)
    with pytest.raises(LLMRequestError) as info:
        await client.complete(PROMPT)
    assert info.value.status == 429 and sleeps == [] and len(fake.requests) == 1


@pytest.mark.parametrize("kind", ["google", "openai", "anthropic"])
async def test_media_the_provider_cannot_fetch_is_downloaded_and_sent_inline(kind):
    fake = FakeLLM()
    fake.media["private.png"] = b"\x89PNG fake bytes"
    prompt = Prompt(system="Answer with JSON only.", parts=[
        TextPart("Label these clusters as JSON.\n"),
        MediaPart(Media("image", "http://llm.test/media/private.png")),  # e.g. a self-hosted S3 URL
        MediaPart(Media("image", "https://img.example.com/public.png")),
    ])
    client = _raw(kind, fake, {"google": "gemini-2.5-flash", "openai": "gpt-4o-mini-2024-07-18",
                               "anthropic": "claude-haiku-4-5-20251001"}[kind])
    await client.complete(prompt)  # the fake answers 400 to a URL it could not fetch
    assert fake.downloads == ["private.png"]
    encoded = base64.b64encode(b"\x89PNG fake bytes").decode()
    body = json.dumps(fake.requests[-1].body)
    assert encoded in body and "https://img.example.com/public.png" in body
    assert "http://llm.test/media/private.png" not in body


async def test_media_over_the_inline_cap_is_named_in_the_text_only():
    fake = FakeLLM()
    fake.media["big.png"] = b"x" * 2000
    prompt = Prompt(system="JSON", parts=[TextPart("Label as JSON.\n"),
                                          MediaPart(Media("image", "http://llm.test/media/big.png"))])
    client = _raw("google", fake, "gemini-2.5-flash", inline_media_max_bytes=1000)
    await client.complete(prompt)
    parts = fake.requests[-1].body["contents"][0]["parts"]
    assert all("fileData" not in p and "inlineData" not in p for p in parts)
    assert any("http://llm.test/media/big.png" in p.get("text", "") for p in parts)
    assert "over 1000 bytes" in client.notes[0]


def test_publicly_fetchable():
    assert publicly_fetchable("https://cdn.example.com/a.png")
    for url in ("http://cdn.example.com/a.png", "https://127.0.0.1/a.png", "https://10.1.2.3/a.png",
                "https://localhost/a.png", "https://s3.internal/a.png", "https://minio:9000/a"):
        assert not publicly_fetchable(url, frozenset({"minio"})), url


def test_labeler_settings_make_clients_with_the_rules():
    settings = LabelerSettings(anthropic_api_key="k", s3_endpoint="seaweed.example:8333",
                               llm_model_successors={"claude-3-5-haiku-20241022": "claude-sonnet-4-6"})
    client = LLMClients(settings)(LLMProvider.anthropic, "claude-3-5-haiku-20241022")
    assert client.model == "claude-sonnet-4-6" and "seaweed.example" in client.private_media_hosts
