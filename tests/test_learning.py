"""The default pendulum run learns the swing-up (issue 2's acceptance marks); slow, so marked."""
from __future__ import annotations

import pytest

from conftest import compose_config
from workbench.train import run_training


@pytest.mark.slow
def test_default_pendulum_run_learns_the_swing_up(tmp_path):
    cfg = compose_config(["logger.mode=disabled"])  # the defaults exactly as `workbench train` runs them
    result = run_training(cfg, tmp_path / "run")
    final = result.history[-1]
    assert result.frames >= 2_000_000 - 32768
    assert final["info/episode_reward"] >= -300  # a random policy scores about -1200
    assert result.final_eval_return >= -250
    # and it was learned, not given: the first evaluation is far below the marks
    first_eval = next(row["eval/episode_reward"] for row in result.history if "eval/episode_reward" in row)
    assert first_eval < -600
