"""The hosted API's official Python SDK, unchanged, against clusterflow: every answer
parses into the SDK's own model, and the values are right (the runs complete and find
the groups in the data)."""
from __future__ import annotations

import io
from datetime import datetime, timezone

import httpx
import polars as pl
import pytest
from mixpeek import models as M
from mixpeek.exceptions import ApiException, BadRequestException, NotFoundException, UnprocessableEntityException
from sklearn.metrics import adjusted_rand_score

from tests.sdk.conftest import GROUPS, NAMESPACE, PER_GROUP

pytestmark = pytest.mark.sdk

FEATURE_URI = "mixpeek://text_extractor@v1/text"


def kmeans_request(collection_id: str, name: str | None, **vector) -> M.CreateClusterRequest:
    """What a user of the SDK writes: nested vector_config, typed algorithm params."""
    return M.CreateClusterRequest(
        collection_ids=[collection_id], cluster_name=name, cluster_type=M.ClusterType.VECTOR,
        vector_config=M.VectorBasedConfigInput(
            feature_uris=[FEATURE_URI], clustering_method=M.ClusteringAlgorithm.KMEANS,
            algorithm_params=M.AlgorithmParams(M.KMeansParams(n_clusters=GROUPS)), **vector),
        llm_labeling=M.LLMLabelingInput(enabled=False))


def truth_ari(assignment: dict[str, str], truth) -> float:
    ids = sorted(assignment)
    return adjusted_rand_score([truth[int(i.split("_")[1])] for i in ids], [assignment[i] for i in ids])


@pytest.fixture(scope="module")
def cluster(sdk, corpus) -> M.ClusterMetadata:
    collection_id, _, _ = corpus
    return sdk.clusters.create_cluster(kmeans_request(collection_id, "sdk kmeans"))


@pytest.fixture(scope="module")
def full_run(sdk, cluster) -> tuple[str, str]:
    task = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    assert task.status.value == "PENDING" and task.task_type.value == "engine_cluster_build"
    done = sdk.wait(task.task_id)
    assert done.status.value == "COMPLETED", done
    return task.additional_data["run_id"], task.task_id


def test_create_reads_back_the_nested_configuration(sdk, cluster, corpus):
    collection_id, _, _ = corpus
    assert isinstance(cluster, M.ClusterMetadata)
    assert cluster.cluster_id.startswith("clust_") and cluster.cluster_name == "sdk kmeans"
    assert cluster.namespace_id == NAMESPACE and cluster.input_collections == [collection_id]
    assert cluster.cluster_type == "vector" and cluster.algorithm == "kmeans"
    assert cluster.algorithm_params == {"n_clusters": GROUPS, "max_iter": 300, "random_state": 42, "n_init": 10,
                                        "tol": 0.0001, "init": "k-means++"}
    by_name = sdk.clusters.get_cluster("sdk kmeans")
    assert by_name.cluster_id == cluster.cluster_id and by_name.feature_uris == ["text"]


def test_create_without_a_name_with_filters_that_carry_case_sensitive(sdk, raw, corpus):
    collection_id, _, truth = corpus
    request = kmeans_request(collection_id, None)
    request.filters = M.LogicalOperatorInput.from_dict(
        {"AND": [{"field": "topic", "operator": "eq", "value": "alpha"}]})
    created = sdk.clusters.create_cluster(request)
    assert created.cluster_name == created.cluster_id  # the name is optional
    assert created.filters["AND"][0]["case_sensitive"] is False
    task = sdk.clusters.execute_clustering_clusters(created.cluster_id, M.ExecuteClusterByIdRequest())
    assert sdk.wait(task.task_id).status.value == "COMPLETED"
    run = sdk.executions.get_cluster_execution(created.cluster_id)
    # case-insensitive: "alpha" matches the "Alpha" group, and only it
    assert run.num_points == PER_GROUP and run.source_documents == PER_GROUP

    strict = kmeans_request(collection_id, None)
    strict.filters = M.LogicalOperatorInput.from_dict(
        {"AND": [{"field": "topic", "operator": "eq", "value": "alpha", "case_sensitive": True}]})
    strict_cluster = sdk.clusters.create_cluster(strict)
    task = sdk.clusters.execute_clustering_clusters(strict_cluster.cluster_id, M.ExecuteClusterByIdRequest())
    assert sdk.wait(task.task_id).status.value == "FAILED"  # nothing matches "alpha" case-sensitively
    failed = sdk.executions.get_cluster_execution_by_run(strict_cluster.cluster_id, task.additional_data["run_id"])
    assert failed.status == "failed" and failed.num_points == 0 and failed.error_message


