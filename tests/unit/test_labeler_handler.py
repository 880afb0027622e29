"""The labeler end to end over in-memory ports and the in-process FakeLLM."""
from __future__ import annotations

import json
import re

from contracts.api import LLMLabeling, TaskStatusEnum
from contracts.events import derived_event_id
from contracts.topics import EXECUTION_LABELED, STATUS_CHANGED
from tests.support.labeler_fakes import MemoryCache, clustered_event, corpus, make_rig, topic_words
from tests.support.llm_servers import FakeLLM, NotJSON, Reply, ServerError

GPT = "gpt-4o-mini-2024-07-18"
TOPIC_HINTS = topic_words()


def _words(label: str) -> set[str]:
    return set(re.findall(r"[a-z]+", label.casefold()))


def _samples_per_cluster(prompt: str) -> dict[str, int]:
    out = {}
    for m in re.finditer(r"### Cluster (cl_\d+)[^\n]*\n(.*?)(?=\n### Cluster |\Z)", prompt, re.S):
        out[m.group(1)] = len(re.findall(r"^\d+\. ", m.group(2), re.M))
    return out


async def test_without_llm_labeling_every_run_still_gets_labels_from_its_text():
    c = corpus(per_topic=40, noise=5)
    fake = FakeLLM()
    rig = make_rig(c, fake)
    event = clustered_event(c.members)
    await rig.labeler.handle(event)

    labeled = rig.labeled()
    assert labeled.event_id == derived_event_id(event.run_id, EXECUTION_LABELED.name)
    assert (labeled.run_id, labeled.cluster_id, labeled.task_id) == (event.run_id, event.cluster_id, event.task_id)
    by_id = {l.group_id: l for l in labeled.labels}
    for cid, topic in c.topic_of.items():
        label = by_id[cid]
        assert _words(label.label) & TOPIC_HINTS[topic], (topic, label.label)
        assert label.keywords and label.summary.startswith("Most central document: ")
        assert label.metadata["labeling"]["source"] == "ctfidf"
    assert by_id["cl_-1"].label == "Noise"
    assert len({l.label for l in labeled.labels}) == len(labeled.labels)
    assert labeled.llm_labeling_errors == [] and fake.requests == []

    statuses = rig.publisher.on(STATUS_CHANGED)
    assert [(s.service, s.stage, s.status) for s in statuses] == [
        ("labeler", "labeling", TaskStatusEnum.PROCESSING), ("labeler", "labeled", TaskStatusEnum.PROCESSING)]

    # Redelivered: nothing twice.
    await rig.labeler.handle(event)
    assert len(rig.publisher.on(EXECUTION_LABELED)) == 1


async def test_disabled_or_keyless_llm_labeling_falls_back_to_the_text():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(enabled=False, model_name=GPT)))
    assert all(l.metadata["labeling"]["source"] == "ctfidf" for l in rig.labeled().labels)

    keyless = make_rig(c, fake, keys=("google",))
    await keyless.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(enabled=True, model_name=GPT)))
    labeled = keyless.labeled()
    assert fake.requests == [] and labeled.llm_labeling_errors == []
    meta = labeled.labels[0].metadata["labeling"]
    assert meta["source"] == "ctfidf" and "CLUSTERFLOW_OPENAI_API_KEY" in meta["llm_skipped"]


async def test_llm_labels_with_representatives_near_and_spread_and_flags_respected():
    c = corpus(per_topic=60)
    fake = FakeLLM()
    rig = make_rig(c, fake)
    config = LLMLabeling(enabled=True, model_name=GPT, max_samples_per_cluster=4, sample_text_max_length=50,
                         include_summary=False, parameters={"temperature": 0})
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=config))
    labeled = rig.labeled()
    assert len(fake.requests) == 1
    prompt = fake.requests[0].prompt
    assert _samples_per_cluster(prompt) == {"cl_0": 4, "cl_1": 4, "cl_2": 4, "cl_3": 4}
    assert all(len(line) <= 3 + 50 for line in prompt.splitlines() if re.match(r"^\d+\. ", line))
    assert fake.requests[0].body["temperature"] == 0
    assert "- summary:" not in prompt
    for label in labeled.labels:
        assert label.metadata["labeling"] == {"source": "llm", "provider": "openai", "model": GPT}
        assert label.summary is None and label.keywords
        assert _words(label.label) & TOPIC_HINTS[c.topic_of[label.group_id]]
    # Vectors were read for the candidate pools only.
    assert rig.results.vector_reads == [240]


