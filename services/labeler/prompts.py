"""The labeling prompt, and reading the reply back.

The default prompt asks for *discriminative* labels for a batch of clusters: each
cluster shows its representative samples (text cut at `sample_text_max_length`, media
as the provider's multimodal parts) and the terms that set it apart (c-TF-IDF); the
labels already taken by other clusters are listed as forbidden. It asks for one JSON
object `{"clusters": [{"cluster_id": ..., <item>}]}`, where the item is the default
label/summary/keywords or the run's `response_shape`.

A `custom_prompt` replaces the instructions entirely; the clusters' samples are still
appended after it (the reference: "your custom prompt receives cluster information").

Replies are read leniently: code fences, prose around the JSON, a bare array of items,
an object keyed by cluster id, or a single item when one cluster was asked for.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.labeler.texts import Media, MemberContent

SYSTEM = ("You are an expert analyst who names clusters of documents. You answer with JSON only, "
          "no prose and no markdown.")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class MediaPart:
    media: Media


Part = TextPart | MediaPart


@dataclass
class Prompt:
    system: str
    parts: list[Part]

    @property
    def text(self) -> str:
        """All the text parts joined (what a text-only reader sees, media as URLs)."""
        return "".join(p.text if isinstance(p, TextPart) else f"[{p.media.kind}: {p.media.url}]\n"
                       for p in self.parts)


@dataclass
class GroupBrief:
    """What the prompt shows of one group (the prompt calls it a cluster)."""

    group_id: str
    size: int
    samples: list[MemberContent]
    keywords: list[str] = field(default_factory=list)
    subtopics: list[str] = field(default_factory=list)  # a topic of the hierarchy: its children's labels


def build_prompt(
    clusters: Sequence[GroupBrief],
    *,
    item_schema: dict[str, Any],
    sample_max_length: int,
    taken_labels: Sequence[str] = (),
    custom_prompt: str | None = None,
    context: Sequence[tuple[str, str]] = (),
    correction: str | None = None,
    with_media: bool = True,
) -> Prompt:
    parts: list[Part] = []
    ids = [c.group_id for c in clusters]
    if custom_prompt:
        parts.append(TextPart(custom_prompt.strip() + "\n\n"))
    else:
        parts.append(TextPart(_instructions(len(clusters), item_schema, taken_labels)))
    if context:
        parts.append(TextPart("Context: " + "; ".join(f"{k}: {v}" for k, v in context) + "\n\n"))
    parts.append(TextPart(f"Clusters ({len(clusters)}): {', '.join(ids)}\n"))
    for c in clusters:
        header = f"\n### Cluster {c.group_id} ({c.size:,} documents)\n"
        if c.keywords:
            header += "Distinctive terms: " + ", ".join(c.keywords[:10]) + "\n"
        if c.subtopics:
            header += ("A topic over these named subtopics: " + "; ".join(c.subtopics) + ". Name the broader "
                       "subject they share, not a list of them, and not one of their names.\n")
        header += "Representative documents:\n"
        parts.append(TextPart(header))
        for i, sample in enumerate(c.samples, 1):
            text = sample.sample(sample_max_length) or "(no text)"
            parts.append(TextPart(f"{i}. {text}\n"))
            for media in sample.media:
                if with_media:
                    parts.append(MediaPart(media))
                else:
                    parts.append(TextPart(f"   [{media.kind}: {media.url}]\n"))
    if correction:
        parts.append(TextPart(
            f"\nYour previous reply could not be used: {correction}\n"
            "Answer again for the clusters above, as JSON only, exactly in the format asked.\n"))
    return Prompt(system=SYSTEM, parts=_merge_text(parts))


def _instructions(n: int, item_schema: dict[str, Any], taken: Sequence[str]) -> str:
    example = {"cluster_id": "cl_0", **_example_item(item_schema)}
    lines = [
        f"Below are {n} clusters of documents from one collection. Each shows its size, the terms that set it "
        "apart from the other clusters, and representative documents (some nearest its center, some spread "
        "across it).",
        "",
        "Name each cluster so that a reader can tell it apart from every other cluster:",
        "- a short label of 2-5 words in Title Case naming what is specific to this cluster, not what all of "
        "them share;",
        "- no generic labels (\"Miscellaneous\", \"General Topics\", \"Various Documents\", \"Cluster 3\");",
        "- every label different from the others in this reply.",
    ]
    props = item_schema.get("properties") or {}
    if "summary" in props:
        lines.append("- summary: one sentence describing what the cluster's documents have in common.")
    if "keywords" in props:
        lines.append("- keywords: 3 to 7 words or short phrases characteristic of the cluster.")
    if taken:
        lines += ["", "Labels already taken by other clusters (do not use them or close variants): "
                  + json.dumps(sorted(set(taken)), ensure_ascii=False)]
    lines += [
        "",
        'Reply with one JSON object: {"clusters": [ ... ]} holding one entry per cluster, each with its '
        '"cluster_id" and the fields of this JSON schema:',
        json.dumps(item_schema, ensure_ascii=False),
        "Example entry: " + json.dumps(example, ensure_ascii=False),
        "",
    ]
    return "\n".join(lines) + "\n"


def _example_item(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        if "enum" in prop and prop["enum"]:
            out[key] = prop["enum"][0]
        elif key == "label":
            out[key] = "Electric Vehicle Reviews"
        elif kind == "string":
            out[key] = "..."
        elif kind == "array":
            out[key] = ["..."]
        elif kind in ("number", "integer"):
            out[key] = prop.get("minimum", 0)
        elif kind == "boolean":
            out[key] = False
        elif kind == "object":
            out[key] = {}
    return out


def _merge_text(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, TextPart) and merged and isinstance(merged[-1], TextPart):
            merged[-1] = TextPart(merged[-1].text + part.text)
        else:
            merged.append(part)
    return merged


# ------------------------------------------------------------------------------ reply

class ReplyError(ValueError):
    """The reply holds no JSON we can read."""


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def _first_json(text: str) -> Any:
    text = text.strip()
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        candidate = candidate.strip()
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        for i, ch in enumerate(candidate):
            if ch in "[{":
                try:
                    value, _ = decoder.raw_decode(candidate[i:])
                    return value
                except ValueError:
                    continue
    raise ReplyError("the reply is not JSON")


def parse_reply(text: str, expected_ids: Sequence[str]) -> dict[str, Any]:
    """Each expected cluster's item (a missing cluster is absent from the result).

    Raises ReplyError when no JSON can be found or it has no recognisable layout."""
    value = _first_json(text)
    expected = list(expected_ids)
    items: list[Any] | None = None
    if isinstance(value, dict):
        for key in ("clusters", "labels", "results", "items", "data"):
            if isinstance(value.get(key), list):
                items = value[key]
                break
        if items is None:
            if any(k in value for k in expected) and all(isinstance(value[k], dict) for k in value if k in expected):
                return {k: value[k] for k in expected if k in value}
            items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise ReplyError(f"the reply is JSON {type(value).__name__}, not an object or array")

    out: dict[str, Any] = {}
    unnamed = []
    for item in items:
        cid = item.get("cluster_id") if isinstance(item, dict) else None
        if isinstance(cid, int) or (isinstance(cid, str) and re.fullmatch(r"-?\d+", cid)):
            cid = f"cl_{int(cid)}"  # "3" or 3 for "cl_3"
        if cid in expected and cid not in out:
            out[cid] = item
        elif cid is None:
            unnamed.append(item)
    if not out and len(unnamed) == len(expected):
        out = dict(zip(expected, unnamed))  # in the order asked
    if not out and items:
        raise ReplyError("the reply names none of the clusters asked for")
    return out


def strip_cluster_id(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "cluster_id"}


def excerpt(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
