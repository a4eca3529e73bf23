"""Reading a large Redis keyspace page by page, for the admin (never ``KEYS``, never a full count)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from supergraph_messaging.cache import invalidation
from supergraph_messaging.conf import conf
from supergraph_messaging.redis import cluster
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.keys import LEASE_SUFFIX, VERSION_SUFFIX, escape_glob

PAGE_SIZE = 100
SCAN_COUNT = 1000
MAX_SCAN_COUNT = 20_000
SCAN_BUDGET = 50_000  # keys one page may walk
MAX_SCANS_PER_PAGE = 50
PREVIEW_BYTES = 300
VALUE_LIMIT = 1_000_000


#: Keys of Django's cache session backends: never shown or touched, whoever asks (a session id is a login).
SESSION_MARKERS = (b"django.contrib.sessions.cache", b"django.contrib.sessions.cached_db")


def glob_regex(glob: str) -> bytes:
    """A regex for a Redis glob (``*``, ``?``, ``[...]``, ``\\x``), matched against raw key bytes."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body).replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out).encode()


class Namespace:
    """The keys the admin may list, show and delete.

    By default: keys under ``KEY_PREFIX`` (when set), keys of registered
    cache templates (and their leases), and ``ADMIN_KEY_PATTERNS``. A
    superuser may opt in to every key. Session keys never, for anyone.
    """

    def __init__(self, everything: bool = False) -> None:
        self.everything = everything
        prefix = conf.key_prefix
        globs = list(conf.admin_key_patterns or ())
        if prefix:
            globs.append(escape_glob(prefix) + "*")
        for registration in invalidation.templates:
            pattern = escape_glob(prefix) + registration.template.pattern()
            globs += [pattern, pattern + escape_glob(LEASE_SUFFIX), pattern + escape_glob(VERSION_SUFFIX)]
        self._regex = re.compile(b"|".join(b"(?:" + glob_regex(g) + b")" for g in globs), re.DOTALL) if globs else None

    def allows(self, raw: bytes) -> bool:
        if any(marker in raw for marker in SESSION_MARKERS):
            return False
        if self.everything:
            return True
        return self._regex is not None and self._regex.fullmatch(raw) is not None


def key_token(raw: bytes) -> str:
    """How a key travels through URLs and forms: ``t:<text>``, or ``x:<hex>`` for non-UTF-8 bytes."""
    try:
        return "t:" + raw.decode()
    except UnicodeDecodeError:
        return "x:" + raw.hex()


def token_key(token: str) -> bytes:
    """The raw key of a :func:`key_token` (a plain key typed into a URL works too)."""
    if token.startswith("x:"):
        try:
            return bytes.fromhex(token[2:])
        except ValueError:
            return token.encode()
    if token.startswith("t:"):
        return token[2:].encode()
    return token.encode()


@dataclass
class KeyInfo:
    key: str
    type: str
    ttl: int | None  # seconds; None: no expiry
    size: int | None  # bytes, MEMORY USAGE
    preview: str = ""
    binary: bool = False
    token: str = ""


def _text(raw: bytes | str) -> tuple[str, bool]:
    if isinstance(raw, str):
        return raw, False
    try:
        return raw.decode(), False
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def scan_page(pattern: str, cursor: str = "0", page_size: int = PAGE_SIZE,
              namespace: Namespace | None = None) -> tuple[list[bytes], str]:
    """Up to ``page_size`` raw keys matching ``pattern`` from ``cursor``; returns (keys, next cursor, "0" = end).

    On a Cluster each primary is scanned in turn, and the cursor names the
    node (``host:port/cursor``): SCAN cursors mean nothing on another node.
    """
    client = get_redis_client()
    allows = (namespace or Namespace()).allows
    if not client.cluster:
        page, after = _scan_node(client.redis, pattern, _int_cursor(cursor), page_size, allows)
        return page, str(after)
    conn: Any = client.redis
    nodes = sorted(conn.get_primaries(), key=lambda n: n.name)
    name, _, position = cursor.rpartition("/")
    start = next((i for i, n in enumerate(nodes) if n.name >= name), len(nodes)) if name else 0
    if start < len(nodes) and nodes[start].name != name:
        position = "0"  # the node named is gone (a failover): its keys are now on the next one listed
    found: list[bytes] = []
    for node in nodes[start:]:
        keys, next_position = _scan_node(conn.get_redis_connection(node), pattern, _int_cursor(position),
                                         page_size - len(found), allows)
        found += keys
        position = "0"
        if next_position:
            return found, f"{node.name}/{next_position}"
        if len(found) >= page_size:
            following = nodes.index(node) + 1
            return found, f"{nodes[following].name}/0" if following < len(nodes) else "0"
    return found, "0"