def test_unknown_keys_are_ignored_and_named_in_warnings(raw, corpus):
    collection_id, _, _ = corpus
    r = raw.post("/v1/clusters", json={
        "collection_ids": [collection_id], "cluster_type": "vector", "brand_new_option": 1,
        "vector_config": {"feature_uri": "text", "clustering_method": "kmeans", "future_knob": True,
                          "algorithm_params": {"n_clusters": 2}}})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["warnings"]) == ["brand_new_option", "vector_config.future_knob"]
    assert M.ClusterMetadata.from_dict(r.json()).algorithm == "kmeans"
    cluster_id = r.json()["cluster_id"]
    r = raw.patch(f"/v1/clusters/{cluster_id}", json={"": [], "description": "kept", "brand_new_option": 2})
    assert r.status_code == 200 and sorted(r.json()["warnings"]) == ["", "brand_new_option"], r.text
    assert r.json()["description"] == "kept"
    # list bodies too: what they ignore is named, never dropped silently
    # (`search` and `filters` of the tasks list were named here until they were honoured)
    r = raw.post("/v1/tasks/list", json={"search": "x", "brand_new_option": 1,
                                         "sort": {"field": "created_at", "direction": "desc"}})
    assert r.status_code == 200 and r.json()["warnings"] == ["brand_new_option"], r.text
    r = raw.post("/v1/clusters/list", json={"sorts": [{"field": "cluster_name"}], "page_size": 1})
    assert r.status_code == 200 and r.json()["warnings"] == ["sorts"], r.text
    assert r.json()["pagination"]["page_size"] == 1 and len(r.json()["results"]) == 1


def test_knobs_clusterflow_lacks_are_refused_unless_at_their_default(sdk, corpus):
    collection_id, _, _ = corpus
    with pytest.raises(BadRequestException) as caught:
        sdk.clusters.create_cluster(M.CreateClusterRequest(
            collection_ids=[collection_id], cluster_type=M.ClusterType.VECTOR,
            vector_config=M.VectorBasedConfigInput(
                feature_uris=[FEATURE_URI], clustering_method=M.ClusteringAlgorithm.KMEANS,
                algorithm_params=M.AlgorithmParams(M.KMeansParams(n_clusters=2, algorithm="elkan")))))
    assert caught.value.data.error.details["field"] == "vector_config.algorithm_params.algorithm"
    with pytest.raises(BadRequestException) as caught:
        sdk.clusters.create_cluster(M.CreateClusterRequest(
            collection_ids=[collection_id], cluster_type=M.ClusterType.VECTOR,
            vector_config=M.VectorBasedConfigInput(feature_uris=[FEATURE_URI], clustering_method="kmeans",
                                                   multi_feature_strategy="weighted")))
    assert caught.value.data.status == 400 and "multi_feature_strategy" in caught.value.data.error.message
    with pytest.raises(BadRequestException) as caught:
        sdk.clusters.create_cluster(M.CreateClusterRequest(
            collection_ids=[collection_id], cluster_type=M.ClusterType.ATTRIBUTE,
            vector_config=M.VectorBasedConfigInput(feature_uris=[FEATURE_URI], clustering_method="kmeans")))
    assert "not supported yet" in caught.value.data.error.message


