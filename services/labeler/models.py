"""What each provider's models accept today: the model actually called for a name,
and the run parameters that model takes.

Both are data, written once here, because providers change them on their own
schedule and the labeler must keep working for runs configured long ago:

- **Retired names.** The reference's enums still name models that their providers
  have retired or that are past their announced end of life. clusterflow keeps
  accepting the names (as the reference does for `gemini-3.1-flash-lite`) and calls
  the successor instead; the run says so in `llm_labeling_warnings`. Operators can
  add or correct entries without a release: `CLUSTERFLOW_LLM_MODEL_SUCCESSORS`
  (a JSON object, name -> successor).
- **Refused parameters.** A parameter the model refuses would turn every call into a
  400, and the run would fall back to text labels. Such a parameter is not sent, and
  the run says which one and why:
  - OpenAI reasoning models (o1, o3, o4 and the gpt-5 family) refuse `temperature`,
    `top_p` and the penalty parameters;
  - Anthropic API version 2026-10-21 and later refuses `temperature`, `top_p` and
    `top_k`, and so do the models in `ANTHROPIC_NO_SAMPLING` on any version;
  - Anthropic models from Claude 4.1 on refuse `temperature` together with `top_p`:
    `temperature` is kept.

Sources, read on 2026-12-01: the providers' deprecation pages
(platform.claude.com/docs/en/about-claude/model-deprecations,
developers.openai.com/api/docs/deprecations) and API references. Update the tables
here when they change; `tests/support/llm_servers.py` enforces the same rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from contracts.api import LLMProvider


@dataclass(frozen=True)
class Successor:
    model: str
    why: str


# Names the reference accepts whose model can no longer be called.
SUCCESSORS: dict[str, Successor] = {
    "gemini-3.1-flash-lite": Successor(
        "gemini-2.5-flash-lite", "gemini-3.1-flash-lite does not exist in Google's API (the reference's alias)"),
    "claude-3-5-sonnet-20241022": Successor(
        "claude-sonnet-4-6", "claude-3-5-sonnet-20241022 was retired by Anthropic on 2025-10-28"),
    "claude-3-5-haiku-20241022": Successor(
        "claude-haiku-4-5-20251001", "claude-3-5-haiku-20241022 was retired by Anthropic"),
    "claude-sonnet-4-5-20250929": Successor(
        "claude-sonnet-4-6", "claude-sonnet-4-5-20250929 is past its announced end of life"),
    "o3-mini-2025-01-31": Successor(
        "gpt-5.5", "o3-mini-2025-01-31 was shut down by OpenAI on 2026-10-23"),
}

SAMPLING = ("temperature", "top_p", "top_k")
OPENAI_REASONING_REFUSED = ("temperature", "top_p", "presence_penalty", "frequency_penalty",
                            "logprobs", "top_logprobs", "logit_bias")
# The first Anthropic API version that refuses the sampling parameters.
ANTHROPIC_NO_SAMPLING_VERSION = "2026-10-21"
# Anthropic models that refuse the sampling parameters on every API version.
ANTHROPIC_NO_SAMPLING: tuple[str, ...] = ("claude-opus-4-7",)

_CLAUDE = re.compile(r"^claude-(?:opus|sonnet|haiku)-(\d+)(?:-(\d))?(?:-|$)")
_OPENAI_REASONING = re.compile(r"^(o\d|gpt-5)")


def resolve_model(model: str, extra: dict[str, str] | None = None) -> tuple[str, str | None]:
    """The model to call for a name, and why it differs (None when it does not).
    `extra` (the operator's setting) wins over the built-in table."""
    if extra and model in extra and extra[model] != model:
        return extra[model], f"{model} is mapped to {extra[model]} by CLUSTERFLOW_LLM_MODEL_SUCCESSORS"
    successor = SUCCESSORS.get(model)
    if successor is None:
        return model, None
    return successor.model, f"{successor.why}; {successor.model} was called instead"


def is_openai_reasoning(model: str) -> bool:
    return bool(_OPENAI_REASONING.match(model))


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude 4+ style id (`claude-sonnet-4-6`, `claude-haiku-4-5-20251001`)."""
    m = _CLAUDE.match(model)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def anthropic_refuses_sampling(model: str, api_version: str) -> bool:
    return api_version >= ANTHROPIC_NO_SAMPLING_VERSION or model.startswith(ANTHROPIC_NO_SAMPLING)


def accepted_parameters(provider: LLMProvider, model: str, params: dict[str, Any], *,
                        anthropic_version: str = "2023-06-01") -> tuple[dict[str, Any], list[str]]:
    """The run's parameters this model accepts, and one note per parameter left out."""
    refused: dict[str, str] = {}
    if provider is LLMProvider.openai and is_openai_reasoning(model):
        refused = {p: f"OpenAI reasoning model {model} refuses it" for p in OPENAI_REASONING_REFUSED}
    elif provider is LLMProvider.anthropic:
        if anthropic_refuses_sampling(model, anthropic_version):
            why = (f"Anthropic API version {anthropic_version} refuses it"
                   if anthropic_version >= ANTHROPIC_NO_SAMPLING_VERSION else f"Anthropic model {model} refuses it")
            refused = dict.fromkeys(SAMPLING, why)
        elif "temperature" in params and "top_p" in params and (claude_version(model) or (0, 0)) >= (4, 1):
            refused = {"top_p": f"Anthropic model {model} refuses temperature together with top_p; "
                                "temperature was kept"}
    kept = {k: v for k, v in params.items() if k not in refused}
    notes = [f"parameter {k!r} was not sent: {refused[k]}" for k in params if k in refused]
    return kept, notes
