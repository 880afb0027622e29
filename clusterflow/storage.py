"""The object store port and its S3 adapter (the `minio` client).

Per-run artifacts live under `<namespace>/<cluster_id>/<run_id>/<name>.parquet`.
"""
from __future__ import annotations

import io
from datetime import timedelta
import os
import tempfile
from typing import Protocol

import polars as pl
from minio import Minio
from minio.error import S3Error

from clusterflow.settings import Settings


def artifact_key(namespace: str, cluster_id: str, run_id: str, name: str) -> str:
    return run_file_key(namespace, cluster_id, run_id, f"{name}.parquet")


def run_file_key(namespace: str, cluster_id: str, run_id: str, filename: str) -> str:
    """Where a run's file lives: beside its parquet artifacts, deleted with its cluster."""
    return f"{namespace}/{cluster_id}/{run_id}/{filename}"


class ObjectStore(Protocol):
    def put_parquet(self, key: str, frame: pl.DataFrame) -> int: ...
    def get_parquet(self, key: str, columns: list[str] | None = None) -> pl.DataFrame: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> int: ...
    # Whole files, for what is streamed row group by row group rather than held as a frame.
    def download(self, key: str, path: str) -> None: ...
    def upload(self, key: str, path: str) -> int: ...
    # The first and last 4 bytes (what says whether it is parquet); None when absent.
    def ends(self, key: str) -> tuple[bytes | None, bytes]: ...
    # A time-limited GET URL of an object (execution exports).
    def presigned_url(self, key: str, expires_s: int) -> str: ...
    # Small objects whole (a Ray job's spec and result, JSON); get_bytes of a missing key
    # raises FileNotFoundError.
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int: ...
    def get_bytes(self, key: str) -> bytes: ...


class S3ObjectStore:
    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3ObjectStore":
        client = Minio(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        return cls(client, settings.s3_bucket)

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(bucket_name=self.bucket):
            self.client.make_bucket(bucket_name=self.bucket)

    def put_parquet(self, key: str, frame: pl.DataFrame) -> int:
        buf = io.BytesIO()
        # zstd: vectors compress poorly, ids and labels well; it is cheap either way.
        frame.write_parquet(buf, compression="zstd", statistics=False)
        size = buf.tell()
        buf.seek(0)
        self.client.put_object(
            bucket_name=self.bucket,
            object_name=key,
            data=buf,
            length=size,
            content_type="application/vnd.apache.parquet",
        )
        return size

    def get_parquet(self, key: str, columns: list[str] | None = None) -> pl.DataFrame:
        # Through a temporary file, not bytes in memory: the encoded file and the decoded
        # frame never sit in the process together (it matters for 1M x 384 datasets).
        with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
            self.client.fget_object(bucket_name=self.bucket, object_name=key, file_path=tmp.name)
            return pl.read_parquet(tmp.name, columns=columns)

    def download(self, key: str, path: str) -> None:
        self.client.fget_object(bucket_name=self.bucket, object_name=key, file_path=path)

    def upload(self, key: str, path: str) -> int:
        self.client.fput_object(bucket_name=self.bucket, object_name=key, file_path=path,
                                content_type="application/vnd.apache.parquet")
        return os.path.getsize(path)

    def ends(self, key: str) -> tuple[bytes | None, bytes]:
        try:
            size = self.client.stat_object(bucket_name=self.bucket, object_name=key).size
        except S3Error as exc:
            if _not_found(exc):
                return None, b""
            raise
        if size < 8:
            return b"", b""
        parts = []
        for offset in (0, size - 4):
            response = self.client.get_object(bucket_name=self.bucket, object_name=key, offset=offset, length=4)
            try:
                parts.append(response.read())
            finally:
                response.close()
                response.release_conn()
        return parts[0], parts[1]

    def presigned_url(self, key: str, expires_s: int) -> str:
        return self.client.presigned_get_object(bucket_name=self.bucket, object_name=key,
                                                expires=timedelta(seconds=expires_s))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> int:
        self.client.put_object(bucket_name=self.bucket, object_name=key, data=io.BytesIO(data), length=len(data),
                               content_type=content_type)
        return len(data)

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(bucket_name=self.bucket, object_name=key)
        except S3Error as exc:
            if _not_found(exc):
                raise FileNotFoundError(key) from exc
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(bucket_name=self.bucket, object_name=key)
            return True
        except S3Error as exc:
            if _not_found(exc):
                return False
            raise

    def delete_prefix(self, prefix: str) -> int:
        names = [
            o.object_name
            for o in self.client.list_objects(bucket_name=self.bucket, prefix=prefix, recursive=True)
        ]
        for name in names:
            self.client.remove_object(bucket_name=self.bucket, object_name=name)
        return len(names)


def _not_found(exc: S3Error) -> bool:
    return exc.code in ("NoSuchKey", "NoSuchObject", "NotFound")
