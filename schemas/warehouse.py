"""One small interface over the two warehouses: a ClickHouse server and embedded chdb.

`clickhouse://[user[:password]@]host:port/db[?http_port=8123]` talks to a server through
clickhouse-driver (and its HTTP port for raw JSON inserts);
`chdb:///path/to/dir[?database=db]` runs the current ClickHouse engine in-process.
Queries take `%(name)s` placeholders, escaped by clickhouse-driver's own rules, so no SQL is
ever built from user input by string formatting.
"""

from __future__ import annotations

import http.client
import re
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import orjson

Row = Mapping[str, Any]


class WarehouseError(Exception):
    """Base class of warehouse failures."""


class RowsRejectedError(WarehouseError):
    """The warehouse refused the data itself: retrying the same rows cannot succeed."""


# ClickHouse error codes that mean "this data is wrong", not "the server is unwell".
PERMANENT_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349})
_CODE = re.compile(r"Code: (\d+)")


def _is_permanent(message: str) -> bool:
    match = _CODE.search(message)
    return bool(match) and int(match.group(1)) in PERMANENT_CODES


class Warehouse(ABC):
    database: str

    @abstractmethod
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]: ...

    @abstractmethod
    def insert(self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Row]) -> None:
        """Insert rows (dicts) into `database.table`; DateTime values are epoch seconds."""

    def insert_json(self, table: str, lines: Sequence[bytes]) -> None:
        """Insert JSON objects, one per line, as they are: the server parses them
        (JSONEachRow, unknown keys skipped). The sink's fast path: no per-row Python work."""
        if lines:
            self._insert_each_row(table, b"\n".join(lines))

    def insert_dicts(self, table: str, rows: Sequence[Row]) -> None:
        """Insert dicts as JSON the server parses (JSONEachRow, unknown keys skipped).

        The rows are encoded as one array and sent without its brackets: JSONEachRow reads
        objects separated by commas as it reads lines (ClickHouse 18.16 and current alike,
        tests/integration/test_warehouse.py). One `orjson.dumps` per row cost four to ten
        times more: each output is a buffer of its own, 4 KiB at least.
        """
        if rows:
            self._insert_each_row(table, orjson.dumps(list(rows))[1:-1])

    @abstractmethod
    def _insert_each_row(self, table: str, body: bytes) -> None:
        """Send `body`, JSON objects separated by newlines or commas, as JSONEachRow."""

    @abstractmethod
    def version(self) -> tuple[int, ...]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


