"""Load-balancing selection: which member of a pool gets the next request.

Theory of operation
-------------------
A balancer only *orders* candidates; the caller decides. As in Pingora, the request path asks
``pick(skip, now, panic)`` for one member, tries it, and on a retry asks again with the members it
already tried in ``skip``. The balancer never connects, never counts in-flight requests (the caller
increments and decrements ``MemberState.active``) and knows nothing about health beyond one
eligibility rule, ``eligible``, which every algorithm uses. A member is eligible when

* it is not in ``skip``,
* it is not ejected by passive health (``ejected_until <= now``) or the pool is in panic mode
  (``panic=True``: every member is tried, ejected or not, as Envoy does under its healthy panic
  threshold), and
* its live weight is positive.

``make_balancer`` keeps only the members that take traffic (weight > 0 and state ``up``), in
configuration order; a state change therefore needs a new balancer, which the configuration
compiler builds anyway. Weights are read live from ``MemberState.weight`` at every pick, so a
weight change takes effect on the next pick without a rebuild (a weight set to 0 stops traffic to
that member at once). All selection state lives in the ``MemberState`` objects
(``current_weight``, ``active``), which outlive balancers: a balancer built over the same objects
after a reload continues exactly where the previous one stopped.

``wrr``: smooth weighted round-robin (``smooth_wrr``), as nginx's ``ngx_http_upstream_get_peer`` in
``src/http/ngx_http_upstream_round_robin.c``. At every pick each eligible member's
``current_weight`` grows by its weight, the member with the highest ``current_weight`` wins (the
first in configuration order on a tie) and the winner's ``current_weight`` drops by the total
weight of the eligible members. Over any window of ``sum(weights)`` picks each member is chosen
exactly ``weight`` times, interleaved rather than in bursts: weights 5/1/1 give ``a a b a c a a``.
nginx's ``effective_weight`` (lowered on failures, slowly restored) is left out: passive health is
handled by ejection, elsewhere.

``least_conn``: as ``ngx_http_upstream_get_least_conn_peer`` in
``src/http/modules/ngx_http_upstream_least_conn_module.c``. The member with the fewest in-flight
requests per unit of weight wins; ratios are compared by cross-multiplication
(``a.active * b.weight < b.active * a.weight``), exact in integers. When several members share
the lowest ratio, the same ``smooth_wrr`` runs over those members only: only they gain
``current_weight`` and the winner loses the sum of *their* weights. A sole winner's
``current_weight`` is left unchanged.

``random2``: the power of two random choices (Mitzenmacher, "The Power of Two Choices in
Randomized Load Balancing", 2001), as Envoy's least-request balancer does when all weights are
equal (``source/extensions/load_balancing_policies/least_request/least_request_lb.h``, formerly
``source/common/upstream/load_balancer_impl.cc``). Two distinct eligible members are drawn at
random, each with probability proportional to its weight, and the one with the lower
``active / weight`` wins (the first drawn on a tie). This is the "expand hosts by weight, then P2C"
variant that Envoy's source mentions as an alternative to its EDF schedule for unequal weights.
A draw is a ``bisect`` into a cumulative-weight table built at construction; the table is
rebuilt whenever any live weight differs from the weights it was built from (one pass of integer
comparisons, no allocation). An ineligible draw is rejected and redrawn (rejection sampling keeps
the draw proportional to weight among eligible members); after a few rejections a linear scan
draws directly among the eligible members. With equal loads the first draw always wins, so the
long-run share of each member follows its weight; the most loaded member of the pool is never
chosen while two or more members are eligible.

Cost per pick: ``wrr`` and ``least_conn`` make one pass over the members (``least_conn`` a second
one, over the eligible ones, on a tie); ``random2`` one pass of weight checks plus two ``bisect``
draws. No closure, regex or logging on the request path; one short list of candidates.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Container, Iterable
from typing import Protocol, TypeVar

from slb.balancing.member import MemberState, taking_traffic

__all__ = [
    "ALGORITHMS",
    "Balancer",
    "LeastConn",
    "Random2",
    "WeightedRoundRobin",
    "eligible",
    "make_balancer",
    "smooth_wrr",
]

ALGORITHMS: frozenset[str] = frozenset({"wrr", "least_conn", "random2"})

_INF = float("inf")
# random2: draws tried before falling back to a linear scan over the eligible members
_DRAWS = range(4)


class Balancer(Protocol):
    # the members that take traffic (weight > 0 and state up), in config order
    members: tuple[MemberState, ...]

    def pick(self, skip: Container[MemberState], now: float, panic: bool) -> MemberState | None:
        """The next member to try, or None when no member is eligible."""
        ...


class Weighted(Protocol):
    """What smooth WRR needs of what it picks: a member, or a group of a route's split."""

    weight: int
    current_weight: int
    ejected_until: float


W = TypeVar("W", bound=Weighted)


def eligible(m: Weighted, skip: Container[Weighted], limit: float) -> bool:
    """The one eligibility test: a live positive weight, not ejected before ``limit`` (``now``,
    or infinity in panic), not already tried by this request."""
    return m.weight > 0 and m.ejected_until <= limit and not (skip and m in skip)