def test_list_pages_filters_and_searches(sdk, cluster, corpus):
    collection_id, _, _ = corpus
    for i in range(2):
        sdk.clusters.create_cluster(kmeans_request(collection_id, f"sdk paging {i}"))
    listed = sdk.clusters.list_clusters(list_clusters_request=M.ListClustersRequest(search="sdk paging"),
                                        page_size=1, page=2)
    assert isinstance(listed, M.ListClustersResponse)
    assert listed.total_count == 2 and len(listed.results) == 1
    assert (listed.pagination.page, listed.pagination.page_size, listed.pagination.total_pages) == (2, 1, 2)
    assert listed.pagination.next_cursor is None
    first = sdk.clusters.list_clusters(list_clusters_request=M.ListClustersRequest(search="sdk paging",
                                                                                     page_size=1))
    assert first.pagination.next_cursor is not None
    after = sdk.clusters.list_clusters(list_clusters_request=M.ListClustersRequest(search="sdk paging"),
                                       page_size=1, cursor=first.pagination.next_cursor)
    assert {first.results[0].cluster_id, after.results[0].cluster_id} == {
        c.cluster_id for c in sdk.clusters.list_clusters_get(search="sdk paging").results}
    by_filter = sdk.clusters.list_clusters(list_clusters_request=M.ListClustersRequest(
        filters=M.LogicalOperatorInput.from_dict({"AND": [{"field": "cluster_name", "operator": "eq",
                                                           "value": "sdk kmeans"}]})))
    assert [c.cluster_id for c in by_filter.results] == [cluster.cluster_id]


def test_patch_changes_later_runs_only(sdk, raw, corpus):
    collection_id, X, _ = corpus
    cluster = sdk.clusters.create_cluster(kmeans_request(collection_id, "sdk patched"))
    first = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    assert sdk.wait(first.task_id).status.value == "COMPLETED"
    patched = sdk.clusters.patch_cluster(cluster.cluster_id, M.PatchClusterRequest(
        description="patched", sample_size=120, algorithm_params={"n_clusters": 2, "verbose": 0},
        filters={"AND": [{"field": "group", "operator": "gte", "value": 0, "case_sensitive": False}]},
        llm_labeling=M.LLMLabelingInput(enabled=False)))
    assert isinstance(patched, M.ClusterModel)
    assert patched.vector_config.sample_size == 120 and patched.description == "patched"
    assert patched.vector_config.algorithm_params.actual_instance.n_clusters == 2
    assert patched.filters.to_dict()["AND"][0]["case_sensitive"] is False
    second = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    assert sdk.wait(second.task_id).status.value == "COMPLETED"
    after = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, second.additional_data["run_id"])
    assert (after.num_clusters, after.num_points) == (2, 120)
    # the run made before keeps the configuration it ran with
    before = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, first.additional_data["run_id"])
    assert (before.num_clusters, before.num_points) == (GROUPS, len(X))
    # layout_stability may change too, as the hosted API allows
    sdk.clusters.patch_cluster(cluster.cluster_id, M.PatchClusterRequest(layout_stability="none"))
    assert raw.get(f"/v1/clusters/{cluster.cluster_id}").json()["layout_stability"] == "none"
    with pytest.raises(UnprocessableEntityException) as caught:
        sdk.clusters.patch_cluster(cluster.cluster_id, M.PatchClusterRequest(algorithm_params={"n_clusters": 1}))
    assert "n_clusters" in caught.value.data.error.message
    assert sdk.clusters.get_cluster(cluster.cluster_id).algorithm_params == {"n_clusters": 2}


