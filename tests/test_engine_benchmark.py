"""benchmarks/distill.py credits each engine with the scene-passes it really trains per epoch."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from distill import engine_scenes, previous_engine_passes, this_engine_passes  # noqa: E402

from sas3d.distill.batching import EpochPlan  # noqa: E402


def _previous_engine_epoch(n: int, batch: int, world: int) -> int:
    """Scene-passes of one epoch, walked as the previous engine's run_epoch did (commit 9a54bf5):
    each rank pads its order by wrapping to ceil(n / W) scenes, then takes chunks of B / W per step,
    the last step's chunk holding what is left (or the last B / W scenes when nothing is)."""
    per_rank = math.ceil(n / world)
    per_step = max(1, batch // world)
    steps = math.ceil(per_rank / per_step)
    order = [i % n for i in range(per_rank)]
    return world * sum(len(order[s * per_step:(s + 1) * per_step] or order[-per_step:]) for s in range(steps))


@pytest.mark.parametrize("n,batch", [(1, 1), (3, 2), (4, 2), (5, 2), (7, 3), (6, 4)])
def test_scene_passes_match_a_walk_of_each_engine(n, batch):
    plan = EpochPlan(num_scenes=n, global_batch=batch, world_size=1, seed=0)
    walked = sum(len(plan.global_batch_scenes(0, s)) for s in range(plan.steps))
    assert this_engine_passes(n, batch) == walked
    assert previous_engine_passes(n, 1) == _previous_engine_epoch(n, batch, 1)


def test_three_rooms_at_batch_two_would_credit_the_previous_engine_with_a_pass_it_never_trained():
    assert (previous_engine_passes(3, 1), this_engine_passes(3, 2)) == (3, 4)


def test_engine_rooms_are_cut_to_a_multiple_of_the_batch():
    rooms = [Path(f"scene{i}") for i in range(4)]
    assert engine_scenes(rooms, 2) == rooms
    assert engine_scenes(rooms[:3], 2) == rooms[:2]
    with pytest.raises(SystemExit):
        engine_scenes(rooms[:1], 2)
