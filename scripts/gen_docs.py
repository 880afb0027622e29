"""Publish the contracts: `docs/openapi.json` (the gateway's REST API) and
`docs/asyncapi/<service>.json` (what each service sends and receives on Kafka).

    .venv/bin/python scripts/gen_docs.py           # write the files
    .venv/bin/python scripts/gen_docs.py --check   # exit 1, listing the files that differ

The OpenAPI document is the gateway's own (`create_app().openapi()`; creating the app
connects to nothing). The AsyncAPI 3.0 documents are built from the topic registry
(`contracts/topics.py`: name, event model, key, producers, consumers) and the event
models' JSON schemas. FastStream's generator is not used: our subscribers take raw bytes
(the consumer wrapper parses them itself, to dead-letter what does not parse) and
publish through `broker.publish`, so FastStream sees neither payload schemas nor any
send operation. `tests/unit/test_docs_drift.py` fails when the files drift from the code.

Output is deterministic: sorted keys, two-space indent, a final newline.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic.json_schema import models_json_schema  # noqa: E402

from contracts import topics as registry  # noqa: E402

DOCS = ROOT / "docs"
COMMAND = ".venv/bin/python scripts/gen_docs.py"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"
SCHEMAS = "#/components/schemas/{model}"

# The services, by their folder under services/, and their id in the topic registry.
SERVICES: dict[str, str] = {
    "gateway": registry.GATEWAY,
    "preparer": registry.PREPARER,
    "clusterer": registry.CLUSTERER,
    "labeler": registry.LABELER,
    "status": registry.STATUS,
}


def render(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def openapi() -> dict[str, Any]:
    from services.gateway.app import create_app

    return create_app().openapi()


def services() -> list[str]:
    """The services that exist in this checkout (the labeler may not yet)."""
    return [name for name in SERVICES if (ROOT / "services" / name / "app.py").exists()]


def _describe(service: str, used: list) -> str:
    me = SERVICES[service]
    receives = [f"{t.event.__name__} from {t.name}" for t in used if me in t.consumers]
    sends = [f"{t.event.__name__} to {t.name}" for t in used if me in t.producers]
    parts = [f"receives {', '.join(receives)}" if receives else "", f"sends {', '.join(sends)}" if sends else ""]
    return f"clusterflow's {service} on Kafka: " + "; ".join(p for p in parts if p) + "."


def _summary(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc and doc != BaseModel.__doc__ else model.__name__


def _event_type(model: type[BaseModel]) -> str:
    """The `event_type` header KafkaPublisher sets: the model's event_type, else its class name."""
    field = model.model_fields.get("event_type")
    return field.default if field is not None and isinstance(field.default, str) else model.__name__


def _who(ids: tuple[str, ...]) -> list[str]:
    names = {v: k for k, v in SERVICES.items()} | {registry.ANYONE: "external publishers"}
    return [names.get(i, i) for i in ids]


def asyncapi(service: str) -> dict[str, Any]:
    """One service's AsyncAPI 3.0 document: the channels it uses, one operation per
    (action, topic), the messages and their payload schemas."""
    me = SERVICES[service]
    used = [t for t in registry.ALL_TOPICS if me in t.producers or me in t.consumers]
    models = sorted({t.event for t in used}, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=SCHEMAS)

    channels, operations, messages = {}, {}, {}
    for model in models:
        name = model.__name__
        messages[name] = {
            "name": name,
            "title": name,
            "summary": _summary(model),
            "contentType": "application/json",
            "payload": {"$ref": SCHEMAS.format(model=name)},
            "headers": {
                "type": "object",
                "properties": {"event_type": {"type": "string", "const": _event_type(model),
                                              "description": "The event's type, as a Kafka header."}},
            },
        }
    for topic in used:
        name = topic.event.__name__
        producers = _who(topic.producers)
        description = (f"Produced by {', '.join(producers) or 'nobody'}; consumed by "
                       f"{', '.join(_who(topic.consumers)) or 'nobody (kept for inspection)'}. "
                       f"Keyed by {topic.key}.")
        channels[topic.name] = {
            "address": topic.name,
            "title": topic.name,
            "description": description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"topic": topic.name, "partitions": topic.partitions, "replicas": 1,
                                   "bindingVersion": KAFKA_BINDING}},
        }
        message_ref = [{"$ref": f"#/channels/{topic.name}/messages/{name}"}]
        channel_ref = {"$ref": f"#/channels/{topic.name}"}
        key = {"type": "string", "description": f"the event's {topic.key}"}
        if me in topic.consumers:
            operations[f"receive_{topic.name}"] = {
                "action": "receive",
                "channel": channel_ref,
                "messages": message_ref,
                "summary": f"{service} consumes {name} from {topic.name} (consumer group {me}).",
                "bindings": {"kafka": {"groupId": {"type": "string", "enum": [me]},
                                       "bindingVersion": KAFKA_BINDING}},
            }
        if me in topic.producers:
            operations[f"send_{topic.name}"] = {
                "action": "send",
                "channel": channel_ref,
                "messages": message_ref,
                "summary": f"{service} publishes {name} to {topic.name}, keyed by {topic.key}.",
                "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}},
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:clusterflow:{service}",
        "info": {
            "title": f"clusterflow {service}",
            "version": project_version(),
            "description": _describe(service, used) + " Generated from contracts/topics.py and "
                           f"contracts/events.py by `{COMMAND}`.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:19092",
                "protocol": "kafka",
                "description": "The broker deploy/local/servers.sh starts; elsewhere CLUSTERFLOW_KAFKA_BOOTSTRAP.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": defs.get("$defs", {})},
    }


def generate() -> dict[Path, str]:
    """Every published file, path -> text."""
    files = {DOCS / "openapi.json": render(openapi())}
    for service in services():
        files[DOCS / "asyncapi" / f"{service}.json"] = render(asyncapi(service))
    return files


def stale(files: dict[Path, str]) -> list[str]:
    """The files that differ from `files`, are missing, or are generated no more."""
    problems = []
    for path, text in files.items():
        if not path.exists():
            problems.append(f"{path.relative_to(ROOT)} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path.relative_to(ROOT)} (differs)")
    for path in sorted((DOCS / "asyncapi").glob("*.json")):
        if path not in files:
            problems.append(f"{path.relative_to(ROOT)} (no such service any more)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = stale(files)
        if problems:
            print("the published contracts are stale:\n  " + "\n  ".join(problems) + f"\nrun: {COMMAND}",
                  file=sys.stderr)
            return 1
        print(f"{len(files)} files up to date")
        return 0
    (DOCS / "asyncapi").mkdir(parents=True, exist_ok=True)
    for path in sorted((DOCS / "asyncapi").glob("*.json")):
        if path not in files:
            path.unlink()
    for path, text in files.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