async def test_automatic_sample_count_scales_with_cluster_size():
    c = corpus(per_topic=20)
    big = corpus(per_topic=400, topics=("space",), seed=9)
    members = c.members.vstack(big.members.with_columns(cluster_id=__import__("polars").lit("cl_9")))
    c.payloads.update({k: v for k, v in big.payloads.items()})
    c.members = members
    c.dataset = c.dataset.vstack(big.dataset)
    fake = FakeLLM()
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(members, llm_labeling=LLMLabeling(enabled=True, model_name=GPT)))
    counts = _samples_per_cluster(fake.requests[0].prompt)
    assert all(3 <= n <= 20 for n in counts.values())
    assert counts["cl_9"] > counts["cl_0"]


async def test_the_payloads_read_are_capped_per_cluster():
    c = corpus(per_topic=100)
    rig = make_rig(c, FakeLLM(), labeler_members_per_cluster=25)
    await rig.labeler.handle(clustered_event(c.members))
    assert rig.documents.requested == [100]  # 4 clusters x 25 nearest, not the 400 members


async def test_second_run_is_served_from_the_cache_without_a_provider_call():
    c = corpus(per_topic=30)
    fake = FakeLLM()
    cache = MemoryCache()
    config = LLMLabeling(enabled=True, model_name=GPT, cache_ttl_seconds=3600)
    first = make_rig(c, fake, cache=cache)
    await first.labeler.handle(clustered_event(c.members, llm_labeling=config, run_id="run_a"))
    assert len(fake.requests) == 1 and len(cache.entries) == 4 and set(cache.ttls.values()) == {3600}

    second = make_rig(c, fake, cache=cache)
    await second.labeler.handle(clustered_event(c.members, llm_labeling=config, run_id="run_b"))
    assert len(fake.requests) == 1  # no new call
    a = {l.group_id: (l.label, l.summary, l.keywords) for l in first.labeled().labels}
    b = {l.group_id: (l.label, l.summary, l.keywords) for l in second.labeled().labels}
    assert a == b
    assert {l.metadata["labeling"]["source"] for l in second.labeled().labels} == {"cache"}
    assert second.stats()["cache_hits"] == 4

    # Another model is another key; ttl 0 disables the cache both ways.
    other = make_rig(c, fake, cache=cache)
    await other.labeler.handle(clustered_event(c.members, run_id="run_c", llm_labeling=LLMLabeling(
        enabled=True, model_name="gpt-4.1-mini-2025-04-14", cache_ttl_seconds=3600)))
    assert len(fake.requests) == 2
    nocache = MemoryCache()
    for run in ("run_d", "run_e"):
        rig = make_rig(c, fake, cache=nocache)
        await rig.labeler.handle(clustered_event(c.members, run_id=run, llm_labeling=LLMLabeling(
            enabled=True, model_name=GPT, cache_ttl_seconds=0)))
    assert len(fake.requests) == 4 and nocache.entries == {}