def test_full_run_reads_through_every_execution_method(sdk, corpus, cluster, full_run):
    _, X, truth = corpus
    run_id, task_id = full_run
    latest = sdk.executions.get_cluster_execution(cluster.cluster_id)
    by_run = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, run_id)
    assert isinstance(by_run, M.ClusterExecutionResult) and latest.run_id == run_id
    assert by_run.status == "completed" and by_run.num_clusters == GROUPS and by_run.num_points == len(X)
    assert sorted(c.num_members for c in by_run.centroids) == [PER_GROUP] * GROUPS
    assert (by_run.source_documents, by_run.vectors_retrieved, by_run.vectors_clustered) == (len(X),) * 3
    assert by_run.index_gap == 0 and by_run.pipeline_drop == 0 and by_run.input_reconciliation_ok is True
    assert by_run.metrics.noise_ratio == 0 and by_run.metrics.avg_cluster_size == PER_GROUP
    assert by_run.metrics.degenerate.actual_instance is False
    assert abs(by_run.metrics.cluster_size_entropy - 1.0986) < 1e-3  # ln 3: three equal clusters
    assert by_run.metrics.silhouette_score > 0.3
    listed = sdk.executions.list_cluster_executions(
        cluster.cluster_id, page_size=1, list_cluster_executions_request=M.ListClusterExecutionsRequest(
            filters=M.LogicalOperatorInput.from_dict({"AND": [{"field": "status", "operator": "eq",
                                                               "value": "completed"}]})))
    assert isinstance(listed, M.ListClusterExecutionsResponse)
    assert listed.results[0].status == "completed" and listed.pagination.page_size == 1
    assert listed.stats.executions_by_status.get("completed", 0) >= 1

    # the export (csv in the answer; parquet through a presigned S3 URL) is the partition
    csv = sdk.executions.export_cluster_execution_id_run_with_http_info(cluster.cluster_id, run_id, format="csv")
    frame = pl.read_csv(io.BytesIO(csv.raw_data))
    assignment = dict(zip(frame["document_id"], frame["cluster_id"]))
    assert len(assignment) == len(X) and truth_ari(assignment, truth) == 1.0
    # per centroid: the members' cosine to it (tight groups), and the members nearest it
    for c in by_run.centroids:
        assert isinstance(c, M.ClusterExecutionCentroid)
        assert 0.9 < c.mean_cosine_similarity <= 1.0 and c.min_cosine_similarity <= c.mean_cosine_similarity
        reps = [r.document_id for r in c.representative_ids]
        assert len(reps) == 5 and len(set(reps)) == 5
        assert {assignment[r] for r in reps} == {c.cluster_id}
    exported = sdk.executions.export_cluster_execution_id_run(cluster.cluster_id, run_id, format="parquet")
    parquet = pl.read_parquet(io.BytesIO(httpx.get(exported["url"], timeout=30).content))
    assert parquet.height == len(X) and set(parquet["cluster_id"]) == set(frame["cluster_id"])

    # labels and the run name, patched, show in later reads
    labels = sdk.executions.patch_execution_labels_clusters_id_run(
        cluster.cluster_id, run_id, M.PatchExecutionLabelsRequest(labels={"cl_0": "first group"}))
    assert labels.label_overrides == {"cl_0": "first group"}
    named = sdk.executions.patch_execution_run_name_clusters(
        cluster.cluster_id, run_id, M.PatchExecutionRunNameRequest(run_name="baseline"))
    assert named.run_name == "baseline"
    again = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, run_id)
    assert again.run_name == "baseline" and again.label_overrides == {"cl_0": "first group"}
    assert next(c.label for c in again.centroids if c.cluster_id == "cl_0") == "first group"
    exported = sdk.executions.export_cluster_execution_id_run_with_http_info(
        cluster.cluster_id, run_id, format="csv", cluster_label="first group")
    assert set(pl.read_csv(io.BytesIO(exported.raw_data))["cluster_id"]) == {"cl_0"}

    groups = sdk.clusters.get_cluster_groups(cluster.cluster_id)
    assert isinstance(groups, M.ClusterGroupsResponse) and groups.total_groups == GROUPS
    assert groups.total_documents == len(X) and {g.member_count for g in groups.groups} == {PER_GROUP}

    view = sdk.clusters.get_cluster_visualization(cluster.cluster_id, max_points=50)
    assert view["run_id"] == run_id and len(view["points"]) == 50 and view["pagination"]["total"] == len(X)
    compact = sdk.clusters.get_cluster_visualization(cluster.cluster_id, run_id=run_id, compact=True, max_points=5)
    assert compact["point_fields"][-2:] == ["cluster_id", "document_id"] and len(compact["points"][0]) == 4
    centres = sdk.clusters.get_cluster_visualization(cluster.cluster_id, centroids_only=True)
    assert centres["points"] == [] and sorted(c["num_members"] for c in centres["centroids"]) == [PER_GROUP] * 3

    tasks = sdk.tasks.list_tasks(list_tasks_request=M.ListTasksRequest(status=M.TaskStatusEnum.COMPLETED),
                                 page_size=100)
    assert isinstance(tasks, M.ListTasksResponse) and task_id in {t.task_id for t in tasks.results}
    assert all(t.status.value == "COMPLETED" for t in tasks.results)


