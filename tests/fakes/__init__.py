"""In-memory fakes of the ports, for unit tests of pure logic (never for integration
or e2e tests, which use the real servers)."""
from __future__ import annotations

import io

import polars as pl


class MemoryObjectStore:
    """The `ObjectStore` port over a dict of bytes; counts what it serves."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.downloads = 0
        self.downloaded_bytes = 0

    def put_parquet(self, key: str, frame: pl.DataFrame) -> int:
        buf = io.BytesIO()
        frame.write_parquet(buf)
        self.objects[key] = buf.getvalue()
        return len(self.objects[key])

    def get_parquet(self, key: str, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self._get(key)), columns=columns)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def delete_prefix(self, prefix: str) -> int:
        gone = [k for k in self.objects if k.startswith(prefix)]
        for k in gone:
            del self.objects[k]
        return len(gone)

    def download(self, key: str, path: str) -> None:
        data = self._get(key)
        self.downloads += 1
        self.downloaded_bytes += len(data)
        with open(path, "wb") as f:
            f.write(data)

    def upload(self, key: str, path: str) -> int:
        with open(path, "rb") as f:
            self.objects[key] = f.read()
        return len(self.objects[key])

    def ends(self, key: str) -> tuple[bytes | None, bytes]:
        if key not in self.objects:
            return None, b""
        data = self.objects[key]
        return data[:4], data[-4:]

    def _get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise FileNotFoundError(key) from None


