"""Members, passive health and selection: which member of a group gets the next try.

    member.py    MemberState: one member's live state, kept across reloads by address
    outlier.py   passive health: ejection after consecutive failures, panic
    balancer.py  the one eligibility test; smooth WRR, least_conn, random2
    pool.py      Pool: a group at run time (members, balancer, settings, idle connections)

Imports ``slb.model`` only (and ``slb.metrics`` for a type): never the proxy. Idle upstream
connections are seen through the ``IdleConnection`` protocol.
"""
