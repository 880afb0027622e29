"""The prompt sent to the LLM, and reading its reply."""
from __future__ import annotations

import json

import pytest

from services.labeler.prompts import (
    GroupBrief,
    MediaPart,
    ReplyError,
    TextPart,
    build_prompt,
    parse_reply,
)
from services.labeler.shape import default_item_schema
from services.labeler.texts import Media, MemberContent


def _brief(cid: str, texts: list[str], media: list[Media] | None = None) -> GroupBrief:
    samples = [MemberContent(document_id=f"{cid}-{i}", text=t, fields=[("text", t)]) for i, t in enumerate(texts)]
    if media:
        samples[0].media = media
    return GroupBrief(group_id=cid, size=100 * len(texts), samples=samples, keywords=["alpha", "beta"])


def test_default_prompt_asks_for_discriminative_labels_and_forbids_taken_ones():
    prompt = build_prompt([_brief("cl_0", ["rocket launch"]), _brief("cl_1", ["pasta sauce"])],
                          item_schema=default_item_schema(True, True), sample_max_length=200,
                          taken_labels=["Space Missions", "Home Cooking"])
    text = prompt.text
    assert "tell it apart from every other cluster" in text
    assert 'Labels already taken by other clusters (do not use them or close variants): ["Home Cooking", ' \
           '"Space Missions"]' in text
    assert "### Cluster cl_0 (100 documents)" in text and "### Cluster cl_1" in text
    assert "1. rocket launch" in text and "Distinctive terms: alpha, beta" in text
    assert '"clusters"' in text and "JSON" in text
    assert "summary" in text and "keywords" in text


def test_summary_and_keywords_are_only_asked_for_when_wanted():
    prompt = build_prompt([_brief("cl_0", ["x"])], item_schema=default_item_schema(False, False),
                          sample_max_length=200)
    schema_line = next(line for line in prompt.text.splitlines() if line.startswith('{"type"'))
    assert json.loads(schema_line)["required"] == ["label"]
    assert "- summary:" not in prompt.text and "- keywords:" not in prompt.text


def test_samples_are_cut_at_sample_text_max_length():
    prompt = build_prompt([_brief("cl_0", ["word " * 100])], item_schema=default_item_schema(True, True),
                          sample_max_length=60)
    line = next(line for line in prompt.text.splitlines() if line.startswith("1. "))
    assert len(line) == len("1. ") + 60


def test_custom_prompt_replaces_the_instructions_but_still_gets_the_clusters():
    custom = "Generate emoji labels. Return JSON: [{'cluster_id': 'cl_0', 'label': '...'}]"
    prompt = build_prompt([_brief("cl_0", ["rocket"])], item_schema=default_item_schema(True, True),
                          sample_max_length=200, taken_labels=["Taken"], custom_prompt=custom)
    assert prompt.text.startswith(custom)
    assert "Labels already taken" not in prompt.text and "tell it apart" not in prompt.text
    assert "### Cluster cl_0" in prompt.text and "1. rocket" in prompt.text


def test_media_become_parts_in_order():
    media = [Media("image", "https://img/1.jpg")]
    prompt = build_prompt([_brief("cl_0", ["a", "b"], media)], item_schema=default_item_schema(True, True),
                          sample_max_length=200)
    kinds = [type(p) for p in prompt.parts]
    assert kinds == [TextPart, MediaPart, TextPart]
    assert prompt.parts[1].media.url == "https://img/1.jpg"
    assert prompt.parts[0].text.endswith("1. a\n") and prompt.parts[2].text.startswith("2. b")


def test_correction_tells_what_was_wrong():
    prompt = build_prompt([_brief("cl_0", ["a"])], item_schema=default_item_schema(True, True),
                          sample_max_length=200, correction="cl_0: missing required property 'label'")
    assert "Your previous reply could not be used: cl_0: missing required property 'label'" in prompt.text


@pytest.mark.parametrize("reply", [
    '{"clusters": [{"cluster_id": "cl_0", "label": "A"}, {"cluster_id": "cl_1", "label": "B"}]}',
    '```json\n[{"cluster_id": "cl_0", "label": "A"}, {"cluster_id": "cl_1", "label": "B"}]\n```',
    'Here you go: {"cl_0": {"label": "A"}, "cl_1": {"label": "B"}} Hope this helps!',
    '[{"cluster_id": 0, "label": "A"}, {"cluster_id": "1", "label": "B"}]',
    '[{"label": "A"}, {"label": "B"}]',
])
def test_replies_are_read_in_every_common_layout(reply):
    items = parse_reply(reply, ["cl_0", "cl_1"])
    assert items["cl_0"]["label"] == "A" and items["cl_1"]["label"] == "B"


def test_a_single_object_answers_a_single_cluster():
    assert parse_reply('{"label": "Only"}', ["cl_4"]) == {"cl_4": {"label": "Only"}}


def test_missing_clusters_are_absent_and_prose_is_an_error():
    assert parse_reply('{"clusters": [{"cluster_id": "cl_0", "label": "A"}]}', ["cl_0", "cl_1"]).keys() == {"cl_0"}
    with pytest.raises(ReplyError):
        parse_reply("I think these are about space and food.", ["cl_0"])
    with pytest.raises(ReplyError):
        parse_reply('{"clusters": [{"cluster_id": "cl_9", "label": "A"}]}', ["cl_0"])
