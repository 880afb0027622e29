"""The SDK tier: the hosted API's official Python SDK (PyPI `mixpeek`, pinned in the
`dev` extra), unchanged, against the whole system (`stack`, from tests/conftest.py).

Every call goes through the SDK's own methods and models: an answer that does not
parse into the SDK's model fails the test with the SDK's exception."""
from __future__ import annotations

import time

import httpx
import pytest

# A missing SDK fails the collection loudly: it is a pinned test dependency.
import mixpeek
from mixpeek import ApiClient, ClusterExecutionsApi, ClustersApi, Configuration, TasksApi

from clusterflow.keys import create_key
from tests.support.corpus import separated_groups

NAMESPACE = "sdk"
OTHER_NAMESPACE = "sdk-other"
TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"}
DIM = 32
GROUPS = 3
PER_GROUP = 60


class Sdk:
    """The SDK's three clients over one authenticated ApiClient."""

    def __init__(self, url: str, key: str, namespace: str) -> None:
        config = Configuration(host=url, access_token=key, api_key={"NamespaceHeader": namespace})
        self.client = ApiClient(config)
        self.clusters = ClustersApi(self.client)
        self.executions = ClusterExecutionsApi(self.client)
        self.tasks = TasksApi(self.client)
        self.byo = mixpeek.BYODocumentsApi(self.client)
        self.namespace = namespace

    def wait(self, task_id: str, timeout: float = 240) -> mixpeek.TaskResponse:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.tasks.get_task(task_id)
            if task.status.value in TERMINAL:
                return task
            time.sleep(0.5)
        raise AssertionError(f"task {task_id} still {task.status} after {timeout}s")


@pytest.fixture(scope="session")
def sdk_keys(stack, settings) -> dict[str, str]:
    return {ns: create_key(settings.database_url, [ns], name=f"sdk tests {ns}") for ns in (NAMESPACE, OTHER_NAMESPACE)}


@pytest.fixture(scope="session")
def sdk(stack, sdk_keys) -> Sdk:
    return Sdk(stack.url, sdk_keys[NAMESPACE], NAMESPACE)


@pytest.fixture(scope="session")
def other_sdk(stack, sdk_keys) -> Sdk:
    return Sdk(stack.url, sdk_keys[OTHER_NAMESPACE], OTHER_NAMESPACE)


@pytest.fixture(scope="session")
def raw(stack, sdk_keys):
    """Plain HTTP in the SDK's namespace: what the SDK has no method for (collections)."""
    headers = {"X-Namespace": NAMESPACE, "Authorization": f"Bearer {sdk_keys[NAMESPACE]}"}
    with httpx.Client(base_url=stack.url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="session")
def corpus(sdk, raw):
    """A collection (clusterflow's own route: the SDK's collections are the hosted
    product's) filled through the SDK's BYO upsert."""
    X, truth = separated_groups(GROUPS, PER_GROUP, DIM, seed=3, scale=0.2)
    r = raw.post("/v1/collections", json={"collection_name": "sdk-groups", "embeddings": {"text": DIM}})
    assert r.status_code == 200, r.text
    collection_id = r.json()["collection_id"]
    docs = [mixpeek.BYODocument.from_dict({
        "document_id": f"doc_{i:04d}", "vectors": {"text": X[i].tolist()},
        "payload": {"group": int(truth[i]), "topic": ["Alpha", "Beta", "Gamma"][truth[i]],
                    "title": f"document {i} of group {truth[i]}"}})
        for i in range(len(X))]
    done = sdk.byo.upsert_documents_byo_namespaces(
        NAMESPACE, mixpeek.BYOUpsertRequest(collection_id=collection_id, documents=docs))
    assert done.inserted == len(X) and len(done.document_ids) == len(X)
    return collection_id, X, truth