def test_assign_and_composite_runs_with_every_override(sdk, corpus, cluster, full_run):
    _, X, truth = corpus
    run_id, _ = full_run
    task = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest(
        mode="assign", assignment_threshold=0.3, sample_size=len(X), vis_n_components=2, defer_visualization=True,
        filters=M.LogicalOperatorInput.from_dict({"AND": [{"field": "group", "operator": "in", "value": [0, 1]}]}),
        llm_labeling=M.LLMLabelingInput(enabled=False)))
    assert sdk.wait(task.task_id).status.value == "COMPLETED"
    assigned = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, task.additional_data["run_id"])
    assert assigned.mode == "assign" and assigned.num_points == 2 * PER_GROUP and assigned.status == "completed"
    # the assigned members' cosine to the source run's centroids; groups 0 and 1 only
    stats = [c for c in assigned.centroids if c.num_members]
    assert len(stats) == 2 and all(0.9 < c.mean_cosine_similarity <= 1.0 for c in stats)
    assert all(c.min_cosine_similarity >= 0.3 for c in stats)  # the threshold let nobody lower in
    assert all(len(c.representative_ids) == 5 for c in stats)
    assert {int(r.document_id.split("_")[1]) // PER_GROUP for c in stats for r in c.representative_ids} \
        <= {0, 1}

    second = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    assert sdk.wait(second.task_id).status.value == "COMPLETED"
    composite = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest(
        mode="composite", source_execution_ids=[run_id, second.additional_data["run_id"]]))
    assert sdk.wait(composite.task_id).status.value == "COMPLETED"
    grouped = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, composite.additional_data["run_id"])
    assert grouped.mode == "composite" and grouped.num_clusters == GROUPS  # same groups twice: one each
    assert sorted(grouped.source_execution_ids) == sorted([run_id, second.additional_data["run_id"]])


def test_cancel_and_kill(sdk, cluster, corpus):
    task = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    killed = sdk.tasks.kill_task(task.task_id)
    assert isinstance(killed, M.GenericDeleteResponse) and killed.success is True
    assert sdk.wait(task.task_id).status.value == "CANCELED"
    assert sdk.tasks.kill_task(task.task_id).success is True  # idempotent once canceled
    other = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    answer = sdk.executions.cancel_execution_clusters_id_run(cluster.cluster_id, other.additional_data["run_id"])
    assert answer["status"] == "CANCELED"
    read = sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, other.additional_data["run_id"])
    sdk.wait(other.task_id)
    assert sdk.executions.get_cluster_execution_by_run(
        cluster.cluster_id, other.additional_data["run_id"]).status in {"canceled", "completed"}
    assert read.status in {"pending", "processing", "canceled", "completed"}