def smooth_wrr(members: Iterable[W], skip: Container[W] = (),
               limit: float = _INF) -> W | None:
    """nginx's smooth weighted round-robin step over the eligible ``members``.

    Each eligible member gains its weight; the highest ``current_weight`` wins (the first on a
    tie) and loses the eligible members' total weight.
    """
    best: W | None = None
    best_cw = 0
    total = 0
    for m in members:
        if not eligible(m, skip, limit):
            continue
        w = m.weight
        cw = m.current_weight + w
        m.current_weight = cw
        total += w
        if best is None or cw > best_cw:
            best = m
            best_cw = cw
    if best is not None:
        best.current_weight = best_cw - total
    return best


class WeightedRoundRobin:
    """nginx smooth weighted round-robin."""

    __slots__ = ("members",)

    def __init__(self, members: tuple[MemberState, ...]) -> None:
        self.members = members

    def pick(self, skip: Container[MemberState], now: float, panic: bool) -> MemberState | None:
        limit = _INF if panic else now
        return smooth_wrr(self.members, skip, limit)


class LeastConn:
    """nginx least_conn: fewest active per weight, smooth WRR among the tied."""

    __slots__ = ("members",)

    def __init__(self, members: tuple[MemberState, ...]) -> None:
        self.members = members

    def pick(self, skip: Container[MemberState], now: float, panic: bool) -> MemberState | None:
        limit = _INF if panic else now
        candidates = [m for m in self.members if eligible(m, skip, limit)]
        best: MemberState | None = None
        best_active = 0
        best_weight = 1
        tied = False
        for m in candidates:
            a = m.active
            w = m.weight
            if best is None:
                best = m
                best_active = a
                best_weight = w
                continue
            lhs = a * best_weight
            rhs = best_active * w
            if lhs < rhs:
                best = m
                best_active = a
                best_weight = w
                tied = False
            elif lhs == rhs:
                tied = True
        if not tied:
            return best
        # Smooth WRR among the candidates whose ratio equals the best one (all eligible). Those
        # before ``best`` in configuration order all have a strictly higher ratio: exact.
        return smooth_wrr([m for m in candidates
                           if m.active * best_weight == best_active * m.weight])


class Random2:
    """Power of two random choices, draws weighted by weight, lower active/weight wins."""

    __slots__ = ("_cum", "_hi", "_random", "_total", "_weights", "members")

    def __init__(self, members: tuple[MemberState, ...], rng: random.Random | None = None
                 ) -> None:
        self.members = members
        self._random: Callable[[], float] = rng.random if rng is not None else random.random
        self._hi = max(len(members) - 1, 0)
        self._weights: list[int] = [0] * len(members)
        self._cum: list[int] = []
        self._total = 0
        self._rebuild()

    def _rebuild(self) -> None:
        """Cumulative weight table from the live weights (non-positive weights count as 0)."""
        weights = self._weights
        cum: list[int] = []
        total = 0
        for i, m in enumerate(self.members):
            w = m.weight
            weights[i] = w
            if w > 0:
                total += w
            cum.append(total)
        self._cum = cum
        self._total = total

    def _scan(self, skip: Container[MemberState], limit: float,
              exclude: MemberState | None) -> MemberState | None:
        """Weighted draw among the eligible members other than ``exclude``, by linear scan."""
        total = 0
        for m in self.members:
            w = m.weight
            if m is not exclude and eligible(m, skip, limit):
                total += w
        if total == 0:
            return None
        x = self._random() * total  # < total for any integer total below 2**53
        acc = 0
        last: MemberState | None = None
        for m in self.members:
            w = m.weight
            if m is not exclude and eligible(m, skip, limit):
                acc += w
                if x < acc:
                    return m
                last = m
        return last

    def pick(self, skip: Container[MemberState], now: float, panic: bool) -> MemberState | None:
        members = self.members
        weights = self._weights
        # live weights against the table's: a manual index is the cheapest loop here
        i = 0
        for m in members:
            if m.weight != weights[i]:
                self._rebuild()
                break
            i += 1  # noqa: SIM113
        total = self._total
        if total <= 0:
            return None
        limit = _INF if panic else now
        cum = self._cum
        hi = self._hi
        rand = self._random

        for _ in _DRAWS:
            first = members[bisect_right(cum, rand() * total, 0, hi)]
            if eligible(first, skip, limit):
                break
        else:
            scanned = self._scan(skip, limit, None)
            if scanned is None:
                return None
            first = scanned

        for _ in _DRAWS:
            second = members[bisect_right(cum, rand() * total, 0, hi)]
            if second is not first and eligible(second, skip, limit):
                break
        else:
            scanned = self._scan(skip, limit, first)
            if scanned is None:
                return first  # the only eligible member
            second = scanned

        if second.active * first.weight < first.active * second.weight:
            return second
        return first


def make_balancer(algorithm: str, members: Iterable[MemberState],
                  rng: random.Random | None = None) -> Balancer:
    """A balancer over the members that take traffic, in the given (configuration) order.

    ``rng`` is used by ``random2`` only: the ``random`` module's own generator when omitted
    (a ``random.Random()`` each, seeded from os.urandom, cost 11 us a pool change; the
    module's is reseeded in every forked worker, so workers still draw apart).
    """
    live = taking_traffic(members)
    if algorithm == "wrr":
        return WeightedRoundRobin(live)
    if algorithm == "least_conn":
        return LeastConn(live)
    if algorithm == "random2":
        return Random2(live, rng)
    raise ValueError(
        f"unknown load-balancing algorithm {algorithm!r}; expected one of {sorted(ALGORITHMS)}")