async def test_a_reply_that_is_not_json_is_retried_once_then_recorded_and_replaced():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    fake.push(NotJSON("Sure! The clusters are about space and food."), NotJSON("Still prose, sorry."))
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(enabled=True, model_name=GPT)))
    labeled = rig.labeled()
    assert len(fake.requests) == 2
    assert "Your previous reply could not be used" in fake.requests[1].prompt
    errors = {e["cluster_id"]: e for e in labeled.llm_labeling_errors}
    assert set(errors) == {"cl_0", "cl_1", "cl_2", "cl_3"}
    assert "not JSON" in errors["cl_0"]["error"] and "after one retry" in errors["cl_0"]["error"]
    assert errors["cl_0"]["raw_reply"] == "Still prose, sorry."
    assert {l.metadata["labeling"]["source"] for l in labeled.labels} == {"ctfidf"}


async def test_only_the_failing_clusters_are_asked_again():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    good = [{"cluster_id": f"cl_{i}", "label": f"Topic {n}", "summary": "s", "keywords": ["k"]}
            for i, n in ((0, "Alpha"), (2, "Gamma"), (3, "Delta"))]
    fake.push(Reply(json.dumps({"clusters": good + [{"cluster_id": "cl_1", "summary": "no label"}]})),
              Reply(json.dumps({"clusters": [{"cluster_id": "cl_1", "label": "Topic Beta", "summary": "s",
                                              "keywords": ["k"]}]})))
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(enabled=True, model_name=GPT)))
    retry = fake.requests[1].prompt
    assert _samples_per_cluster(retry).keys() == {"cl_1"}
    # the wording is the validator's: the built-in one's, or jsonschema's where it is
    # installed (ray[default] brings it)
    assert re.search(r"cl_1: the entry does not match the schema: \$: (missing required property 'label'"
                     r"|'label' is a required property)", retry)
    assert '"Topic Alpha"' in retry  # the labels already given are taken
    labels = {l.group_id: l.label for l in rig.labeled().labels}
    assert labels == {"cl_0": "Topic Alpha", "cl_1": "Topic Beta", "cl_2": "Topic Gamma", "cl_3": "Topic Delta"}
    assert rig.labeled().llm_labeling_errors == []


async def test_response_shape_schema_output_goes_to_metadata_and_names_the_label():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    schema = {"type": "object", "required": ["category", "confidence"],
              "properties": {"category": {"type": "string"}, "confidence": {"type": "number", "minimum": 0,
                                                                            "maximum": 1},
                             "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 5}}}
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(
        enabled=True, model_name="gemini-2.5-flash", response_shape=schema)))
    assert json.dumps(schema) in fake.requests[0].prompt
    for label in rig.labeled().labels:
        assert label.metadata["category"] == label.label
        assert 0 <= label.metadata["confidence"] <= 1
        assert label.metadata["labeling"]["provider"] == "google"


async def test_response_shape_mismatch_after_the_retry_is_an_error_with_the_text_label():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    bad = json.dumps({"clusters": [{"cluster_id": f"cl_{i}", "category": "X", "confidence_score": 7} for i in range(4)]})
    fake.push(Reply(bad), Reply(bad))
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(
        enabled=True, model_name=GPT, response_shape="category and confidence score (0-1)")))
    errors = rig.labeled().llm_labeling_errors
    assert len(errors) == 4 and all(re.search(r"more than the maximum 1|7 is greater than the maximum of 1",
                                              e["error"]) for e in errors)
    assert all(e["raw_reply"].startswith('{"clusters"') for e in errors)
    assert {l.metadata["labeling"]["source"] for l in rig.labeled().labels} == {"ctfidf"}


async def test_a_provider_that_stays_down_costs_bounded_retries_and_no_further_batches():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    fake.push(*[ServerError(503)] * 4)
    rig = make_rig(c, fake, llm_clusters_per_call=2, llm_max_attempts=4, llm_backoff_s=0.5)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(enabled=True, model_name=GPT)))
    assert len(fake.requests) == 4 and rig.sleeps == [0.5, 1.0, 2.0]
    errors = rig.labeled().llm_labeling_errors
    assert [e["cluster_id"] for e in errors] == ["cl_0", "cl_1", "cl_2", "cl_3"]
    assert "gave up after 4 attempts" in errors[0]["error"] and errors[2]["error"].startswith("not sent:")
    assert len({l.label for l in rig.labeled().labels}) == 4  # text labels for all


