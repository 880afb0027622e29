"""What a document says: its text, title and media, read from its payload.

With `labeling_inputs.input_mappings`, the named payload paths (dot notation, with
`a[0].b` and `a[].b` for lists); a mapping whose `input_key` names an image, video or
audio URL (`image_url`, `thumbnail_url`...) yields a media part instead of text, and a
`literal` mapping is context shared by every document. Without mappings, the
payload's string fields, the usual text fields first (title, text, description,
name, content...), URLs and ids left out: the reference warns that sending the raw
payload makes the LLM describe field names, so we send values only.
"""
from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from contracts.api import InputMapping, InputSourceType, LLMLabeling

MediaKind = Literal["image", "video", "audio"]

PREFERRED_FIELDS = ("title", "headline", "name", "text", "description", "content", "summary", "body",
                    "abstract", "caption")
TITLE_FIELDS = ("title", "headline", "name", "subject")

_URL = re.compile(r"^(https?|s3|gs|ftp)://", re.I)
_ID_LIKE = re.compile(r"^[0-9a-f\-]{16,}$|^[A-Za-z]+_[0-9a-f]{8,}$|^[\d\W_]+$", re.I)
_DEFAULT_MIME = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/mpeg"}


@dataclass(frozen=True)
class Media:
    kind: MediaKind
    url: str

    @property
    def mime_type(self) -> str:
        guessed, _ = mimetypes.guess_type(self.url.split("?", 1)[0])
        if guessed and guessed.startswith(self.kind + "/"):
            return guessed
        return _DEFAULT_MIME[self.kind]


@dataclass
class MemberContent:
    document_id: str
    text: str = ""
    title: str | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)  # (key, value) in order
    media: list[Media] = field(default_factory=list)

    def sample(self, max_length: int) -> str:
        """The document as shown to the LLM: `key: value` pairs, cut at max_length."""
        if len(self.fields) > 1:
            text = " | ".join(f"{k}: {v}" for k, v in self.fields)
        else:
            text = self.text
        text = " ".join(text.split())
        return text if len(text) <= max_length else text[: max_length - 1].rstrip() + "…"


def media_kind(input_key: str) -> MediaKind | None:
    key = input_key.lower()
    for kind in ("image", "video", "audio"):
        if f"{kind}_url" in key or (kind in key and "url" in key) or key in (kind, f"{kind}s"):
            return kind  # type: ignore[return-value]
    if "thumbnail" in key:
        return "image"
    return None


def get_path(payload: Any, path: str) -> list[Any]:
    """The values at a dot-notation path; `[]` fans out over a list, `[n]` indexes."""
    values = [payload]
    for part in path.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d*\])*)", part)
        if m is None:
            return []
        name, indexes = m.group(1), re.findall(r"\[(\d*)\]", m.group(2))
        nxt: list[Any] = []
        for value in values:
            if name:
                if not isinstance(value, dict) or name not in value:
                    continue
                value = value[name]
            current = [value]
            for index in indexes:
                expanded = []
                for v in current:
                    if not isinstance(v, list):
                        continue
                    if index == "":
                        expanded.extend(v)
                    elif int(index) < len(v):
                        expanded.append(v[int(index)])
                current = expanded
            nxt.extend(current)
        values = nxt
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(x for x in v if x is not None)
        elif v is not None:
            out.append(v)
    return out


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return None


def _is_prose(key: str, value: str) -> bool:
    if _URL.match(value) or _ID_LIKE.match(value):
        return False
    return not (key.endswith("_id") or key in ("id", "uuid", "url", "uri", "path"))


def literal_context(config: LLMLabeling | None) -> list[tuple[str, str]]:
    """The literal mappings: context shown once, not per document."""
    if config is None or config.labeling_inputs is None:
        return []
    out = []
    for m in config.labeling_inputs.input_mappings:
        if m.source_type == InputSourceType.literal and m.override is not None:
            out.append((m.input_key, str(m.override)))
    return out


def _without_repeats(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop a field whose value another field already contains (a title repeated as
    the first sentence of the text): it would count twice and waste prompt space."""
    folded = [v.casefold() for _, v in fields]
    keep = []
    for i, (key, value) in enumerate(fields):
        if any(j != i and folded[i] in folded[j] and (len(folded[j]) > len(folded[i]) or j < i)
               for j in range(len(fields))):
            continue
        keep.append((key, value))
    return keep


def extract(document_id: str, payload: dict[str, Any], mappings: list[InputMapping] | None) -> MemberContent:
    content = MemberContent(document_id=document_id)
    if mappings:
        for m in mappings:
            if m.source_type in (InputSourceType.literal, InputSourceType.vector):
                continue  # literals are shared context; vectors are not text
            values = get_path(payload, m.path or m.input_key)
            kind = media_kind(m.input_key)
            for value in values:
                text = _as_text(value)
                if text is None:
                    continue
                if kind is not None and _URL.match(text):
                    content.media.append(Media(kind, text))
                elif kind is None:
                    content.fields.append((m.input_key, text))
                    leaf = (m.path or m.input_key).split(".")[-1].lower()
                    if content.title is None and (m.input_key.lower() in TITLE_FIELDS or leaf in TITLE_FIELDS):
                        content.title = text
    else:
        seen: set[str] = set()
        sources = [payload] + [payload[k] for k in ("metadata", "properties") if isinstance(payload.get(k), dict)]
        for source in sources:
            for key in PREFERRED_FIELDS:
                text = _as_text(source.get(key))
                if text and key not in seen and _is_prose(key, text):
                    content.fields.append((key, text))
                    seen.add(key)
        for key, value in payload.items():
            text = _as_text(value) if isinstance(value, str) else None
            if text and key not in seen and _is_prose(key, text):
                content.fields.append((key, text))
                seen.add(key)
        for key, value in content.fields:
            if key in TITLE_FIELDS:
                content.title = value
                break
    content.fields = _without_repeats(content.fields)
    content.text = " ".join(v for _, v in content.fields)
    if content.title is None and content.fields:
        first = content.fields[0][1]
        content.title = first if len(first) <= 120 else first[:119].rstrip() + "…"
    return content
