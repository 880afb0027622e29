"""What the labeler reads from a payload: mapped fields, media, or the prose fields."""
from __future__ import annotations

from contracts.api import InputMapping
from services.labeler.texts import extract, get_path, media_kind


def test_get_path_reads_dots_indexes_and_fan_out():
    payload = {"a": {"b": "x"}, "blobs": [{"url": "u1"}, {"url": "u2"}], "tags": ["t1", "t2"]}
    assert get_path(payload, "a.b") == ["x"]
    assert get_path(payload, "blobs[].url") == ["u1", "u2"]
    assert get_path(payload, "blobs[1].url") == ["u2"]
    assert get_path(payload, "tags") == ["t1", "t2"]
    assert get_path(payload, "missing.path") == []


def test_without_mappings_the_prose_fields_come_first_and_ids_urls_are_left_out():
    content = extract("d1", {"doc_ref": "ref_0000abcd", "url": "https://x.y/z", "body": "Long body text",
                             "title": "A title", "count": 3, "flag": True}, None)
    assert [k for k, _ in content.fields] == ["title", "body"]
    assert content.title == "A title"
    assert content.text == "A title Long body text"


def test_a_title_repeated_in_the_text_is_not_counted_twice():
    content = extract("d1", {"title": "Rocket launch", "text": "Rocket launch delayed by weather."}, None)
    assert content.text == "Rocket launch delayed by weather."
    assert content.title == "Rocket launch"


def test_mappings_pick_fields_and_turn_media_urls_into_media_parts():
    mappings = [InputMapping(input_key="text", source_type="payload", path="headline"),
                InputMapping(input_key="image_url", source_type="payload", path="thumbnail_url"),
                InputMapping(input_key="video_url", path="media[].url"),
                InputMapping(input_key="hint", source_type="literal", override="news")]
    payload = {"headline": "Storm hits coast", "thumbnail_url": "https://img/x.png", "other": "ignored",
               "media": [{"url": "https://v/1.mp4"}]}
    content = extract("d1", payload, mappings)
    assert content.fields == [("text", "Storm hits coast")]
    assert [(m.kind, m.url, m.mime_type) for m in content.media] == [
        ("image", "https://img/x.png", "image/png"), ("video", "https://v/1.mp4", "video/mp4")]
    assert "ignored" not in content.text


def test_sample_is_cut_at_the_maximum_length():
    content = extract("d1", {"title": "T", "text": "word " * 200}, None)
    sample = content.sample(50)
    assert len(sample) == 50 and sample.endswith("…")


def test_media_kind_from_input_key():
    assert media_kind("image_url") == "image"
    assert media_kind("thumbnail_url") == "image"
    assert media_kind("video_url") == "video"
    assert media_kind("text") is None