async def test_custom_prompt_and_multimodal_inputs_reach_gemini():
    c = corpus(per_topic=20, image_urls=True)
    fake = FakeLLM()
    rig = make_rig(c, fake)
    config = LLMLabeling(
        enabled=True, model_name="gemini-3.1-flash-lite", max_samples_per_cluster=3,
        custom_prompt="Label these product clusters in 2 words. Return JSON.",
        labeling_inputs={"input_mappings": [{"input_key": "text", "source_type": "payload", "path": "title"},
                                            {"input_key": "image_url", "source_type": "payload",
                                             "path": "thumbnail_url"}]})
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=config))
    req = fake.requests[0]
    assert req.path.endswith("/gemini-2.5-flash-lite:generateContent")
    parts = req.body["contents"][0]["parts"]
    assert parts[0]["text"].startswith("Label these product clusters in 2 words. Return JSON.")
    files = [p["fileData"] for p in parts if "fileData" in p]
    assert len(files) == 12 and all(f["mimeType"] == "image/jpeg" for f in files)
    assert files[0]["fileUri"].startswith("https://img.example.com/")
    assert rig.labeled().llm_labeling_errors == []


async def test_clusters_whose_documents_are_gone_are_not_sent_to_the_llm():
    c = corpus(per_topic=20)
    for doc in [d for d in c.payloads if d.startswith("football")]:
        del c.payloads[doc]
    fake = FakeLLM()
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(enabled=True, model_name=GPT)))
    assert _samples_per_cluster(fake.requests[0].prompt).keys() == {"cl_0", "cl_1", "cl_3"}
    labels = {l.group_id: l for l in rig.labeled().labels}
    assert labels["cl_2"].label == "Cluster 2" and labels["cl_2"].metadata["labeling"]["source"] == "ctfidf"
    assert rig.labeled().llm_labeling_errors == []


def test_the_service_consumes_execution_clustered_in_the_labeler_group():
    from contracts.topics import EXECUTION_CLUSTERED, LABELER
    from services.labeler.app import bootstrap
    from services.labeler.settings import LabelerSettings

    app = bootstrap(LabelerSettings())
    (subscriber,) = app.broker.subscribers
    assert [t.name for t in subscriber.topics] == [EXECUTION_CLUSTERED.name]
    assert subscriber.group_id == LABELER


async def test_a_custom_prompt_reply_with_labels_only_is_accepted():
    c = corpus(per_topic=20)
    fake = FakeLLM()
    fake.push(Reply(json.dumps([{"cluster_id": f"cl_{i}", "label": name}
                                for i, name in enumerate(["🚀 Space", "🍝 Food", "⚽ Sport", "💰 Money"])])))
    rig = make_rig(c, fake)
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=LLMLabeling(
        enabled=True, model_name=GPT,
        custom_prompt="Generate emoji-based labels. Return JSON: [{'cluster_id': 'cl_0', 'label': '🚀 Tech'}]")))
    labeled = rig.labeled()
    assert labeled.llm_labeling_errors == [] and len(fake.requests) == 1
    by_id = {l.group_id: l for l in labeled.labels}
    assert by_id["cl_0"].label == "🚀 Space"
    assert by_id["cl_0"].summary.startswith("Most central document")  # the text summary fills in
    assert by_id["cl_0"].keywords  # and the text keywords


def _with_labels(event, labels: dict[str, str]):
    """The event as the clusterer sends it when some clusters kept their label."""
    from contracts.events import CentroidSummary

    sizes = {"cl_0": 30, "cl_1": 30, "cl_2": 30, "cl_3": 30}
    centroids = [CentroidSummary(group_id=cid, num_members=n, label=labels.get(cid),
                                 summary=f"kept summary of {cid}" if cid in labels else None,
                                 keywords=["kept"] if cid in labels else [])
                 for cid, n in sizes.items()]
    return event.model_copy(update={"centroids": centroids})


