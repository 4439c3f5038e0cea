"""Reading the Redis layers' ``CONFIG``: host entries and options, checked before anything connects.

The option names and meanings follow channels_redis, so a project switches by changing only the ``BACKEND`` path.
Everything here is plain data and validation: no sockets, no event loop. ``endpoints.py`` turns a ``HostSpec`` into
connections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_UNAVAILABLE_TIMEOUT",
    "HostKind",
    "HostSpec",
    "parse_hosts",
    "require_number",
    "require_prefix",
]

DEFAULT_HOST = ("localhost", 6379)
DEFAULT_UNAVAILABLE_TIMEOUT = 5.0
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024

_URL_SCHEMES = ("redis", "rediss", "unix")
_PREFIX = re.compile(r"[A-Za-z0-9_.\-:]+")


#: What a ``hosts`` entry points at: one Redis server, a master found through Sentinel, or a Redis Cluster.
HostKind = Literal["standalone", "sentinel", "cluster"]


@dataclass(frozen=True)
class HostSpec:
    """One ``hosts`` entry, normalised.

    ``kind`` is ``"standalone"`` (``url`` plus connection ``options``), ``"sentinel"`` (``sentinels`` and
    ``master_name``, with ``options`` for the master connections and ``sentinel_options`` for the Sentinels) or
    ``"cluster"`` (``url`` of any cluster node). ``identity`` names the host stably, for consistent hashing.
    """

    kind: HostKind
    url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_options: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        if self.kind == "sentinel":
            return f"sentinel:{self.master_name}@" + ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{self.kind}:{self.url}"

    @property
    def required_url(self) -> str:
        """``url`` of a standalone or cluster host; raises ``ValueError`` for a Sentinel host, which has none."""
        if self.url is None:
            raise ValueError(f"The {self.kind} host {self.describe()} has no url.")
        return self.url

    def describe(self) -> str:
        """The host as an error message or log line shows it, without any password."""
        if self.kind == "sentinel":
            return f"Sentinel master {self.master_name!r} via " + ", ".join(f"{h}:{p}" for h, p in self.sentinels)
        parts = urlsplit(self.url or "")
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_hosts(hosts: Any) -> list[HostSpec]:
    """Normalise the ``hosts`` option: a list of URLs, ``(host, port)`` pairs, or dicts of connection options.

    A dict may hold ``address`` (a URL or a ``(host, port)`` pair) plus redis-py connection options (``password``,
    ``db``, ``ssl_ca_certs``, ...); ``sentinels`` with ``master_name`` (and optional ``sentinel_kwargs``) for a
    Sentinel-managed master; ``cluster: True`` for a Redis Cluster reached through the ``address`` node. Raises
    ``ValueError``/``TypeError`` naming the entry that is wrong.
    """
    if hosts is None:
        hosts = [DEFAULT_HOST]
    if isinstance(hosts, (str, dict)) or (isinstance(hosts, tuple) and len(hosts) == 2 and isinstance(hosts[1], int)):
        hosts = [hosts]
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise ValueError(f"hosts must be a non-empty list of Redis URLs, (host, port) pairs or dicts, not {hosts!r}.")
    specs = [_parse_host(index, entry) for index, entry in enumerate(hosts)]
    clusters = [spec for spec in specs if spec.kind == "cluster"]
    if clusters and len(specs) > 1:
        raise ValueError(
            "A Redis Cluster entry must be the only entry in hosts: the cluster shards keys itself. "
            "Remove the other entries or the 'cluster' flag."
        )
    identities = [spec.identity for spec in specs]
    if len(set(identities)) != len(identities):
        raise ValueError(f"hosts lists the same server twice: {identities}.")
    return specs


def _parse_host(index: int, entry: Any) -> HostSpec:
    where = f"hosts[{index}]"
    if isinstance(entry, str):
        return HostSpec("standalone", url=_check_url(where, entry))
    if isinstance(entry, (tuple, list)):
        return HostSpec("standalone", url=_pair_url(where, entry))
    if not isinstance(entry, dict):
        raise TypeError(f"{where} must be a URL string, a (host, port) pair or a dict, not {entry!r}.")
    options = dict(entry)
    if "sentinels" in options:
        return _parse_sentinel(where, options)
    cluster = options.pop("cluster", False)
    if not isinstance(cluster, bool):
        raise TypeError(f"{where}['cluster'] must be True or False, not {cluster!r}.")
    address = options.pop("address", None)
    if address is None:
        host = options.pop("host", "localhost")
        port = options.pop("port", 6379)
        address = (host, port)
    url = _pair_url(where, address) if isinstance(address, (tuple, list)) else _check_url(where, address)
    url, cluster = _cluster_flag_from_url(where, url, cluster)
    if cluster and urlsplit(url).scheme == "unix":
        raise ValueError(f"{where}: a Redis Cluster is reached over TCP, not a unix socket.")
    return HostSpec("cluster" if cluster else "standalone", url=url, options=options)


def _parse_sentinel(where: str, options: dict[str, Any]) -> HostSpec:
    sentinels = options.pop("sentinels")
    master_name = options.pop("master_name", None)
    sentinel_options = options.pop("sentinel_kwargs", None) or {}
    if not isinstance(master_name, str) or not master_name:
        raise ValueError(f"{where} lists sentinels but no master_name; add the name Sentinel monitors the master as.")
    if not isinstance(sentinels, (list, tuple)) or not sentinels:
        raise ValueError(f"{where}['sentinels'] must be a non-empty list of (host, port) pairs, not {sentinels!r}.")
    pairs = []
    for position, sentinel in enumerate(sentinels):
        if isinstance(sentinel, str):
            parts = urlsplit(sentinel if "://" in sentinel else f"redis://{sentinel}")
            sentinel = (parts.hostname, parts.port or 26379)
        if (
            not isinstance(sentinel, (tuple, list))
            or len(sentinel) != 2
            or not isinstance(sentinel[0], str)
            or not isinstance(sentinel[1], int)
        ):
            raise ValueError(f"{where}['sentinels'][{position}] must be a (host, port) pair, not {sentinel!r}.")
        pairs.append((sentinel[0], sentinel[1]))
    if not isinstance(sentinel_options, dict):
        raise TypeError(f"{where}['sentinel_kwargs'] must be a dict, not {sentinel_options!r}.")
    if "address" in options:
        raise ValueError(f"{where} has both 'address' and 'sentinels'; Sentinel tells tether where the master is.")
    return HostSpec(
        "sentinel",
        options=options,
        sentinels=tuple(pairs),
        master_name=master_name,
        sentinel_options=dict(sentinel_options),
    )


def _pair_url(where: str, pair: Any) -> str:
    if len(pair) != 2 or not isinstance(pair[0], str) or not isinstance(pair[1], int) or isinstance(pair[1], bool):
        raise ValueError(f"{where} must be a (host, port) pair such as ('localhost', 6379), not {pair!r}.")
    host = f"[{pair[0]}]" if ":" in pair[0] else pair[0]
    return f"redis://{host}:{pair[1]}"


def _check_url(where: str, url: Any) -> str:
    if not isinstance(url, str):
        raise TypeError(f"{where} address must be a URL string, not {url!r}.")
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _URL_SCHEMES:
        raise ValueError(
            f"{where} is {url!r}; a Redis URL starts with redis://, rediss:// (TLS) or unix:// (a socket path)."
        )
    return url


def _cluster_flag_from_url(where: str, url: str, cluster: bool) -> tuple[str, bool]:
    """Take a ``cluster=true`` query parameter out of ``url`` (redis-py would not understand it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "cluster" for key, _ in query):
        return url, cluster
    rest = []
    for key, value in query:
        if key == "cluster":
            if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ValueError(f"{where}: cluster={value!r} in the URL must be true or false.")
            cluster = cluster or value.lower() in ("1", "true", "yes")
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), cluster


@overload
def require_number(name: str, value: Any, *, minimum: float = 0, integer: Literal[True]) -> int: ...


@overload
def require_number(name: str, value: Any, *, minimum: float = 0, integer: Literal[False] = False) -> float: ...


def require_number(name: str, value: Any, *, minimum: float = 0, integer: bool = False) -> float:
    """Return ``value`` when it is a number above ``minimum`` (an int when ``integer``); else a ``ValueError``."""
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or value <= minimum:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name} must be {kind} greater than {minimum}, not {value!r}.")
    return value


def require_prefix(prefix: Any) -> str:
    """The key prefix: letters, digits and ``_ . - :``, so a ``SCAN`` pattern built from it matches only its keys."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"prefix must be a non-empty string of letters, digits, '_', '.', '-' and ':', not {prefix!r}."
        )
    return prefix
