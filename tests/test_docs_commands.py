"""Every command in README.md and docs/ runs as written, so the docs cannot drift from the code.

The commands are read from the ```bash blocks of the docs. Each one either runs here, in a
scratch copy of a small workspace holding what the docs name (a tiny trained model at
``runs/demo``, ``runs/tiny``..., prepared data, a corpus), and must exit 0; or it is listed in
``NOT_RUN_HERE`` with the reason it cannot run on a CPU test machine (GPUs, several nodes, the
internet, or tens of minutes). A command in neither fails the coverage test: a new command in
the docs needs a decision.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

# command (as in the docs, comments stripped) -> why it cannot run in this test
NOT_RUN_HERE: dict[str, str] = {
    "make demo": "the demo trains for ~8 minutes; tests/test_trainer.py runs its pipeline",
    "make test": "this suite",
    "quadgpt prepare hf:HuggingFaceFW/fineweb --subset sample-10BT --split train --streaming --out data/fineweb": "internet",
    "quadgpt prepare hf:roneneldan/TinyStories --out data/tinystories --num-proc 8": "internet",
    "quadgpt prepare hf:HuggingFaceFW/fineweb --subset sample-10BT --streaming --out data/fineweb": "internet",
    "quadgpt import-hf openai-community/gpt2 --out ckpt/gpt2": "internet (tests/test_gpt2_import.py imports a local GPT-2)",
    "python train.py --config configs/gpt2-small.toml --data.dataset=data/fineweb": "GPU scale, and FineWeb",
    "torchrun --standalone --nproc_per_node 8 train.py --config configs/gpt2-small.toml": "8 GPUs",
    "accelerate launch --num_processes 8 train.py --config configs/gpt2-small.toml": "8 GPUs",
    "torchrun --standalone --nproc_per_node 8 train.py --config configs/gpt2-medium.toml --train.distributed=fsdp": "8 GPUs",
    "python train.py --config configs/gpt2-small.toml --resume auto": "GPU scale",
    "quadgpt eval forgetting": "the default probe trains for minutes",
    "quadgpt eval forgetting --replay 0.25": "the default probe trains for minutes",
    "quadgpt eval forgetting --model.ffn.kind=kan --freeze-base": "the default probe trains for minutes",
    "quadgpt eval forgetting --model.ffn.kind=kan --model.ffn.base=none": "the default probe trains for minutes",
    "quadgpt eval forgetting --tasks data/a,data/b,data/c --steps 300,100,100 --config configs/tiny.toml": "500 steps: minutes",
    "bash bench/gpu_all.sh": "GPU",
    "python bench/ffn.py --widths 768 && python bench/ffn.py --widths 1024": "GPU benchmark",
    "python bench/ffn.py --widths 768": "GPU benchmark",
    "python bench/ffn.py --widths 1024": "GPU benchmark",
    "python bench/ffn.py --no-table --step --kinds mlp,swiglu,quadratic,kan": "GPU benchmark",
    "python bench/ffn.py --no-table --step --kinds mlp,quadratic,kan": "GPU benchmark",
    "python bench/train_throughput.py": "GPU benchmark (gpt2-small)",
    "python bench/train_throughput.py --kinds mlp,quadratic --batch-size 32 --block-size 1024": "GPU benchmark",
    "python bench/generate.py --config configs/gpt2-small.toml": "GPU benchmark",
    'python -m torch.distributed.run --standalone --nproc_per_node "$(nvidia-smi -L | wc -l)" bench/distributed.py': "GPUs",
    "python -m quadgpt study --config configs/study-gpu.toml --study.seeds=1 --study.lrs=6e-4 --study.steps_a=80 "
    "--study.steps_b=20 --study.eval_every_b=10 --train.eval_interval=20 --study.out=bench-out/study-gpu-smoke": "GPU study preset",
    "python -m pytest -q tests/test_kernel_quadratic.py tests/test_kernel_kan.py": "part of this suite",
    "python -m pytest -q tests/test_kernel_kan.py": "part of this suite",
    "python -m pytest -q tests/test_kernel_kan.py -m gpu": "GPU",
}


def is_not_run(command: str) -> bool:
    """Commands that need what no CPU test machine has, by their shape (beside the table)."""
    multi_node = "--nnodes 2" in command and "$MASTER_ADDR" in command
    # the published comparisons and studies: an hour or more each (tests/test_study.py and
    # tests/test_eval.py run their pipelines at toy scale)
    study = command.startswith(("quadgpt compare", "OMP_NUM_THREADS=1 quadgpt compare", "quadgpt study"))
    return command in NOT_RUN_HERE or multi_node or study


def doc_commands() -> list[tuple[str, str]]:
    """``(doc file, command)`` for every line of every ```bash block (continuations joined)."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", doc.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = re.split(r"\s{2,}#", line)[0].strip()
                if command and not command.startswith("#"):
                    found.append((str(doc.relative_to(REPO)), re.sub(r"\s+", " ", command)))
    return found


RUNNABLE = sorted({command for _, command in doc_commands() if not is_not_run(command)})


def test_every_doc_command_is_run_or_says_why_not():
    """The reasons table may not go stale either: every entry is still in the docs."""
    commands = {command for _, command in doc_commands()}
    assert len(commands) > 30
    assert not set(NOT_RUN_HERE) - commands, "NOT_RUN_HERE lists commands no doc has any more"


# --------------------------------------------------------------------------------------
# The workspace the docs assume
# --------------------------------------------------------------------------------------


def run(args: list[str] | str, cwd: Path, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(cwd),  # `~/corpus/` is the workspace's corpus
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def train_tiny(ws: Path, out: str, *overrides: str) -> None:
    """A 4-step run of the tiny config (checkpoint and best/ included)."""
    steps = ["--train.max_steps=4", "--train.eval_interval=2", "--train.ckpt_interval=2", "--train.warmup_steps=1"]
    args = [sys.executable, "-m", "quadgpt", "train", "--config", "configs/tiny.toml", f"--train.out_dir={out}"]
    done = run([*args, "--data.val_windows=8", "--train.batch_size=2", *steps, *overrides], ws)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("docs-workspace")
    for name in ("configs", "train.py", "sample.py", "bench"):
        (ws / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "docs" / "results", ws / "docs" / "results")  # `eval.report` writes here
    corpus = ws / "corpus" / "sub"
    corpus.mkdir(parents=True)
    for i in range(60):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * 100)
    logs = ws / "logs" / "2026"
    logs.mkdir(parents=True)
    (logs / "app.jsonl").write_text("".join(f'{{"body": "log line {i} says hello"}}\n' for i in range(40)))
    (ws / "notes.txt").write_text("import os\nprint(os.getcwd())\n" * 20)
    (ws / "prompts.txt").write_text("import os\nclass Foo:\n")
    # data/stdlib holds the small corpus above: what the docs run on it takes seconds, not minutes
    # (`quadgpt prepare builtin:stdlib --out data/stdlib` itself runs in its own copy)
    prepared = run([sys.executable, "-m", "quadgpt", "prepare", "corpus", "--out", "data/stdlib"], ws)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    (ws / "data" / "stdlib-code").symlink_to("stdlib")  # relative links stay inside each copy
    prepared = run([sys.executable, "-m", "quadgpt", "prepare", "corpus", "--tokenizer", "bytes", "--out",
                    "data/stdlib-code-bytes"], ws)  # what the byte-level study prepares from builtin:stdlib-code
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    train_tiny(ws, "runs/demo")
    (ws / "runs" / "tiny").symlink_to("demo")
    (ws / "runs" / "gpt2-run").symlink_to("demo")  # a GELU MLP: GPT-2's shape
    (ws / "runs" / "mlp").symlink_to("demo")  # the tiny config's FFN is the GELU MLP
    for kind in ("quadratic", "kan"):
        train_tiny(ws, f"runs/{kind}", f"--model.ffn.kind={kind}")
    (ws / "out").mkdir()
    exported = run([sys.executable, "-m", "quadgpt", "export", "runs/demo", "out/hf-export"], ws)
    assert exported.returncode == 0, exported.stderr[-3000:]
    return ws


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE)
def test_doc_command_runs_as_written(workspace, tmp_path, command):
    scratch = tmp_path / "ws"
    shutil.copytree(workspace, scratch, symlinks=True)
    if "data/stdlib " in command + " " and command.startswith("quadgpt prepare"):
        shutil.rmtree(scratch / "data" / "stdlib")  # the prepare command itself makes it
    done = run(["bash", "-c", command], scratch, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