def test_errors_parse_as_the_sdks_error_response(sdk, cluster):
    with pytest.raises(NotFoundException) as caught:
        sdk.clusters.get_cluster("clust_nope")
    assert caught.value.data.status == 404 and caught.value.data.error.type == "NotFoundError"
    with pytest.raises(NotFoundException):
        sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, "run_nope")
    with pytest.raises(NotFoundException):
        sdk.tasks.get_task("task_nope")
    with pytest.raises(UnprocessableEntityException) as caught:
        # the SDK lets 0 through; the execute contract's sample_size is >= 1
        sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest(sample_size=0))
    assert isinstance(caught.value.data, M.ErrorResponse) and caught.value.data.status == 422
    assert "sample_size" in caught.value.data.error.message
    assert '"detail"' in caught.value.body  # the contract's HTTPValidationError, in the same body
    with pytest.raises(BadRequestException) as caught:
        sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest(
            mode="composite", source_execution_ids=["run_a"]))
    assert caught.value.data.error.code == "too_few_sources"


def test_another_namespace_sees_nothing(sdk, other_sdk, cluster, full_run, corpus):
    collection_id, X, _ = corpus
    run_id, task_id = full_run
    calls = [
        lambda: other_sdk.clusters.get_cluster(cluster.cluster_id),
        lambda: other_sdk.clusters.patch_cluster(cluster.cluster_id, M.PatchClusterRequest(description="x")),
        lambda: other_sdk.clusters.delete_cluster(cluster.cluster_id),
        lambda: other_sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest()),
        lambda: other_sdk.clusters.get_cluster_groups(cluster.cluster_id),
        lambda: other_sdk.clusters.get_cluster_visualization(cluster.cluster_id),
        lambda: other_sdk.executions.get_cluster_execution(cluster.cluster_id),
        lambda: other_sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, run_id),
        lambda: other_sdk.executions.export_cluster_execution_id_run(cluster.cluster_id, run_id, format="csv"),
        lambda: other_sdk.executions.patch_execution_labels_clusters_id_run(
            cluster.cluster_id, run_id, M.PatchExecutionLabelsRequest(labels={"cl_0": "x"})),
        lambda: other_sdk.executions.patch_execution_run_name_clusters(
            cluster.cluster_id, run_id, M.PatchExecutionRunNameRequest(run_name="x")),
        lambda: other_sdk.tasks.get_task(task_id),
        lambda: other_sdk.tasks.kill_task(task_id),
        lambda: other_sdk.byo.upsert_documents_byo_namespaces("sdk-other", M.BYOUpsertRequest.from_dict({
            "collection_id": collection_id, "documents": [{"document_id": "x", "vectors": {"text": [0.0] * 32}}]})),
        lambda: other_sdk.byo.upsert_documents_byo_namespaces(NAMESPACE, M.BYOUpsertRequest.from_dict({
            "collection_id": collection_id, "documents": [{"document_id": "x", "vectors": {"text": [0.0] * 32}}]})),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 404 and caught.value.data.error.type == "NotFoundError", (i, caught.value.body)
    assert other_sdk.clusters.list_clusters_get().total_count == 0
    assert other_sdk.tasks.list_tasks().pagination.total == 0
    # nothing of the namespace was changed by those calls
    assert sdk.executions.get_cluster_execution_by_run(cluster.cluster_id, run_id).num_points == len(X)


def logical(tree: dict) -> M.LogicalOperatorInput:
    return M.LogicalOperatorInput.from_dict(tree)


def cond(field: str, operator: str, value, **extra) -> dict:
    return {"field": field, "operator": operator, "value": value, "case_sensitive": False, **extra}


