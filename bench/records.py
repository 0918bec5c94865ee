"""The benchmark's records: six fields of mixed types plus ``keys``, about 150 bytes each,
the same in every system measured (the wrk script builds the same shape)."""

from __future__ import annotations

import json
import random
from typing import Any

COLUMNS = ("id", "name", "email", "amount", "active", "created_at")


def record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"customer {i}",
        "email": f"user{i}@example.com",
        "amount": i % 1000 + 0.25,
        "active": i % 2 == 0,
        "created_at": f"2024-05-{i % 28 + 1:02d} 12:34:56",
    }


def ids_for(mix: str, n: int, base: int, prefilled: int, rng: random.Random | None = None) -> list[int]:
    """The 100 ids of request ``n`` in a mix."""
    rng = rng or random.Random(n * 7919 + base)
    if mix == "random":
        return [base + rng.randint(1, 2_000_000_000) for _ in range(100)]
    if mix == "replace":
        return [rng.randrange(prefilled) if i % 2 == 0 else base + n * 100 + i for i in range(100)]
    return [base + n * 100 + i for i in range(100)]


def body_for(fmt: str, mix: str, n: int, base: int, prefilled: int) -> bytes:
    rows: list[dict[str, Any]] = [record(i) for i in ids_for(mix, n, base, prefilled)]
    if fmt == "datasette":
        return json.dumps({"rows": rows}).encode()
    return json.dumps([{"keys": ["id"], **r} for r in rows]).encode()
