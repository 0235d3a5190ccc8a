"""Two processes (torchrun, gloo on CPU) train exactly as one process holding the whole batch,
and a 2-process run stopped and resumed continues the same curve."""

from __future__ import annotations

import pytest
from helpers import torchrun
from test_trainer import config_for, losses, make_token_dataset, tiny_overrides

from quadgpt.trainer import train


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path):
    data = make_token_dataset(tmp_path / "data")
    # constant lr after warmup: stopping at step 3 and extending to 6 keeps every step's lr
    common = dict(schedule="constant", eval_interval=3, ckpt_interval=3)
    train(config_for(data, tmp_path / "one", max_steps=6, batch_size=4, **common))

    two = tmp_path / "two"
    torchrun(tiny_overrides(data, two, max_steps=3, batch_size=2, **common), tmp_path)
    torchrun(tiny_overrides(data, two, max_steps=6, batch_size=2, resume="auto", **common), tmp_path)

    one_loss, two_loss = losses(tmp_path / "one"), losses(two)
    assert sorted(two_loss) == list(range(1, 7))
    for step in range(1, 4):  # plain 2-process equivalence
        assert two_loss[step] == pytest.approx(one_loss[step], abs=1e-5), step
    for step in range(4, 7):  # after the 2-process stop and resume
        assert two_loss[step] == pytest.approx(one_loss[step], abs=1e-5), step
    one_val, two_val = losses(tmp_path / "one", "val_loss"), losses(two, "val_loss")
    assert two_val[6] == pytest.approx(one_val[6], abs=1e-5)