def _int_cursor(cursor: str) -> int:
    return int(cursor) if cursor.isdigit() else 0


def _scan_node(conn: Any, pattern: str, cursor: int, page_size: int, allows: Any) -> tuple[list[bytes], int]:
    found: list[bytes] = []
    count = page_size  # dense patterns: about one page per SCAN; sparse ones: widen the step
    budget = SCAN_BUDGET  # a sparse pattern returns a short page (with "next") rather than a slow one
    for _ in range(MAX_SCANS_PER_PAGE):
        cursor, keys = conn.scan(cursor=cursor, match=pattern or "*", count=count)
        found.extend(k for k in keys if allows(k))
        budget -= count
        if cursor == 0 or len(found) >= page_size or budget <= 0:
            break
        count = max(1, min(count * 2, MAX_SCAN_COUNT, budget))
    return found, int(cursor)


def describe(keys: list[bytes]) -> list[KeyInfo]:
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
        text, binary_key = _text(key)
        info = KeyInfo(text + (" (binary key)" if binary_key else ""), kind_text, _seconds(pttl),
                       size if isinstance(size, int) else None, token=key_token(key))
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


def read_value(key: bytes) -> dict[str, Any]:
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


def count_matching(pattern: str, limit: int = 10_000, sample: int = 20,
                   namespace: Namespace | None = None) -> tuple[int, bool, list[str]]:
    """(count, exact?, sample keys) of the keys the namespace allows: stops at ``limit`` so a huge Redis stays fast."""
    conn: Any = get_redis_client().redis
    allows = (namespace or Namespace()).allows
    count, keys = 0, list[str]()
    for key in conn.scan_iter(match=pattern or "*", count=SCAN_COUNT):
        if not allows(key):
            continue
        count += 1
        if len(keys) < sample:
            keys.append(_text(key)[0])
        if count >= limit:
            return count, False, keys
    return count, True, keys


def unlink_allowed(pattern: str, namespace: Namespace) -> tuple[int, int]:
    """Delete the keys matching ``pattern`` that ``namespace`` allows; returns (deleted, left alone)."""
    client = get_redis_client()
    conn: Any = client.redis
    unlink = cluster.unlink if client.cluster else lambda c, keys: int(c.unlink(*keys))
    deleted = skipped = 0
    batch: list[bytes] = []
    for key in conn.scan_iter(match=pattern or "*", count=SCAN_COUNT):
        if not namespace.allows(key):
            skipped += 1
            continue
        batch.append(key)
        if len(batch) >= 1000:
            deleted += unlink(conn, batch)
            batch = []
    if batch:
        deleted += unlink(conn, batch)
    return deleted, skipped


def pubsub_channels() -> tuple[list[tuple[str, int]], int]:
    """Active channels with subscriber counts, and the number of pattern subscriptions."""
    client = get_redis_client()
    conn: Any = client.redis
    # On a Cluster each node knows only its own subscribers: ask every node and add up.
    nodes = [conn.get_redis_connection(n) for n in conn.get_nodes()] if client.cluster else [conn]
    counts: dict[str, int] = {}
    patterns = 0
    for node in nodes:
        names = [_text(c)[0] for c in node.pubsub_channels()]
        for name, n in node.pubsub_numsub(*names) if names else ():
            counts[_text(name)[0]] = counts.get(_text(name)[0], 0) + int(n)
        patterns += int(node.pubsub_numpat())
    return sorted(counts.items()), patterns
