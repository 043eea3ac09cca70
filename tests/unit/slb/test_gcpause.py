"""``slb.gcpause``: the collector kept out of bulk work, and out of step with other processes."""

from __future__ import annotations

import gc
import random

from slb import gcpause


def test_each_process_draws_its_own_middle_generation_threshold() -> None:
    before = gc.get_threshold()
    try:
        drawn = set()
        for seed in range(40):  # 40 nodes started: their collections no longer coincide
            gc.set_threshold(*before)
            young, middle, old = gcpause.desynchronise(random.Random(seed))
            assert gc.get_threshold() == (young, middle, old)
            assert (young, old) == (before[0], before[2])  # only the middle one moves
            assert before[1] * 0.6 <= middle <= before[1] * 1.4
            drawn.add(middle)
        assert len(drawn) >= 5
    finally:
        gc.set_threshold(*before)
