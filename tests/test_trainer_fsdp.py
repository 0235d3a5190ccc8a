"""FSDP2 on the CPU (torchrun, 2 processes over gloo): equal to one process at the same global batch,
exact resume, checkpoints that load in one process, sharded (DCP) checkpoints, and a two-node launch.

The runs share one schedule: constant lr after a 2-step warmup (stopping at step 3 and extending to 6
keeps every step's lr) and 2 micro-batches per step, so gradient accumulation is exercised too.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch
from helpers import REPO_ROOT, run_group, torchrun
from safetensors.torch import load_file
from test_trainer import config_for, losses, make_token_dataset, tiny_overrides

from eval.cli import main as eval_main
from quadgpt.checkpoint import load_model, load_pt
from quadgpt.hf.export import export
from quadgpt.sample_cli import main as sample_main
from quadgpt.trainer import main as train_main
from quadgpt.trainer import train

COMMON = dict(schedule="constant", eval_interval=3, ckpt_interval=3, keep_last=2, global_batch_tokens=8 * 32)
FSDP = ["--train.distributed=fsdp"]
pytestmark = pytest.mark.slow


def fsdp_args(data, out, **train_settings) -> list[str]:
    """Overrides for a 2-process FSDP run: batch 2 per process x 2 processes x 2 micro-batches."""
    return tiny_overrides(data, out, batch_size=2, **(COMMON | train_settings)) + FSDP


def max_diff(a: dict[int, float], b: dict[int, float], steps) -> float:
    return max(abs(a[s] - b[s]) for s in steps)


def flat_tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested dict/list (an optimizer state), by path."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
        else:
            out.update(flat_tensors(value, f"{prefix}{key}."))
    return out


def assert_tensors_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), atol=atol, rtol=0, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process for 6 steps; FSDP for 6 steps; FSDP stopped at 3 and resumed to 6."""
    root = tmp_path_factory.mktemp("fsdp")
    data = make_token_dataset(root / "data")
    train(config_for(data, root / "one", max_steps=6, batch_size=4, **COMMON))
    torchrun(fsdp_args(data, root / "fsdp", max_steps=6), root)
    torchrun(fsdp_args(data, root / "part", max_steps=3), root)
    torchrun(fsdp_args(data, root / "part", max_steps=6, resume="auto"), root)
    return root, data