def test_list_filters_nest_and_or_not_with_ranges_and_search(sdk, raw, corpus, stack, sdk_keys):
    collection_id, X, _ = corpus
    alpha = sdk.clusters.create_cluster(kmeans_request(collection_id, "sdk filter alpha"))
    sdk.clusters.patch_cluster(alpha.cluster_id, M.PatchClusterRequest(description="the first one"))
    beta = sdk.clusters.create_cluster(kmeans_request(collection_id, "sdk filter beta"))
    sdk.clusters.patch_cluster(beta.cluster_id, M.PatchClusterRequest(description="the SECOND one"))
    # the same name in another namespace never matches here
    other = httpx.Client(base_url=stack.url, timeout=30, headers={
        "X-Namespace": "sdk-other", "Authorization": f"Bearer {sdk_keys['sdk-other']}"})
    other_collection = other.post("/v1/collections", json={"collection_name": "sdk-other-groups",
                                                           "embeddings": {"text": X.shape[1]}}).json()["collection_id"]
    r = other.post("/v1/clusters", json={"collection_ids": [other_collection], "cluster_name": "sdk filter alpha",
                                         "clustering_method": "kmeans", "algorithm_params": {"n_clusters": 2}})
    assert r.status_code == 200, r.text

    def names(tree=None, **body) -> list[str]:
        listed = sdk.clusters.list_clusters(list_clusters_request=M.ListClustersRequest(
            filters=logical(tree) if tree else None, sort=M.SortOption(field="cluster_name", direction="asc"),
            **body))
        assert isinstance(listed, M.ListClustersResponse) and listed.total_count == len(listed.results)
        return [c.cluster_name for c in listed.results]

    ours = cond("cluster_name", "starts_with", "SDK FILTER")
    assert names({"OR": [cond("cluster_name", "eq", "sdk filter alpha"), cond("cluster_name", "eq", "sdk filter beta")]}) \
        == ["sdk filter alpha", "sdk filter beta"]
    assert names({"AND": [ours], "NOT": [cond("cluster_name", "eq", "sdk filter alpha")]}) == ["sdk filter beta"]
    assert names({"AND": [cond("cluster_name", "in", ["sdk filter alpha", "nope"])]}) == ["sdk filter alpha"]
    assert names({"AND": [ours, cond("cluster_name", "eq", "SDK Filter Alpha", case_sensitive=True)]}) == []
    created = raw.get(f"/v1/clusters/{alpha.cluster_id}").json()["created_at"]
    assert names({"AND": [ours, cond("created_at", "gt", created)]}) == ["sdk filter beta"]
    assert names({"AND": [ours, cond("created_at", "lte", created), cond("collection_id", "eq", collection_id)]}) \
        == ["sdk filter alpha"]
    assert names(search="second") == ["sdk filter beta"]  # the description, whatever the case
    assert names({"AND": [ours]}, search="FIRST") == ["sdk filter alpha"]
    assert other.post("/v1/clusters/list", json={"filters": {"AND": [ours]}}).json()["total_count"] == 1
    other.close()

    for tree, field, allowed in (({"AND": [cond("owner", "eq", "x")]}, "owner", "cluster_name"),
                                 ({"OR": [{"NOT": [cond("collection_id", "gt", "a")]}]}, "collection_id", "contains")):
        with pytest.raises(BadRequestException) as caught:
            sdk.clusters.list_clusters(list_clusters_request=M.ListClustersRequest(filters=logical(tree)))
        error = caught.value.data
        assert isinstance(error, M.ErrorResponse) and error.status == 400 and error.error.code == "invalid_filter"
        assert field in error.error.message and error.error.details["field"] == field
        assert allowed in error.error.details["allowed"]


