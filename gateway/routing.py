"""Division codes, scopes and alliances → a Route (DESIGN §5). No I/O.

The federation file is a link-state database: every gateway knows every partner's
prefixes and which gateway it is attached to, and which gateways link to which. The
destination is the longest prefix match over partners (and over prefixes a gateway
announces for platforms not listed); the next hop is the first step of a shortest path
over gateway links. Hop counts and the path carried in ForwardCase keep it loop-free
even when gateways disagree about the file.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from gateway.config import Alliance, Config, Item
from gateway.divisions import province_of
from gateway.errors import NotFound, PermissionDenied, Unavailable


class Scope(Enum):
    INTRA_PROVINCE = "intra_province"
    CROSS_PROVINCE = "cross_province"
    METRO_CIRCLE = "metro_circle"


@dataclass(frozen=True, slots=True)
class Destination:
    prefix: str
    gateway: str  # the gateway the destination is attached to
    partner: str | None  # None: a prefix a gateway announces for unlisted platforms


@dataclass(frozen=True, slots=True)
class Route:
    """Where a case for `division` goes: a local partner, or the next gateway on the path."""

    division: str
    destination: Destination
    next_hop: str | None  # None when the destination is attached to this gateway

    @property
    def local(self) -> bool:
        return self.next_hop is None


class RouteTable:
    """Longest-prefix routing over partners and gateway announcements, built once per config."""

    def __init__(self, self_id: str, destinations: Iterable[Destination],
                 links: Mapping[str, Iterable[str]]) -> None:
        self.self_id = self_id
        self._by_prefix: dict[str, Destination] = {}
        for dest in destinations:
            known = self._by_prefix.get(dest.prefix)
            # a listed partner beats a gateway's blanket announcement of the same prefix
            if known is None or (known.partner is None and dest.partner is not None):
                self._by_prefix[dest.prefix] = dest
        graph = {k: tuple(v) for k, v in links.items()}
        self._links = graph
        self._next_hop = _first_hops(self_id, graph)
        self._distance = {node: _distances(node, graph) for node in graph}

    @classmethod
    def from_config(cls, config: Config) -> RouteTable:
        dests = [Destination(p, partner.gateway, partner.id)
                 for partner in config.partners.values() for p in partner.prefixes]
        dests += [Destination(p, gw.id, None)
                  for gw in config.gateways.values() for p in gw.prefixes]
        return cls(config.self_id, dests, {g.id: g.links for g in config.gateways.values()})

    def lookup(self, division: str) -> Destination | None:
        for length in range(len(division), 0, -1):
            dest = self._by_prefix.get(division[:length])
            if dest is not None:
                return dest
        return None

    def route(self, division: str, *, field: str = "target_division") -> Route:
        dest = self.lookup(division)
        if dest is None:
            raise NotFound(f"no partner or gateway serves division {division}", field=field)
        if dest.gateway == self.self_id:
            if dest.partner is None:
                raise NotFound(f"this gateway announces {dest.prefix} but no partner here "
                               f"serves {division}", field=field)
            return Route(division=division, destination=dest, next_hop=None)
        hop = self._next_hop.get(dest.gateway)
        if hop is None:
            raise Unavailable(f"gateway {dest.gateway} serves {division} but no link path "
                              f"reaches it from {self.self_id}")
        return Route(division=division, destination=dest, next_hop=hop)

    def next_hop_to(self, gateway: str) -> str | None:
        return None if gateway == self.self_id else self._next_hop.get(gateway)

    def shortest_walk(self, walk: list[str]) -> bool:
        """Is ``walk`` (gateway ids, the first where a call entered the federation, the
        last this gateway) a shortest path over links both sides list? What a forwarded
        synchronous call's ``path`` must be: every gateway it names real and linked to the
        next, no detour."""
        if not walk or walk[-1] != self.self_id:
            return False
        if any(not _linked(self._links, a, b) for a, b in itertools.pairwise(walk)):
            return False
        return self._distance.get(walk[0], {}).get(self.self_id) == len(walk) - 1

    def on_path(self, origin: str, target: str, previous: str) -> bool:
        """Could a case from gateway `origin` to gateway `target` reach this gateway from
        its neighbour `previous`? Every hop forwards along a shortest path (BFS), so this
        gateway lies on one and `previous` is a step closer to the origin. A peer that
        brings a case from anywhere else brings a copy nobody sent this way."""
        d = self._distance
        here = self.self_id
        try:
            return (d[origin][here] + d[here][target] == d[origin][target]
                    and d[origin][previous] == d[origin][here] - 1)
        except KeyError:  # a gateway no link path reaches
            return False


def _linked(links: Mapping[str, tuple[str, ...]], a: str, b: str) -> bool:
    return b in links.get(a, ()) and a in links.get(b, ())


def _first_hops(origin: str, links: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """BFS over gateway links (both directions must list each other to count)."""
    first: dict[str, str] = {}
    queue: deque[tuple[str, str | None]] = deque([(origin, None)])
    seen = {origin}
    while queue:
        node, via = queue.popleft()
        for nxt in sorted(links.get(node, ())):
            if nxt in seen or node not in links.get(nxt, ()):
                continue
            seen.add(nxt)
            first[nxt] = via or nxt
            queue.append((nxt, via or nxt))
    return first


def _distances(origin: str, links: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Hops from origin to every gateway it reaches (links count when both sides list
    them, as in _first_hops)."""
    distance = {origin: 0}
    queue: deque[str] = deque([origin])
    while queue:
        node = queue.popleft()
        for nxt in links.get(node, ()):
            if nxt not in distance and node in links.get(nxt, ()):
                distance[nxt] = distance[node] + 1
                queue.append(nxt)
    return distance


@dataclass(frozen=True, slots=True)
class Admission:
    scope: Scope
    alliance: str = ""


def admit(origin: str, target: str, item: Item, alliances: Iterable[Alliance]) -> Admission:
    """Decide the scope a case may cross under, or refuse it (PERMISSION_DENIED).

    Same province (first two digits) → intra_province. Across provinces: metro_circle
    when both ends belong to one alliance that lists the item, else cross_province when
    the item is on the national 跨省通办 list; otherwise the case may not cross.
    """
    if province_of(origin) == province_of(target):
        return Admission(Scope.INTRA_PROVINCE)
    for alliance in sorted(alliances, key=lambda a: a.id):
        if alliance.covers(origin) and alliance.covers(target) and item.code in alliance.items:
            return Admission(Scope.METRO_CIRCLE, alliance.id)
    if item.cross_province:
        return Admission(Scope.CROSS_PROVINCE)
    shared = [a.id for a in alliances if a.covers(origin) and a.covers(target)]
    why = (f"alliance {', '.join(shared)} does not list it" if shared
           else f"{origin} and {target} share no alliance that lists it")
    raise PermissionDenied(f"item {item.code} is not on the 跨省通办 list and {why}",
                           field="item_code")