def test_fsdp_losses_equal_one_process(runs, capsys):
    root, _ = runs
    one, fsdp = losses(root / "one"), losses(root / "fsdp")
    assert sorted(fsdp) == list(range(1, 7))
    diff = max_diff(one, fsdp, range(1, 7))
    val_diff = max_diff(losses(root / "one", "val_loss"), losses(root / "fsdp", "val_loss"), (0, 3, 6))
    with capsys.disabled():
        print(f"\nFSDP (2 processes) vs one process: max |loss diff| {diff:.2e} over 6 steps, val {val_diff:.2e}")
    assert diff < 1e-5 and val_diff < 1e-5
    meta = json.loads((root / "fsdp" / "step_00000006" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["format"] == "safetensors"


def test_fsdp_resume_is_exact_with_optimizer_state(runs, capsys):
    root, _ = runs
    full, resumed = losses(root / "fsdp"), losses(root / "part")
    diff = max_diff(full, resumed, range(1, 7))
    with capsys.disabled():
        print(f"\nFSDP stopped at step 3 and resumed vs uninterrupted: max |loss diff| {diff:.2e}")
    assert diff < 1e-6
    a, b = root / "fsdp" / "step_00000006", root / "part" / "step_00000006"
    assert_tensors_close(load_file(a / "model.safetensors"), load_file(b / "model.safetensors"), atol=1e-6)
    optim_a, optim_b = load_pt(a / "optimizer.pt"), load_pt(b / "optimizer.pt")
    assert "blocks.0.attn.c_attn.weight" in optim_a["state"]  # keyed by name, whole (gathered)
    assert_tensors_close(flat_tensors(optim_a["state"]), flat_tensors(optim_b["state"]), atol=1e-6)


def test_fsdp_checkpoint_is_the_single_process_format(runs, tmp_path, capsys):
    """The FSDP checkpoint holds the same tensors as the one-process one (tied head stored once),
    and sampling, export and eval work from it in one process."""
    root, data = runs
    fsdp_ckpt, one_ckpt = root / "fsdp" / "step_00000006", root / "one" / "step_00000006"
    fsdp_w, one_w = load_file(fsdp_ckpt / "model.safetensors"), load_file(one_ckpt / "model.safetensors")
    assert "lm_head.weight" not in fsdp_w
    assert_tensors_close(fsdp_w, one_w, atol=1e-4)
    model, _, _ = load_model(fsdp_ckpt)
    assert model.lm_head.weight is model.wte.weight
    assert flat_tensors(load_pt(fsdp_ckpt / "optimizer.pt")["state"]).keys() == \
        flat_tensors(load_pt(one_ckpt / "optimizer.pt")["state"]).keys()

    assert sample_main([str(fsdp_ckpt), "--prompt", "!", "--max-new-tokens", "4", "--device", "cpu", "--seed", "1"]) == 0
    assert (export(fsdp_ckpt, tmp_path / "hf") / "model.safetensors").is_file()
    out = tmp_path / "ppl.json"
    assert eval_main(["ppl", str(fsdp_ckpt), "--data", str(data), "--windows", "8", "--json", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["loss"] == pytest.approx(losses(root / "fsdp", "val_loss")[6], abs=1e-5)


def test_init_from_a_single_process_checkpoint_under_fsdp(runs):
    root, data = runs
    torchrun(fsdp_args(data, root / "init", max_steps=1, warmup_steps=1, init_from=str(root / "one" / "step_00000006")), root)
    assert losses(root / "init", "val_loss")[0] == pytest.approx(losses(root / "one", "val_loss")[6], abs=1e-5)


def test_sharded_dcp_checkpoints_resume_exactly_and_load_in_one_process(runs, tmp_path, capsys):
    root, data = runs
    dcp = ["--train.checkpoint_format=dcp"]
    run = tmp_path / "dcp"
    torchrun(fsdp_args(data, run, max_steps=3) + dcp, tmp_path)
    ckpt3 = run / "step_00000003"
    assert sorted(p.name for p in (ckpt3 / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (ckpt3 / "model.safetensors").exists() and not (ckpt3 / "optimizer.pt").exists()
    assert (run / "best" / "dcp" / ".metadata").is_file()

    # another process count is refused before anything is written (each rank's data position is saved)
    assert train_main(tiny_overrides(data, run, batch_size=4, max_steps=6, resume="auto", **COMMON) + dcp) == 2
    assert "written by 2 processes, this run has 1" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("step_")) == ["step_00000003"]

    torchrun(fsdp_args(data, run, max_steps=6, resume="auto") + dcp, tmp_path)
    diff = max_diff(losses(root / "fsdp"), losses(run), range(1, 7))
    with capsys.disabled():
        print(f"\nFSDP with DCP checkpoints, stopped at 3 and resumed vs uninterrupted: max |loss diff| {diff:.2e}")
    assert diff < 1e-6

    model, _, _ = load_model(run / "step_00000006")  # one process reads every rank's shards
    reference = load_file(root / "fsdp" / "step_00000006" / "model.safetensors")
    assert_tensors_close({k: v for k, v in model.state_dict().items() if k in reference}, reference, atol=1e-6)
    out = tmp_path / "ppl.json"
    assert eval_main(["ppl", str(run), "--data", str(data), "--windows", "8", "--json", str(out)]) == 0  # best/
    assert json.loads(out.read_text())["loss"] == pytest.approx(min(losses(run, "val_loss").values()), abs=1e-5)
    assert (export(run / "step_00000006", tmp_path / "hf") / "model.safetensors").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_as_one_process(runs, tmp_path):
    """Two torchrun agents (--nnodes 2, one process each) meet by c10d rendezvous on 127.0.0.1;
    FSDP with activation checkpointing over them equals one process."""
    root, data = runs
    port = free_port()
    args = fsdp_args(data, tmp_path / "nodes", max_steps=3) + ["--train.activation_checkpointing=true"]
    agents = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "quadgpt-test",
         str(REPO_ROOT / "train.py"), *args]
        for rank in (0, 1)
    ]
    run_group(agents, tmp_path)
    assert max_diff(losses(root / "one"), losses(tmp_path / "nodes"), range(1, 4)) < 1e-5
