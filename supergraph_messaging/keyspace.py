"""Reading a large Redis keyspace page by page, for the admin (never ``KEYS``, never a full count)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .connection import get_redis_client

PAGE_SIZE = 100
SCAN_COUNT = 1000
MAX_SCAN_COUNT = 20_000
SCAN_BUDGET = 50_000  # keys one page may walk
MAX_SCANS_PER_PAGE = 50
PREVIEW_BYTES = 300
VALUE_LIMIT = 1_000_000


@dataclass
class KeyInfo:
    key: str
    type: str
    ttl: int | None  # seconds; None: no expiry
    size: int | None  # bytes, MEMORY USAGE
    preview: str = ""
    binary: bool = False


def _text(raw: bytes | str) -> tuple[str, bool]:
    if isinstance(raw, str):
        return raw, False
    try:
        return raw.decode(), False
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def scan_page(pattern: str, cursor: int = 0, page_size: int = PAGE_SIZE) -> tuple[list[str], int]:
    """Up to ``page_size`` keys matching ``pattern`` from ``cursor``; returns (keys, next cursor, 0 = end)."""
    conn: Any = get_redis_client().redis
    found: list[str] = []
    count = page_size  # dense patterns: about one page per SCAN; sparse ones: widen the step
    budget = SCAN_BUDGET  # a sparse pattern returns a short page (with "next") rather than a slow one
    for _ in range(MAX_SCANS_PER_PAGE):
        cursor, keys = conn.scan(cursor=cursor, match=pattern or "*", count=count)
        found.extend(_text(k)[0] for k in keys)
        budget -= count
        if cursor == 0 or len(found) >= page_size or budget <= 0:
            break
        count = min(count * 2, MAX_SCAN_COUNT, budget)
    return found, int(cursor)


def describe(keys: list[str]) -> list[KeyInfo]:
    """Type, TTL, size and a short preview of each key, in one pipelined round trip."""
    if not keys:
        return []
    conn: Any = get_redis_client().redis
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.pttl(key)
        pipe.memory_usage(key)
        pipe.getrange(key, 0, PREVIEW_BYTES - 1)
    replies = pipe.execute(raise_on_error=False)
    out = []
    for i, key in enumerate(keys):
        kind, pttl, size, head = replies[4 * i : 4 * i + 4]
        kind_text = _text(kind)[0] if isinstance(kind, bytes) else str(kind)
        info = KeyInfo(key, kind_text, _seconds(pttl), size if isinstance(size, int) else None)
        if kind_text == "string" and isinstance(head, bytes):
            info.preview, info.binary = _text(head)
        elif kind_text != "none":
            info.preview = f"({kind_text})"
        out.append(info)
    return out


def _seconds(pttl: Any) -> int | None:
    if not isinstance(pttl, int) or pttl < 0:
        return None
    return (pttl + 999) // 1000


def read_value(key: str) -> dict[str, Any]:
    """Everything the detail page shows about one key."""
    conn: Any = get_redis_client().redis
    (info,) = describe([key])
    result: dict[str, Any] = {"info": info, "pretty": None, "text": None, "binary": False, "truncated": False}
    if info.type == "string":
        raw = conn.getrange(key, 0, VALUE_LIMIT - 1)
        result["truncated"] = (info.size or 0) > VALUE_LIMIT and len(raw) >= VALUE_LIMIT
        text, binary = _text(raw)
        result["binary"] = binary
        if binary:
            result["text"] = raw[:2000].hex(" ")
        else:
            try:
                result["pretty"] = json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
            except ValueError:
                result["text"] = text
    elif info.type == "hash":
        result["text"] = "\n".join(f"{_text(k)[0]}: {_text(v)[0]}" for k, v in list(conn.hgetall(key).items())[:200])
    elif info.type == "list":
        result["text"] = "\n".join(_text(v)[0] for v in conn.lrange(key, 0, 199))
    elif info.type == "set":
        result["text"] = "\n".join(_text(v)[0] for v in list(conn.sscan_iter(key, count=200))[:200])
    elif info.type == "zset":
        result["text"] = "\n".join(f"{_text(m)[0]}: {s}" for m, s in conn.zrange(key, 0, 199, withscores=True))
    return result


def count_matching(pattern: str, limit: int = 10_000, sample: int = 20) -> tuple[int, bool, list[str]]:
    """(count, exact?, sample keys): stops counting at ``limit`` so a huge Redis stays fast."""
    conn: Any = get_redis_client().redis
    count, keys = 0, list[str]()
    for key in conn.scan_iter(match=pattern or "*", count=SCAN_COUNT):
        count += 1
        if len(keys) < sample:
            keys.append(_text(key)[0])
        if count >= limit:
            return count, False, keys
    return count, True, keys


def pubsub_channels() -> tuple[list[tuple[str, int]], int]:
    """Active channels with subscriber counts, and the number of pattern subscriptions."""
    conn: Any = get_redis_client().redis
    channels = sorted(_text(c)[0] for c in conn.pubsub_channels())
    counts: dict[str, int] = {}
    if channels:
        counts = {_text(name)[0]: int(n) for name, n in conn.pubsub_numsub(*channels)}
    return [(c, counts.get(c, 0)) for c in channels], int(conn.pubsub_numpat())
