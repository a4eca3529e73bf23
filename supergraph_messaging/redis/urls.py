"""Which Redis a URL names: one node, a Sentinel-monitored primary, or a Cluster.

``redis+sentinel://[user:password@]host:26379,host2:26379/SERVICE[/db]``
(``rediss+sentinel://`` for TLS) names the sentinels and the service;
``redis+cluster://[user:password@]host:port,host:port``
(``rediss+cluster://``) names some nodes of a Redis Cluster. Plain
``redis://``, ``rediss://`` and ``unix://`` URLs go to redis-py's
``from_url`` unchanged. Parsing and masking only: the clients are in
:mod:`.sentinel`, :mod:`.cluster` and :mod:`.client`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from supergraph_messaging.exceptions import MessagingError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SCHEMES = (*PLAIN_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
_NETLOC_CREDENTIALS = re.compile(r"^(?P<user>[^:@]*)(?::(?P<password>[^@]*))?@")


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    ssl: bool


@dataclass(frozen=True)
class ClusterTarget:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool


def _hosts(url: str, kind: str) -> tuple[tuple[tuple[str, int], ...], str | None, str | None]:
    """(host:port list, username, password) of a multi-host URL."""
    netloc = urlsplit(url).netloc
    username = password = None
    match = _NETLOC_CREDENTIALS.match(netloc)
    if match:
        username = unquote(match["user"]) or None
        password = unquote(match["password"]) if match["password"] is not None else None
        netloc = netloc[match.end():]
    hosts = []
    for node in filter(None, netloc.split(",")):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise MessagingError(f"{kind} URL {mask(url)}: {node!r} is not host:port.")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise MessagingError(f"{kind} URL {mask(url)} names no {kind.lower()} (host:port,host:port).")
    return tuple(hosts), username, password


def parse_sentinel(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL, or a :class:`MessagingError` naming what is wrong."""
    sentinels, username, password = _hosts(url, "Sentinel")
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise MessagingError(f"Sentinel URL {mask(url)} must end in /SERVICE_NAME or /SERVICE_NAME/db.")
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                          username, password, parts.scheme == "rediss+sentinel")


def parse_cluster(url: str) -> ClusterTarget:
    """The parts of a ``redis+cluster://`` URL; a database number is an error (a Cluster has only db 0)."""
    nodes, username, password = _hosts(url, "Cluster")
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if path not in ("", "0"):
        raise MessagingError(f"Cluster URL {mask(url)} names database {path!r}: a Redis Cluster has only "
                             "database 0; remove the path.")
    return ClusterTarget(nodes, username, password, parts.scheme == "rediss+cluster")


def mask(url: str) -> str:
    """The URL with its password replaced by ``***``, for any number of hosts."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    match = _NETLOC_CREDENTIALS.match(netloc)
    if match and match["password"] is not None:
        netloc = f"{match['user']}:***@{netloc[match.end():]}"
    return f"{scheme}://{netloc}{slash}{path}"


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse(url: str) -> None:
    """Raise a :class:`MessagingError` naming what is wrong with a Sentinel or Cluster URL."""
    if is_sentinel(url):
        parse_sentinel(url)
    elif is_cluster(url):
        parse_cluster(url)


def _credentials(target: SentinelTarget | ClusterTarget) -> dict[str, Any]:
    return {k: v for k, v in (("username", target.username), ("password", target.password)) if v is not None}


def _sentinel_kwargs(target: SentinelTarget, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kwargs of the connections to the sentinels, kwargs of the connections to the primary)."""
    auth = _credentials(target)
    # The app's retry too: redis-py's default backs off for seconds, so unreachable sentinels took 12 s to say so.
    timeouts: dict[str, Any] = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout", "retry")
                                if k in kwargs}
    ssl = {"ssl": True} if target.ssl else {}
    return {**timeouts, **ssl}, {**kwargs, **auth, **ssl, "db": target.db}
