"""Passive health: ejecting members that fail, and panic when too many are ejected.

As Envoy's outlier detection: ``max_fails`` consecutive failures eject a member for
``base_ejection * ejections`` seconds, capped at ``max_ejection``; the multiplier is forgotten
once the member has stayed healthy for ``max_ejection`` seconds. A failure is what nginx counts by
default (connect error or timeout, read timeout, connection lost, malformed response); a 5xx is an
answer, not a failure.

Panic (Envoy's healthy panic threshold): when fewer than ``panic_threshold`` percent of a pool's
members are usable, balancing ignores ejection and uses all of them, so that ejection plus a bad
deploy does not become a total outage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from slb.balancing.member import MemberState

if TYPE_CHECKING:
    from slb.model import PassiveHealth


def is_ejected(member: MemberState, now: float) -> bool:
    return member.ejected_until > now


def record_failure(member: MemberState, now: float, policy: PassiveHealth) -> bool:
    """Count one failure of ``member``; True when it ejects the member."""
    member.failures += 1
    member.consecutive_failures += 1
    if (policy.max_fails <= 0 or member.consecutive_failures < policy.max_fails
            or is_ejected(member, now)):
        return False
    if member.ejections and now - member.ejected_until > policy.max_ejection:
        member.ejections = 0  # healthy long enough: the multiplier decays (Envoy)
    member.ejections += 1
    member.ejected_until = now + min(policy.base_ejection * member.ejections,
                                     policy.max_ejection)
    member.consecutive_failures = 0
    return True


def in_panic(members: Sequence[MemberState], now: float, threshold: int) -> bool:
    """Fewer than ``threshold`` percent of ``members`` are usable (not ejected)."""
    usable = sum(1 for m in members if not is_ejected(m, now))
    return usable * 100 < len(members) * threshold


def ejection_horizon(members: Iterable[MemberState]) -> float:
    """No member is ejected past this time: before it, panic needs no count."""
    return max((m.ejected_until for m in members), default=0.0)