def test_execution_and_task_lists_filter_and_search(sdk, other_sdk, raw, corpus):
    collection_id, X, _ = corpus
    cluster = sdk.clusters.create_cluster(kmeans_request(collection_id, "sdk run filters"))
    full = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest())
    assert sdk.wait(full.task_id).status.value == "COMPLETED"
    before_assign = datetime.now(timezone.utc)
    assign = sdk.clusters.execute_clustering_clusters(cluster.cluster_id, M.ExecuteClusterByIdRequest(
        mode="assign", filters=logical({"AND": [{"field": "group", "operator": "eq", "value": 0}]})))
    assert sdk.wait(assign.task_id).status.value == "COMPLETED"
    full_run, assign_run = full.additional_data["run_id"], assign.additional_data["run_id"]
    sdk.executions.patch_execution_run_name_clusters(cluster.cluster_id, full_run,
                                                     M.PatchExecutionRunNameRequest(run_name="Baseline run"))

    def runs(tree=None, search=None) -> list[str]:
        listed = sdk.executions.list_cluster_executions(
            cluster.cluster_id, list_cluster_executions_request=M.ListClusterExecutionsRequest(
                filters=logical(tree) if tree else None, search=search,
                sort=M.SortOption(field="created_at", direction="asc")))
        assert listed.total_count == len(listed.results)
        assert sum(listed.stats.executions_by_status.values()) == listed.total_count
        return [r.run_id for r in listed.results]

    assert runs() == [full_run, assign_run]
    assert runs({"OR": [cond("status", "eq", "failed"), cond("mode", "eq", "assign")]}) == [assign_run]
    assert runs({"NOT": [cond("mode", "eq", "assign")]}) == [full_run]
    assert runs({"AND": [cond("status", "in", ["completed", "canceled"])]}) == [full_run, assign_run]
    assert runs({"AND": [cond("num_points", "gte", len(X) // 2)]}) == [full_run]
    assert runs({"AND": [cond("num_points", "lt", len(X) // 2), cond("num_points", "gt", 0)]}) == [assign_run]
    assert runs({"AND": [cond("metrics.silhouette_score", "gt", 0.3)]}) == [full_run]
    assert runs(search="BASELINE") == [full_run]
    assert runs(search=assign_run[-6:]) == [assign_run]
    with pytest.raises(BadRequestException) as caught:
        runs({"AND": [cond("status", "contains", "comp")]})
    assert caught.value.data.error.details == {"field": "status", "allowed": ["eq", "ne", "in", "nin"]}

    def tasks(api, tree=None, search=None) -> list[str]:
        listed = api.tasks.list_tasks(page_size=100, list_tasks_request=M.ListTasksRequest(
            filters=logical(tree) if tree else None, search=search,
            sort=M.SortOption(field="created_at", direction="asc")))
        return [t.task_id for t in listed.results]

    ours = cond("run_id", "in", [full_run, assign_run])
    assert tasks(sdk, {"AND": [ours]}) == [full.task_id, assign.task_id]
    assert tasks(sdk, {"OR": [cond("task_id", "eq", assign.task_id), cond("task_id", "eq", "task_nope")]}) \
        == [assign.task_id]
    assert tasks(sdk, {"AND": [ours], "NOT": [cond("status", "eq", "completed")]}) == []
    assert tasks(sdk, {"AND": [ours, cond("created_at", "gte", before_assign.isoformat())]}) == [assign.task_id]
    assert tasks(sdk, {"AND": [ours, cond("created_at", "lt", before_assign.isoformat())]}) == [full.task_id]
    assert tasks(sdk, search=full.task_id.upper()) == [full.task_id]
    assert tasks(other_sdk, {"AND": [ours]}) == [] and tasks(other_sdk, search=full.task_id) == []
    with pytest.raises(BadRequestException) as caught:
        tasks(sdk, {"AND": [cond("owner", "eq", "me")]})
    assert isinstance(caught.value.data, M.ErrorResponse) and "owner" in caught.value.data.error.message
    # filters and search are honoured, so no longer named as ignored
    for route in ("/v1/tasks/list", f"/v1/clusters/{cluster.cluster_id}/executions/list"):
        answer = raw.post(route, json={"filters": {"AND": [ours]}, "search": "task"})
        assert answer.status_code == 200 and answer.json()["warnings"] == [], answer.text
