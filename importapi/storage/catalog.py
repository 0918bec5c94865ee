"""The catalog: clients, hashed API keys, the owner's settings and the activity window.

Written once, as SQL both backends run, over a ``CatalogDB``: the few things a backend
does its own way (how to run a statement and a write transaction, how times are stored,
how other processes learn that keys changed). SQLite keeps the catalog in
``catalog.sqlite3`` and the activity window in ``activity.sqlite3``; PostgreSQL keeps both
in the schema ``importapi``.

Every method blocks on the database, so callers on the event loop run them in a thread;
the exceptions are ``version``, which is meant for the request path (it never waits on the
database), and the ``Activity`` and ``KeyInfo`` records, which are plain data.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import msgspec

from importapi import apikeys
from importapi.errors import BadRequest, ClientExists, Code, Detail, NotFound
from importapi.storage.base import Activity, CatalogDump, ClientInfo, KeyInfo, StoredKey, utcnow

Run = Callable[..., list[tuple[Any, ...]]]
"""``run(sql, params=(), many=False)``: a statement's rows (``many``: params is a list of rows)."""

_KEY_COLUMNS = "key_id, client_id, created_at, last_used_at, revoked_at"
_ACTIVITY_COLUMNS = (
    "at, request_id, route, client_id, key_id, table_name, points, inserted, replaced,"
    " sandbox, status, reasons, stale"
)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class CatalogDB(abc.ABC):
    """What a backend gives the catalog. SQL is written with ``?`` placeholders and table
    names relative to ``prefix``."""

    prefix = ""

    @abc.abstractmethod
    def run(
        self, sql: str, params: Sequence[Any] = (), *, many: bool = False, activity: bool = False
    ) -> list[tuple[Any, ...]]:
        """One statement in a transaction of its own (``activity``: on the activity window's
        tables); its rows."""

    @abc.abstractmethod
    def transaction(self, *, activity: bool = False) -> AbstractContextManager[Run]:
        """A write transaction that no other writer of the catalog runs beside."""

    @abc.abstractmethod
    def version(self) -> int:
        """A number that changes whenever any process changes clients or keys. Never waits
        on the database: it may be called on the event loop for every request."""

    @abc.abstractmethod
    def announce(self, run: Run) -> None:
        """Inside a write transaction: tell every process that clients or keys change."""

    def stamp(self, iso: str | None) -> Any:
        """A time as the database stores it (from the ISO text the catalog deals in)."""
        return iso

    def iso(self, value: Any) -> str | None:
        """A stored time as ISO text (``2026-05-01T14:22:05Z``)."""
        return None if value is None else str(value)

    @abc.abstractmethod
    def close(self) -> None: ...