class ClickHouseWarehouse(Warehouse):
    def __init__(
        self, host: str, port: int, database: str, user: str, password: str, http_port: int = 8123
    ) -> None:
        from clickhouse_driver import Client

        self.database = database
        self._http_address = (host, http_port)
        self._http: http.client.HTTPConnection | None = None
        self._auth = {"X-ClickHouse-User": user, "X-ClickHouse-Key": password}
        self._client = Client(
            host=host, port=port, user=user, password=password, settings={"use_numpy": False}
        )
        self._lock = threading.Lock()  # a driver connection serves one query at a time

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._client.execute(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        with self._lock:
            return [tuple(r) for r in self._client.execute(sql, params)]

    def insert(self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Row]) -> None:
        names = [name for name, _ in columns]
        # Column by column, as the driver writes them: rows would be turned into tuples here
        # and transposed there, a Python step per value twice (a fifth of a stage's time).
        data = [
            [_datetime(row[name]) for row in rows]
            if kind == "DateTime"
            else [row[name] for row in rows]
            for name, kind in columns
        ]
        sql = f"INSERT INTO {self.database}.{table} ({', '.join(names)}) VALUES"
        from clickhouse_driver.errors import ServerException, TypeMismatchError

        with self._lock:
            try:
                self._client.execute(sql, data, columnar=True)
            except (TypeError, ValueError, struct.error, OverflowError, TypeMismatchError) as exc:
                # The driver serialises client-side: a wrong Python type never reaches the server.
                raise RowsRejectedError(f"{type(exc).__name__}: {exc}") from exc
            except ServerException as exc:
                if exc.code in PERMANENT_CODES:
                    raise RowsRejectedError(str(exc)) from exc
                raise

    def _insert_each_row(self, table: str, body: bytes) -> None:
        # The native protocol carries only typed columns; raw rows go over HTTP.
        query = urlencode(
            {
                "query": f"INSERT INTO {self.database}.{table} FORMAT JSONEachRow",
                "input_format_skip_unknown_fields": 1,
            }
        )
        with self._lock:
            try:
                response, text = self._post(query, body)
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # The server closes a kept-alive connection idle for longer than its
                # keep_alive_timeout (3 s by default): once, on a new connection. The rows
                # are the same either way (the callers' inserts are idempotent).
                response, text = self._post(query, body)
        if response.status != 200:
            message = text.decode("utf-8", "replace")[:2000]
            kind = RowsRejectedError if _is_permanent(message) else WarehouseError
            raise kind(message)

    def _post(self, query: str, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        if self._http is None:
            self._http = http.client.HTTPConnection(*self._http_address, timeout=60)
        try:
            self._http.request("POST", f"/?{query}", body=body, headers=self._auth)
            response = self._http.getresponse()
            return response, response.read()
        except (OSError, http.client.HTTPException):
            self._http.close()
            self._http = None
            raise

    def version(self) -> tuple[int, ...]:
        return parse_version(self.query("SELECT version()")[0][0])

    def close(self) -> None:
        self._client.disconnect()
        if self._http is not None:
            self._http.close()


def _datetime(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class _EscapeContext:
    """What clickhouse-driver's escaping needs to know about the server: its time zone."""

    class server_info:  # noqa: N801 - mirrors the driver's attribute name
        @staticmethod
        def get_timezone() -> str:
            return "UTC"

    client_settings: ClassVar[dict[str, bool]] = {"server_side_params": False}


class _ChdbSession:
    """The process's one embedded engine: chdb runs a single server per process, on one
    data directory. Every ChdbWarehouse of the process shares it (the sink's, the identity
    stage's); the last one to close closes it. With a session each, a worker whose sink had
    closed its own while the identity stage's stayed open died at exit with SIGSEGV."""

    _open: ClassVar[dict[str, _ChdbSession]] = {}
    _guard = threading.Lock()

    def __init__(self, path: str) -> None:
        from chdb import session

        self.path = path
        self.session = session.Session(path)
        self.lock = threading.Lock()  # one query at a time, from whichever thread
        self.users = 0

    @classmethod
    def acquire(cls, path: str) -> _ChdbSession:
        with cls._guard:
            shared = cls._open.get(path)
            if shared is None:
                shared = cls._open[path] = cls(path)
            shared.users += 1
            return shared

    def release(self) -> None:
        with self._guard:
            self.users -= 1
            if self.users == 0:
                del self._open[self.path]
                with self.lock:
                    self.session.close()


class ChdbWarehouse(Warehouse):
    """The embedded engine. One process holds a data directory at a time; the warehouses a
    process opens on it share one session."""

    def __init__(self, path: str, database: str) -> None:
        self.database = database
        self._shared: _ChdbSession | None = _ChdbSession.acquire(path)
        self._session = self._shared.session
        self._lock = self._shared.lock

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except Exception as exc:  # chdb raises plain RuntimeError
                kind = RowsRejectedError if _is_permanent(str(exc)) else WarehouseError
                raise kind(str(exc)) from exc

    @staticmethod
    def _bind(sql: str, params: Mapping[str, Any] | None) -> str:
        if not params:
            return sql
        from clickhouse_driver.util.escape import escape_params

        return sql % escape_params(params, _EscapeContext)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(self._bind(sql, params))

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        result = self._run(self._bind(sql, params), "JSONCompact")
        raw = result.bytes()
        if not raw:
            return []
        return [tuple(r) for r in orjson.loads(raw)["data"]]

    def insert(self, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Row]) -> None:
        names = [name for name, _ in columns]
        self.insert_dicts(table, [{n: row[n] for n in names} for row in rows])

    def _insert_each_row(self, table: str, body: bytes) -> None:
        # The rows travel as data (JSON parsed by the engine), never as SQL text.
        head = (
            f"INSERT INTO {self.database}.{table} "
            "SETTINGS input_format_skip_unknown_fields = 1 FORMAT JSONEachRow\n"
        )
        self._run(head + body.decode())

    def version(self) -> tuple[int, ...]:
        return parse_version(self.query("SELECT version()")[0][0])

    def close(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            shared.release()


def connect(url: str, password: str | None = None) -> Warehouse:
    parts = urlsplit(url)
    if parts.scheme == "clickhouse":
        database = parts.path.strip("/") or "trackpipe"
        return ClickHouseWarehouse(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 9000,
            database=database,
            user=unquote(parts.username or "default"),
            password=password if password is not None else unquote(parts.password or ""),
            http_port=int(parse_qs(parts.query).get("http_port", ["8123"])[0]),
        )
    if parts.scheme == "chdb":
        database = parse_qs(parts.query).get("database", ["trackpipe"])[0]
        return ChdbWarehouse(parts.path, database)
    raise WarehouseError(f"unsupported warehouse URL scheme {parts.scheme!r} in {url!r}")
