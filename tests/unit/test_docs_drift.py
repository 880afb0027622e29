"""The published contracts (docs/openapi.json, docs/asyncapi/*.json) match the code."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


def test_committed_docs_match_the_code():
    problems = gen_docs.stale(gen_docs.generate())
    assert not problems, (
        "the published contracts drifted from the code:\n  " + "\n  ".join(problems)
        + f"\nregenerate them with: {gen_docs.COMMAND}"
    )


def test_generation_is_deterministic():
    assert gen_docs.generate() == gen_docs.generate()


def test_asyncapi_documents_follow_the_topic_registry():
    from contracts.topics import ALL_TOPICS

    for service in gen_docs.services():
        doc = json.loads(gen_docs.render(gen_docs.asyncapi(service)))
        me = gen_docs.SERVICES[service]
        assert doc["asyncapi"] == "3.0.0"
        for topic in ALL_TOPICS:
            name = topic.event.__name__
            assert (f"receive_{topic.name}" in doc["operations"]) == (me in topic.consumers)
            assert (f"send_{topic.name}" in doc["operations"]) == (me in topic.producers)
            if me in topic.consumers or me in topic.producers:
                assert doc["channels"][topic.name]["address"] == topic.name
                assert doc["components"]["messages"][name]["payload"] == {"$ref": f"#/components/schemas/{name}"}
                assert name in doc["components"]["schemas"]
        _check_refs(doc)


def _check_refs(doc: dict) -> None:
    """Every local $ref points at something in the document."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    target = doc
                    for part in value.removeprefix("#/").split("/"):
                        target = target[part.replace("~1", "/").replace("~0", "~")]
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)


def test_check_mode_names_the_stale_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gen_docs, "DOCS", tmp_path)
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path.parent)
    assert gen_docs.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "openapi.json (missing)" in err and gen_docs.COMMAND in err
    assert gen_docs.main([]) == 0
    assert gen_docs.main(["--check"]) == 0
    (tmp_path / "asyncapi" / "retired.json").write_text("{}")
    (tmp_path / "openapi.json").write_text("{}")
    assert gen_docs.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "openapi.json (differs)" in err and "retired.json (no such service any more)" in err