async def test_clusters_that_kept_their_label_are_not_labelled_again():
    c = corpus(per_topic=30)
    fake = FakeLLM()
    rig = make_rig(c, fake)
    config = LLMLabeling(enabled=True, model_name=GPT)
    event = _with_labels(clustered_event(c.members, llm_labeling=config), {"cl_0": "Kept Zero", "cl_2": "Kept Two"})
    await rig.labeler.handle(event)

    assert len(fake.requests) == 1
    prompt = fake.requests[0].prompt
    assert set(_samples_per_cluster(prompt)) == {"cl_1", "cl_3"}  # only the new clusters are asked for
    assert "Kept Zero" in prompt and "Kept Two" in prompt  # and told those labels are taken
    by_id = {l.group_id: l for l in rig.labeled().labels}
    assert (by_id["cl_0"].label, by_id["cl_0"].summary, by_id["cl_0"].keywords) == (
        "Kept Zero", "kept summary of cl_0", ["kept"])
    assert by_id["cl_0"].metadata["labeling"] == {"source": "inherited"}
    assert {by_id[c].metadata["labeling"]["source"] for c in ("cl_1", "cl_3")} == {"llm"}
    assert rig.stats()["inherited"] == 2

    # Every cluster kept its label: no provider call at all.
    again = make_rig(c, fake)
    await again.labeler.handle(_with_labels(clustered_event(c.members, llm_labeling=config, run_id="run_all"),
                                            {f"cl_{i}": f"Kept {i}" for i in range(4)}))
    assert len(fake.requests) == 1
    assert {l.metadata["labeling"]["source"] for l in again.labeled().labels if l.group_id != "cl_-1"} == {
        "inherited"}


async def test_a_new_label_that_repeats_a_kept_one_is_the_one_that_changes():
    c = corpus(per_topic=30)
    plain = make_rig(c, FakeLLM())
    await plain.labeler.handle(clustered_event(c.members))
    text_label_of_1 = {l.group_id: l.label for l in plain.labeled().labels}["cl_1"]

    # cl_3 (smaller or not) kept cl_1's text label from an earlier run: cl_1 must yield.
    rig = make_rig(c, FakeLLM())
    await rig.labeler.handle(_with_labels(clustered_event(c.members, run_id="run_dup"), {"cl_3": text_label_of_1}))
    by_id = {l.group_id: l.label for l in rig.labeled().labels}
    assert by_id["cl_3"] == text_label_of_1
    assert by_id["cl_1"].casefold() != text_label_of_1.casefold()
    assert len({v.casefold() for v in by_id.values()}) == len(by_id)


async def test_a_retired_model_and_refused_parameters_are_run_warnings_not_errors():
    c = corpus(per_topic=30)
    fake = FakeLLM()  # answers 404 to the retired name and 400 to top_p beside temperature
    rig = make_rig(c, fake)
    config = LLMLabeling(enabled=True, model_name="claude-3-5-haiku-20241022",
                         parameters={"temperature": 0.2, "top_p": 0.9})
    await rig.labeler.handle(clustered_event(c.members, llm_labeling=config))
    labeled = rig.labeled()
    assert labeled.llm_labeling_errors == []
    assert fake.requests[0].body["model"] == "claude-haiku-4-5-20251001"
    for label in labeled.labels:
        assert label.metadata["labeling"] == {"source": "llm", "provider": "anthropic",
                                              "model": "claude-haiku-4-5-20251001",
                                              "model_requested": "claude-3-5-haiku-20241022"}
    reports = [e for e in rig.publisher.on(STATUS_CHANGED) if e.stage == "labeled"]
    warnings = reports[0].details["llm_labeling_warnings"]
    assert any("claude-3-5-haiku-20241022" in w and "retired" in w for w in warnings)
    assert any("'top_p' was not sent" in w for w in warnings)
