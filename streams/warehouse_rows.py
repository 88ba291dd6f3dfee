"""The stitching stage's ClickHouse rows: inserted on one thread, retried until they succeed."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.warehouse import Warehouse
from streams.engine import Output

log = logging.getLogger(__name__)


class RowWriter:
    """ClickHouse inserts on one thread, retried with backoff until they succeed."""

    def __init__(self, open_warehouse: Any) -> None:
        self._open = open_warehouse
        self._warehouse: Warehouse | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="identity-warehouse")

    def _insert(self, out: Output) -> None:
        if self._warehouse is None:
            self._warehouse = self._open()
        try:
            for table, rows in (
                ("identities", out.identities),
                ("sessions", out.sessions),
                ("device_sessions", out.device_sessions),
            ):
                # As JSON the server parses: the driver encodes columns in Python,
                # which was most of this thread's time, holding the GIL.
                self._warehouse.insert_dicts(table, rows)
            if out.erased_persons or out.erased_devices:
                self._erase(self._warehouse, out)
        except Exception:
            self._warehouse.close()
            self._warehouse = None
            raise

    @staticmethod
    def _erase(warehouse: Warehouse, out: Output) -> None:
        """Delete the erased persons' rows (idempotent; `[""]` never matches, and keeps an
        empty list from becoming Array(Nothing), which ClickHouse 18.16 refuses)."""
        params = {
            "persons": out.erased_persons or [""],
            "devices": out.erased_devices or [""],
            "ids": out.erased_ids or [""],
        }
        db = warehouse.database
        for table, where in (
            (
                "identities",
                "has(%(ids)s, concat(id_type, ':', id_value)) OR has(%(persons)s, person_id)",
            ),
            ("sessions", "has(%(persons)s, person_id) OR hasAny(devices, %(devices)s)"),
            ("device_sessions", "has(%(devices)s, device_id)"),
        ):
            warehouse.execute(f"ALTER TABLE {db}.{table} DELETE WHERE {where}", params)

    async def write(self, out: Output) -> None:
        delay = 0.2
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, self._insert, out)
                return
            except Exception as exc:
                log.warning("identity rows not written (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        if self._warehouse is not None:
            self._executor.submit(self._warehouse.close).result(timeout=30)
        self._executor.shutdown(wait=True)
