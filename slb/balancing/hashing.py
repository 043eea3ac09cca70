"""Consistent hashing (``hash``, ``ip_hash``): the same key goes to the same member.

The table is Maglev's (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
Balancer", NSDI 2016, §3.4), weighted as Envoy's Maglev load balancer does: a prime-sized
lookup table filled in rounds where each member, in turn, takes the next free slot of its own
permutation of the table (``offset + j * skip`` mod size, both from a hash of its address). A
member of weight ``w`` takes a turn in ``w / max_weight`` of the rounds, so its share of slots
is its share of the weight, to within one slot. A key is hashed to a slot; the slot names the
member.

Why Maglev rather than a ring of virtual nodes: the shares are exact by construction (a ring
needs hundreds of points per member for ±10%), and the lookup is one index. Removing one of N
members leaves every other member's preferred slots in place, so only the removed member's keys
move (plus a small fraction, kept small by a table of 1000 slots per member or more); adding
one moves about 1/(N+1). ``tests/unit/slb/balancing/test_hashing.py`` measures both over
100,000 keys.

The table is built over every member with a weight (``ring``), whatever its state: a member
that is out for now (drained or set down by an operator, down by active checks, ejected by
passive health, or already tried by this request) keeps its slots, and its keys walk on to the
next slots' members until it is back, then return to it; no other key moves. Only a change of
the member set or of a weight rebuilds the table (the fill is a pure function of addresses and
weights: a new balancer takes over its predecessor's table when they are the same; the pool
hands it over, on a delta as on a full apply).

Keys are hashed with CRC-32 (C, the same in every worker process: Python's ``hash`` is salted
per process) mixed by a multiplicative step so that similar keys spread. ``ip_hash`` hashes the
first three octets of an IPv4 client address (nginx's ``ip_hash``: clients of one /24 stay
together) and the whole address otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from zlib import crc32

from slb.balancing.balancer import eligible
from slb.balancing.member import MemberState, taking_traffic

# Table sizes, primes: the smallest that gives at least 1000 slots per member. Maglev's paper
# wants the table well over 100 x members; measured here over 100,000 keys, removing one of 40
# members moves 2.7% more keys than its share with 400 slots each, 0.5% with 1600. The size
# depends on the member count in steps only, so adding or removing a member rarely changes it
# (a change of size moves every key).
TABLE_SIZES = (16381, 65537, 262147, 1048573)
SLOTS_PER_MEMBER = 1000
_INF = float("inf")


def table_size(members: int) -> int:
    for size in TABLE_SIZES:
        if size >= SLOTS_PER_MEMBER * members:
            return size
    return TABLE_SIZES[-1]


def key_hash(key: bytes) -> int:
    # Knuth's multiplicative step over CRC-32: CRC is linear, so keys that differ in one
    # character would otherwise land in related slots
    return ((crc32(key) * 2654435761) & 0xFFFFFFFF) ^ (crc32(key[::-1]) << 7)


def ip_hash_key(address: bytes) -> bytes:
    """nginx ip_hash: the first three octets of an IPv4 address, the whole of any other."""
    if address.count(b".") == 3 and b":" not in address:
        return address.rpartition(b".")[0]
    return address


def build_table(members: tuple[MemberState, ...], size: int) -> list[int]:
    """Weighted Maglev population: slot -> index into ``members``."""
    n = len(members)
    table = [-1] * size
    if n == 0:
        return table
    offsets, skips = [], []
    for m in members:
        digest = hashlib.sha256(m.address.encode()).digest()
        offsets.append(int.from_bytes(digest[:8], "big") % size)
        skips.append(int.from_bytes(digest[8:16], "big") % (size - 1) + 1)
    weights = [max(m.weight, 0) for m in members]
    top = max(weights)
    if top == 0:
        return table
    taken = [0] * n  # the next position in each member's permutation
    filled = 0
    turn = 0
    while True:
        turn += 1
        for i in range(n):
            w = weights[i]
            # a member of weight w takes a turn in w/top of the rounds
            if (turn * w) // top == ((turn - 1) * w) // top:
                continue
            offset, skip, j = offsets[i], skips[i], taken[i]
            slot = (offset + j * skip) % size
            while table[slot] >= 0:
                j += 1
                slot = (offset + j * skip) % size
            table[slot] = i
            taken[i] = j + 1
            filled += 1
            if filled == size:
                return table


class ConsistentHash:
    """Maglev table over the members that take traffic (see the module docstring)."""

    __slots__ = ("_key", "_ring", "_size", "_table", "members")

    def __init__(self, ring: tuple[MemberState, ...],
                 previous: ConsistentHash | None = None) -> None:
        """``ring``: the members with a weight; ``members``: those of them taking traffic now
        (what panic mode counts). ``previous``: the pool's balancer this one replaces, whose
        table is taken over when the ring is the same (a state change: a health flip, or a
        full apply that left the group's members as they were): 1.5 us for the comparison
        against 4.7 ms to fill the table of a group of 10. (A shared cache of recent tables
        did this before; with more than its 64 entries of hash groups they evicted each
        other, and a flip of 100 of them refilled every table: 1.06 s.)
        """
        self._ring = ring
        self.members = taking_traffic(ring)
        self._size = table_size(len(ring))
        key = tuple([(m.address, m.weight) for m in ring])
        self._key = key
        self._table = previous._table if previous is not None and previous._key == key \
            else build_table(ring, self._size)

    def pick(self, skip: Container[MemberState], now: float, panic: bool) -> MemberState | None:
        """Without a key (the request lacks the hashed field): the first eligible member."""
        return self.pick_key(b"", skip, now, panic)

    def pick_key(self, key: bytes, skip: Container[MemberState], now: float,
                 panic: bool) -> MemberState | None:
        if not self.members:
            return None
        ring = self._ring
        limit = _INF if panic else now
        table = self._table
        size = self._size
        slot = key_hash(key) % size
        member = ring[table[slot]]
        if member.takes_traffic and eligible(member, skip, limit):
            return member
        # the key's member is out for now: the next slots' members take its keys
        for step in range(1, size):
            member = ring[table[(slot + step) % size]]
            if member.takes_traffic and eligible(member, skip, limit):
                return member
        return None

    def owner(self, key: bytes) -> MemberState | None:
        """The member a key belongs to while every member is usable (tests, the URL tool)."""
        return self._ring[self._table[key_hash(key) % self._size]] if self._ring else None