class Catalog:
    def __init__(self, db: CatalogDB) -> None:
        self.db = db
        p = db.prefix
        self._clients, self._keys, self._settings, self._activity = (
            f"{p}clients",
            f"{p}api_keys",
            f"{p}settings",
            f"{p}activity",
        )

    # -- clients ----------------------------------------------------------
    def create_client(
        self, name: str, client_id: int | None = None, *, make_space: Callable[[int], None] | None = None
    ) -> ClientInfo:
        """A new client (the next free id unless one is given; a taken one is ClientExists).
        ``make_space`` prepares the client's warehouse before the client is committed."""
        now = utcnow()
        with self.db.transaction() as run:
            if client_id is None:
                client_id = int(run(f"SELECT coalesce(max(client_id), 0) + 1 FROM {self._clients}")[0][0])
            elif run(f"SELECT 1 FROM {self._clients} WHERE client_id = ?", (client_id,)):
                raise ClientExists(f"client {client_id} already exists")
            run(
                f"INSERT INTO {self._clients} (client_id, name, created_at) VALUES (?, ?, ?)",
                (client_id, name, self.db.stamp(now)),
            )
            if make_space is not None:
                make_space(client_id)
            self.db.announce(run)
        return ClientInfo(client_id, name, now)

    def _client(self, row: Sequence[Any]) -> ClientInfo:
        return ClientInfo(int(row[0]), row[1], self.db.iso(row[2]) or "")

    def get_client(self, client_id: int) -> ClientInfo | None:
        rows = self.db.run(
            f"SELECT client_id, name, created_at FROM {self._clients} WHERE client_id = ?", (client_id,)
        )
        return self._client(rows[0]) if rows else None

    def list_clients(self) -> list[ClientInfo]:
        rows = self.db.run(f"SELECT client_id, name, created_at FROM {self._clients} ORDER BY client_id")
        return [self._client(r) for r in rows]

    def require_client(self, client_id: int) -> ClientInfo:
        client = self.get_client(client_id)
        if client is None:
            raise NotFound(f"client {client_id} does not exist")
        return client

    # -- keys ---------------------------------------------------------------
    def _key(self, row: Sequence[Any]) -> KeyInfo:
        iso = self.db.iso
        return KeyInfo(row[0], int(row[1]), iso(row[2]) or "", iso(row[3]), iso(row[4]))

    def create_key(self, client_id: int) -> tuple[KeyInfo, str]:
        """A new key for the client: its record and the key itself, shown once."""
        self.require_client(client_id)
        key = apikeys.new_key()
        now = utcnow()
        with self.db.transaction() as run:
            run(
                f"INSERT INTO {self._keys} (key_id, client_id, digest, created_at) VALUES (?, ?, ?, ?)",
                (key.key_id, client_id, key.digest, self.db.stamp(now)),
            )
            self.db.announce(run)
        return KeyInfo(key.key_id, client_id, now, None, None), key.api_key

    def list_keys(self, client_id: int) -> list[KeyInfo]:
        self.require_client(client_id)
        rows = self.db.run(
            f"SELECT {_KEY_COLUMNS} FROM {self._keys} WHERE client_id = ? ORDER BY created_at, key_id",
            (client_id,),
        )
        return [self._key(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyInfo:
        with self.db.transaction() as run:
            rows = run(
                f"UPDATE {self._keys} SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?"
                f" RETURNING {_KEY_COLUMNS}",
                (self.db.stamp(utcnow()), key_id),
            )
            if not rows:
                raise NotFound(f"key {key_id!r} does not exist")
            self.db.announce(run)
        return self._key(rows[0])

    def find_key(self, key_id: str) -> StoredKey | None:
        rows = self.db.run(
            f"SELECT key_id, client_id, digest, revoked_at IS NOT NULL FROM {self._keys} WHERE key_id = ?",
            (key_id,),
        )
        return StoredKey(rows[0][0], int(rows[0][1]), bytes(rows[0][2]), bool(rows[0][3])) if rows else None

    def touch_keys(self, last_used: dict[str, str]) -> None:
        """Record when keys were last used (written in batches, off the request path)."""
        with self.db.transaction() as run:
            run(
                f"UPDATE {self._keys} SET last_used_at = ? WHERE key_id = ?",
                [(self.db.stamp(ts), key_id) for key_id, ts in last_used.items()],
                many=True,
            )

    def version(self) -> int:
        """Changes whenever any process changes clients or keys; cheap, for the request path."""
        return self.db.version()

    # -- the owner's settings -------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        """One of the warehouse's own settings (the owner's password hash, the session secret)."""
        rows = self.db.run(f"SELECT value FROM {self._settings} WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_setting(self, name: str, value: str, *, replace: bool = True) -> str:
        """Store a setting and return the value now stored; ``replace=False`` keeps an
        existing value, so processes racing to create one agree on it."""
        action = "DO UPDATE SET value = excluded.value" if replace else "DO NOTHING"
        self.db.run(
            f"INSERT INTO {self._settings} (name, value) VALUES (?, ?) ON CONFLICT (name) {action}",
            (name, value),
        )
        stored = self.get_setting(name)
        assert stored is not None
        return stored

    # -- the activity window ------------------------------------------------
    def record_activity(self, events: Sequence[Activity], keep: int) -> None:
        """Append finished requests, then keep only the newest ``keep`` pushes and the
        newest ``keep`` refusals (``Activity.refused``)."""
        rows = [
            (
                e.refused,
                e.at,
                e.request_id,
                e.route,
                e.client_id,
                e.key_id,
                e.table,
                e.points,
                e.inserted,
                e.replaced,
                e.sandbox,
                e.status,
                _encode([d.as_dict() for d in e.details]).decode(),
                e.stale,
            )
            for e in events
        ]
        t = self._activity
        prune = (
            f"DELETE FROM {t} WHERE refused = ? AND seq <= (SELECT seq FROM {t}"
            " WHERE refused = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"
        )
        with self.db.transaction(activity=True) as run:
            run(
                f"INSERT INTO {t} (refused, {_ACTIVITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
                many=True,
            )
            for refused in {bool(r[0]) for r in rows}:
                run(prune, (refused, refused, keep))

    def recent_activity(self, limit: int, *, refused: bool) -> list[Activity]:
        """The newest recorded pushes, or refusals, newest first."""
        rows = self.db.run(
            f"SELECT {_ACTIVITY_COLUMNS} FROM {self._activity} WHERE refused = ? ORDER BY seq DESC LIMIT ?",
            (refused, limit),
            activity=True,
        )
        # at, request_id, route, client_id, key_id, table, points, inserted, replaced | sandbox, status, reasons,
        # stale
        return [Activity(*(*r[:9], bool(r[9]), r[10], tuple(_details(r[11])), r[12] or 0)) for r in rows]

    # -- copying a warehouse --------------------------------------------------
    def export(self) -> CatalogDump:
        """Every client, key and setting, with their ids and times."""
        keys = self.db.run(f"SELECT {_KEY_COLUMNS}, digest FROM {self._keys} ORDER BY created_at, key_id")
        settings = self.db.run(f"SELECT name, value FROM {self._settings} ORDER BY name")
        return CatalogDump(
            self.list_clients(),
            [(self._key(r), bytes(r[5])) for r in keys],
            {str(n): str(v) for n, v in settings},
        )

    def restore(self, dump: CatalogDump, make_space: Callable[[int], None]) -> None:
        """Recreate an exported catalog in a warehouse that has no clients yet."""
        stamp = self.db.stamp
        with self.db.transaction() as run:
            if run(f"SELECT 1 FROM {self._clients} LIMIT 1"):
                raise BadRequest(
                    "the target warehouse already has clients; copy needs an empty one",
                    code=Code.WAREHOUSE_NOT_EMPTY,
                )
            run(
                f"INSERT INTO {self._clients} (client_id, name, created_at) VALUES (?, ?, ?)",
                [(c.client_id, c.name, stamp(c.created_at)) for c in dump.clients],
                many=True,
            )
            for c in dump.clients:
                make_space(c.client_id)
            run(
                f"INSERT INTO {self._keys} (key_id, client_id, digest, created_at, last_used_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        k.key_id,
                        k.client_id,
                        digest,
                        stamp(k.created_at),
                        stamp(k.last_used_at),
                        stamp(k.revoked_at),
                    )
                    for k, digest in dump.keys
                ],
                many=True,
            )
            run(
                f"INSERT INTO {self._settings} (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                list(dump.settings.items()),
                many=True,
            )
            self.db.announce(run)

    def close(self) -> None:
        self.db.close()


def _details(stored: Any) -> Iterator[Detail]:
    """The details of a recorded refusal; a window written before refusals had codes holds
    only their reasons."""
    items = _decode(stored) if isinstance(stored, str | bytes) else stored
    for item in items:
        if isinstance(item, dict):
            yield Detail(item.get("code", ""), item.get("message", ""), item.get("point"), item.get("field"))
        else:
            yield Detail("", str(item))


@functools.lru_cache(maxsize=256)
def with_percent_placeholders(sql: str) -> str:
    """The catalog's SQL for a driver that writes placeholders ``%s`` (the catalog's SQL
    holds no other ``?`` and no ``%``)."""
    return sql.replace("?", "%s")
