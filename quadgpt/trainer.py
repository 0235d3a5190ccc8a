"""``quadgpt train`` / ``python train.py``: the training loop, on HF accelerate.

One code path for a CPU, one GPU, and many GPUs or nodes (``accelerate launch`` or ``torchrun``
set the process group up; DDP by default, FSDP2 with ``train.distributed=fsdp``, wrapped by
``parallel.py``). A step is
``accum`` micro-batches whose gradients are averaged; ``accum`` follows from the global batch in
tokens. Every rank draws the same global batch from the loader and keeps its slice, so N
processes reproduce one process holding the whole batch.

Exact resume: a checkpoint holds the weights, the optimizer state, the step (the learning rate is
a function of it, see ``schedule.py``), the loader's position and each rank's RNG states; on a
CPU the resumed run logs the same losses as the uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .atomic import tmp_sibling, write_json_atomic
from . import parallel
from .checkpoint import (
    BEST_NAME,
    DCP_DIR,
    OPTIMIZER_FILE,
    STEP_PREFIX,
    CheckpointError,
    check_compatible,
    check_world_size,
    commit_tmp_folder,
    latest_checkpoint,
    load_pt,
    load_rank_state,
    load_sharded,
    load_weights,
    sharded_entries,
    prepare_tmp_folder,
    read_meta,
    resolve_checkpoint,
    resolve_resumable,
    save_rank_state,
    save_sharded,
    set_rng_state,
    step_checkpoints,
    write_model_files,
)
from .config import Config, ConfigError, load_config, split_config_args
from .data import BatchLoader, DataError, check_model_fits_data, validation_windows
from .logging_utils import RunLogger, format_line, mfu, peak_tflops, set_aside_metrics, truncate_metrics
from .metrics import perplexity
from .model import GPT
from .safety import UnsafeOutput, check_output_path
from .run_settings import RESUME_MAY_CHANGE, check_same_settings
from .schedule import check_schedule, lr_at


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; the message names the last good checkpoint."""


class ResultLost(RuntimeError):
    """The run ended but its final checkpoint (or its best/ weights) could not be saved.

    ``summary`` is the run summary ``Trainer.run`` returned; the message names what was lost and
    the newest checkpoint that was saved.
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is made of micro-batches."""

    accum: int  # micro-batches per step on each process
    tokens_per_step: int  # over all processes
    horizon: int  # optimizer steps the schedule spans (0 = unknown)


def plan_batches(config: Config, world_size: int) -> BatchPlan:
    """Gradient accumulation from ``train.global_batch_tokens`` and the schedule's horizon."""
    t = config.train
    for name in ("batch_size", "log_interval", "eval_interval", "ckpt_interval", "keep_last", "max_bad_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be >= 1; got {getattr(t, name)}.")
    for name in ("max_steps", "max_tokens", "global_batch_tokens"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0 (0 = off); got {getattr(t, name)}.")
    micro_tokens = t.batch_size * config.model.block_size * world_size
    accum = 1
    if t.global_batch_tokens:
        if t.global_batch_tokens % micro_tokens:
            raise ConfigError(
                f"train.global_batch_tokens={t.global_batch_tokens} is not a multiple of batch_size * block_size * "
                f"processes = {t.batch_size} * {config.model.block_size} * {world_size} = {micro_tokens}. "
                f"Use e.g. {max(1, round(t.global_batch_tokens / micro_tokens)) * micro_tokens}."
            )
        accum = t.global_batch_tokens // micro_tokens
    tokens_per_step = micro_tokens * accum
    limits = [t.max_steps] if t.max_steps else []
    if t.max_tokens:
        limits.append(math.ceil(t.max_tokens / tokens_per_step))
    if not limits and not t.max_time:
        raise ConfigError("The run has no end: set train.max_steps, train.max_tokens or train.max_time.")
    return BatchPlan(accum, tokens_per_step, min(limits) if limits else 0)


def check_data(config: Config) -> None:
    """Every dataset the run reads (training, replay, extra validation) fits the model's
    tokenizer and vocabulary: checked before anything is created (DataError otherwise)."""
    paths = [config.data.dataset, config.data.replay_dataset, *parse_extra_val(config.data.extra_val).values()]
    for path in filter(None, paths):
        check_model_fits_data(config.model, path)


def parse_extra_val(spec: str) -> dict[str, str]:
    """``"name=path,name2=path2"`` -> ``{name: path}`` (``data.extra_val``)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"data.extra_val entry '{item}' must look like name=path (several joined by commas).")
        out[name.strip()] = path.strip()
    return out


_WRAPPER_PREFIXES = ("_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def check_out_dir(config: Config) -> None:
    """Refuse (``UnsafeOutput``) a ``train.out_dir`` that is, holds or lies inside the data or the
    ``init_from`` checkpoint the run reads: its config.json, checkpoints and ``best/`` would land
    on them. (A ``--resume`` checkpoint inside the run folder is the normal case.)"""
    d, t = config.data, config.train
    inputs = [d.dataset, d.replay_dataset, *parse_extra_val(d.extra_val).values(), t.init_from]
    check_output_path(t.out_dir, inputs, what="train.out_dir", suffix="run")


def plain_name(name: str) -> str:
    """A parameter's name without the DDP / FSDP / torch.compile wrapper parts."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name.removeprefix("module.")


def param_groups(model: torch.nn.Module, weight_decay: float, decayed: set[str]) -> list[dict[str, Any]]:
    """AdamW groups of the (possibly wrapped) ``model``: weight decay on the parameters named in
    ``decayed``, none on the rest.

    ``decayed`` is computed on the unwrapped model (``decayed_names``) because FSDP flattens
    parameters, after which their shapes no longer tell a matrix from a bias.
    """
    params = [(plain_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in params if n in decayed], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n not in decayed], "weight_decay": 0.0},
    ]


def decayed_names(model: torch.nn.Module) -> set[str]:
    """Matrices and embeddings are decayed; biases and LayerNorm gains (1-D) are not."""
    return {name for name, p in model.named_parameters() if p.dim() >= 2}


def keep_freed_memory_in_process() -> None:
    """Stop glibc from returning large freed blocks to the kernel (CPU training only).

    glibc serves every allocation above 32 MiB with fresh ``mmap`` pages, which the kernel zeroes
    on first touch. The fp32 logits of a 50k-token vocabulary are ~200 MB per micro-batch of
    8 x 128, so each step faulted in about 1 GB: on configs/tiny.toml that was 12% of the step
    time (0.36 s of system time per step, measured). Reusing the heap avoids it; the cost is
    that the process keeps its peak memory until it exits. No-op where glibc is absent.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**30)
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep the default allocator behaviour
        return


def make_accelerator(config: Config):
    """An ``accelerate.Accelerator`` for ``train.device`` / ``train.dtype``: device, process group
    and autocast (FSDP wrapping is ``parallel.py``'s, on CPU and GPU alike)."""
    from accelerate import Accelerator

    t = config.train
    device = t.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={t.device!r} but no CUDA device is visible; use train.device=cpu.")
        if ":" in device:
            torch.cuda.set_device(int(device.split(":", 1)[1]))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device == "cpu":
        keep_freed_memory_in_process()
    else:
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N; got {t.device!r}.")
    dtype = t.dtype if t.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    if t.distributed == "fsdp" and dtype == "fp16":
        raise ConfigError("train.dtype=fp16 is not supported with train.distributed=fsdp; use bf16 (or fp32).")
    precision = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[dtype]
    return Accelerator(cpu=device == "cpu", mixed_precision=precision, step_scheduler_with_optimizer=False)


class Trainer:
    """One training run. ``Trainer(config).run()`` returns the summary dict of ``train``.

    ``compute_loss(x, y)`` is the single place the model's loss is made; tests replace it to
    inject non-finite losses.
    """

    def __init__(self, config: Config) -> None:
        from accelerate.utils import set_seed

        self.config = config
        t = config.train
        check_schedule(t)
        check_out_dir(config)
        check_data(config)
        self.accelerator = acc = make_accelerator(config)
        self.rank, self.world = acc.process_index, acc.num_processes
        self.is_main = acc.is_main_process
        self.fsdp = t.distributed == "fsdp" and self.world > 1
        if t.distributed == "fsdp" and not self.fsdp:
            print("quadgpt: train.distributed=fsdp with one process: nothing to shard, training unsharded.", file=sys.stderr)
        self.sharded_ckpt = t.checkpoint_format == "dcp"
        from .validate import check_run  # imports this module: here, not at the top

        check_run(config, self.world)  # before any folder is made or step taken
        self.plan = plan_batches(config, self.world)
        self.run_dir = Path(t.out_dir)
        self.device = acc.device

        # where to start: a resumed run, another run's weights, or scratch
        self.resume_from = self._find_resume()
        set_seed(t.seed)  # same initial weights on every rank
        model = GPT(config.model)
        if self.resume_from is not None:
            if not (self.resume_from / DCP_DIR).is_dir():  # a sharded one is loaded after wrapping
                load_weights(model, self.resume_from)
        elif t.init_from:
            source = resolve_checkpoint(t.init_from)
            check_compatible(source, config)
            load_weights(model, source)
        self.raw_model = model
        self.flops_per_token = model.flops_per_token(config.model.block_size)
        decayed = decayed_names(model)  # before FSDP flattens the parameters
        # model before optimizer: under FSDP the optimizer must hold the sharded parameters
        self.model = parallel.parallelize(model, acc, fsdp=self.fsdp, activation_checkpointing=t.activation_checkpointing,
                                          compile=t.compile, dtype=acc.mixed_precision)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        optimizer = torch.optim.AdamW(
            param_groups(self.model, t.weight_decay, decayed), lr=t.lr,
            betas=(t.beta1, t.beta2), **fused,
        )
        self.optimizer = acc.prepare(optimizer)
        self._make_data()

        self.step = 0
        self.tokens = 0
        self.elapsed_before = 0.0  # seconds spent in earlier segments of a resumed run
        self.skipped_steps = 0
        self.bad_in_row = 0
        self.best_val = math.inf
        self.last_val: float | None = None
        self.last_val_step: int | None = None  # step of last_val's evaluation
        self.last_checkpoint: Path | None = None
        self.stop_signal: str | None = None
        self.best_save_error: str | None = None  # set while best/ is older than the best evaluation
        if self.resume_from is not None:
            self._load_state(self.resume_from)  # restores every RNG too
        else:
            torch.manual_seed(t.seed + self.rank)  # dropout differs per rank; rank 0 matches a single process
            # a fresh run never appends to the record of one that died before its first checkpoint
            aside = set_aside_metrics(self.run_dir) if self.is_main else None
            if aside is not None:
                print(f"quadgpt: {self.run_dir} held the metrics of a run with no checkpoint; kept as {aside.name}, "
                      "starting a fresh record.", file=sys.stderr, flush=True)
        self.logger = RunLogger(
            self.run_dir, enabled=self.is_main, config=config.to_dict(), tensorboard=t.tensorboard,
            wandb=t.wandb, wandb_project=t.wandb_project,
        )
        self.peak = peak_tflops(self.device, t.peak_tflops)

    # ----------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------

    def _find_resume(self) -> Path | None:
        t = self.config.train
        existing = latest_checkpoint(self.run_dir)
        if t.resume:
            found = existing if t.resume == "auto" else resolve_resumable(t.resume)
            if found is not None:  # continue the same run, not a similar one
                check_world_size(found, self.world)  # the first reason to refuse, when it is one
                check_same_settings(
                    found / "config.json", self.config, RESUME_MAY_CHANGE, f"Checkpoint '{found}'",
                    "resume with its settings (its config.json) or start a new run in another train.out_dir.",
                )
            return found
        if existing is not None:
            raise ConfigError(
                f"train.out_dir '{self.run_dir}' already holds checkpoints (newest: {existing.name}). Continue it with "
                "--resume auto (train.resume=auto), or choose another train.out_dir for a new run."
            )
        return None

    def _make_data(self) -> None:
        cfg, t = self.config, self.config.train
        block = cfg.model.block_size
        from .validate import replay_sequences  # checked by check_run

        n_replay = replay_sequences(cfg) if cfg.data.replay_dataset else 0
        common = dict(rank=self.rank, world_size=self.world, sampling=cfg.data.sampling)
        self.loaders = {"train": BatchLoader(cfg.data.dataset, "train", block, t.batch_size - n_replay, seed=t.seed, **common)}
        if n_replay:
            self.loaders["replay"] = BatchLoader(cfg.data.replay_dataset, "train", block, n_replay, seed=t.seed + 1, **common)
        val_sets = {"": cfg.data.dataset} | parse_extra_val(cfg.data.extra_val)
        self.val_sets = {}
        for name, path in val_sets.items():
            x, y = validation_windows(path, block, cfg.data.val_windows)
            self.val_sets[name] = (x[self.rank :: self.world], y[self.rank :: self.world])

    def _load_state(self, folder: Path) -> None:
        meta = read_meta(folder)
        rank_state = load_rank_state(folder, self.rank, self.world)
        for name, loader in self.loaders.items():
            if name not in rank_state["loader"]:
                raise CheckpointError(f"Checkpoint '{folder}' has no '{name}' loader state: resume with the same data.replay_dataset.")
            loader.load_state_dict(rank_state["loader"][name])
        if (folder / DCP_DIR).is_dir():  # weights and optimizer, each rank reading its shards
            stepped = "optim" in sharded_entries(folder)
            state = parallel.sharded_state(self.model, self.optimizer.optimizer if stepped else None)
            load_sharded(folder, state)
            parallel.load_sharded_state(self.model, self.optimizer.optimizer, state)
        else:
            parallel.load_optimizer_state(self.model, self.optimizer.optimizer, load_pt(folder / OPTIMIZER_FILE))
        self.step, self.tokens = int(meta["step"]), int(meta["tokens"])
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self.best_val = float(meta.get("best_val_loss") or math.inf)
        self.last_val = meta.get("val_loss")
        self.last_val_step = meta.get("val_step")
        self.last_checkpoint = folder
        set_rng_state(rank_state["rng"])
        if self.is_main:
            truncate_metrics(self.run_dir, self.step)
            print(f"quadgpt: resuming from {folder} at step {self.step} ({self.tokens:,} tokens).", flush=True)

    # ----------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [loader.next_batch() for loader in self.loaders.values()]
        x = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, y)[1]

    def train_step(self) -> tuple[float, float | None]:
        """One optimizer step. Returns (loss averaged over processes, grad norm or None if skipped).

        Ranks exchange one small tensor per step: [summed loss, stop requested]. Every rank thus
        takes the same skip and stop decisions, whichever rank saw the NaN or the signal.
        """
        acc, t = self.accelerator, self.config.train
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.plan.accum):
            x, y = self.next_batch()
            last = micro == self.plan.accum - 1
            parallel.set_gradient_sync(self.model, last)  # FSDP; DDP's counterpart is no_sync
            sync = contextlib.nullcontext() if last else acc.no_sync(self.model)
            with sync:
                loss = self.compute_loss(x, y)
                acc.backward(loss / self.plan.accum)
            loss_sum += loss.detach().float()
        shared = torch.stack([loss_sum / self.plan.accum, torch.tensor(float(self.stop_signal is not None), device=self.device)])
        loss_total, stops = acc.reduce(shared, reduction="sum").tolist()
        loss_value = loss_total / self.world
        if stops > 0 and self.stop_signal is None:
            self.stop_signal = "signal on another process"
        grad_norm = None
        if math.isfinite(loss_value):
            max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
            if self.fsdp:
                grad_norm = parallel.clip_grad_norm_(self.model, max_norm)
            else:
                grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), max_norm))
        # fp16's loss scaler expects overflowing gradients early on: it skips those steps itself
        overflow_is_normal = self.accelerator.mixed_precision == "fp16" and grad_norm is not None
        if grad_norm is None or not (math.isfinite(grad_norm) or overflow_is_normal):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, None
        lr = lr_at(self.step, t, self.plan.horizon)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over each validation set's fixed windows (split across ranks, summed back)."""
        model = self.model if self.fsdp else self.accelerator.unwrap_model(self.model)
        model.eval()
        batch = self.config.train.batch_size
        results = {}
        for name, (x_all, y_all) in self.val_sets.items():
            total = torch.zeros(2, device=self.device)  # [sum of window losses, windows]
            for i in range(0, len(x_all), batch):
                x, y = x_all[i : i + batch].to(self.device), y_all[i : i + batch].to(self.device)
                with self.accelerator.autocast():
                    _, loss = model(x, y)
                total += torch.stack([loss.float() * len(x), torch.tensor(float(len(x)), device=self.device)])
            total = self.accelerator.reduce(total, reduction="sum")
            results[f"val_loss/{name}" if name else "val_loss"] = (total[0] / total[1]).item()
        return results

    # ----------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "val_loss": self.last_val,
            "val_step": self.last_val_step,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "elapsed": self.elapsed(),
            "skipped_steps": self.skipped_steps,
            "world_size": self.world,
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``step_<N>`` atomically on every rank's behalf, then drop old ones beyond keep_last."""
        final = self.run_dir / f"{STEP_PREFIX}{self.step:08d}"
        if self.last_checkpoint == final:
            return final
        if not self._write_checkpoint(final, full=True):
            return None
        self.last_checkpoint = final
        return final

    def save_best(self) -> None:
        """Weights-only ``best/`` checkpoint (what eval and sampling load). A failed save is
        remembered: while ``best/`` is older than the best evaluation, the run's result is lost."""
        if self._write_checkpoint(self.run_dir / BEST_NAME, full=False):
            self.best_save_error = None
        else:
            self.best_save_error = f"saving it failed (best val loss {self.best_val:.4f} at step {self.step})"

    def _write_checkpoint(self, final: Path, full: bool) -> bool:
        """Write checkpoint folder ``final`` (``full``: with optimizer and per-rank states) through a
        temporary folder every rank writes into; rank 0 renames it into place. Collective.

        On failure (disk full, permissions) the partial folder is removed, the previous
        checkpoint stays as it was, a warning names it, training goes on, and False is returned.
        """
        acc = self.accelerator
        optimizer = self.optimizer.optimizer
        tmp = tmp_sibling(final)
        if self.is_main:
            prepare_tmp_folder(final)
        acc.wait_for_everyone()
        # collectives under FSDP, so outside the try: every rank takes part
        model_state = None if self.sharded_ckpt else parallel.full_model_state(self.model)
        optim_state = parallel.optimizer_state(self.model, optimizer) if full and not self.sharded_ckpt else None
        meta = self._checkpoint_meta() | {"kind": "full" if full else "model", "format": self.config.train.checkpoint_format}
        error: BaseException | None = None
        try:
            if self.sharded_ckpt:
                stepped = full and bool(optimizer.state)
                save_sharded(tmp, parallel.sharded_state(self.model, optimizer if stepped else None))
            if full:
                save_rank_state(tmp, self.rank, {name: loader.state_dict() for name, loader in self.loaders.items()})
            if self.is_main:
                write_model_files(tmp, model_state, self.config, meta)
                if optim_state is not None:
                    torch.save(optim_state, tmp / OPTIMIZER_FILE)
        except Exception as err:  # noqa: BLE001 - reported below, the run continues
            error = err
        failed = acc.reduce(torch.tensor(float(error is not None), device=self.device), reduction="sum").item()
        if self.is_main:
            if failed:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                commit_tmp_folder(final)
                if full:
                    for old in step_checkpoints(self.run_dir)[: -self.config.train.keep_last]:
                        shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        if failed:
            kept = f"the previous checkpoint ({self.last_checkpoint or 'none yet'})" if full else f"the previous '{final}'"
            print(f"quadgpt: WARNING: saving checkpoint {final} failed ({error or 'on another process'}); "
                  f"{kept} is intact.", file=sys.stderr, flush=True)
        return not failed

    # ----------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self._start)

    def _request_stop(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.stop_signal = signal.Signals(signum).name
        if self.is_main:
            print(f"\nquadgpt: {self.stop_signal} received: finishing this step and saving a checkpoint.", file=sys.stderr, flush=True)

    def _stop_reason(self) -> str | None:
        t = self.config.train
        if self.stop_signal:
            return f"signal ({self.stop_signal})"
        if t.max_steps and self.step >= t.max_steps:
            return "max_steps"
        if t.max_tokens and self.tokens >= t.max_tokens:
            return "max_tokens"
        if t.max_time and time.time() - self._start >= t.max_time:  # per session: a job's wall-time limit
            return "max_time"
        return None

    def _log_eval(self) -> None:
        results = self.evaluate()
        self.last_val, self.last_val_step = results["val_loss"], self.step
        record = {"kind": "eval", "step": self.step, "tokens": self.tokens, "elapsed": round(self.elapsed(), 3)}
        record |= results | {"val_ppl": perplexity(results["val_loss"])}
        self.logger.log(record)
        self._print(format_line(record))
        if self.last_val < self.best_val:
            self.best_val = self.last_val
            self.save_best()

    def _print(self, line: str) -> None:
        if self.is_main:
            if self._bar is not None:
                self._bar.write(line)
            else:
                print(line, flush=True)

    def run(self) -> dict[str, Any]:
        t = self.config.train
        self._start = time.time()
        self._bar = None
        handlers = {}
        if _in_main_thread():
            handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        if self.is_main:
            self._announce()
            write_json_atomic(self.run_dir / "config.json", self.config.to_dict())
            if sys.stderr.isatty():
                from tqdm import tqdm

                self._bar = tqdm(total=self.plan.horizon or None, initial=self.step, unit="step", dynamic_ncols=True)
        start_step, start_tokens, train_time = self.step, self.tokens, 0.0
        try:
            if self.step == 0 and self.last_val_step != 0:
                self._log_eval()
            interval_time, interval_tokens = 0.0, 0  # training steps only: evals and saves excluded
            while (reason := self._stop_reason()) is None:
                step_start = time.time()
                loss, grad_norm = self.train_step()
                step_time = time.time() - step_start
                train_time += step_time
                if grad_norm is None:
                    self._on_bad_step(loss)
                    continue
                self.bad_in_row = 0
                self.step += 1
                self.tokens += self.plan.tokens_per_step
                interval_time += step_time
                interval_tokens += self.plan.tokens_per_step
                if self._bar is not None:
                    self._bar.update(1)
                if self.step % t.log_interval == 0:
                    self._log_train(loss, grad_norm, interval_tokens / max(interval_time, 1e-9))
                    interval_time, interval_tokens = 0.0, 0
                if self.step % t.eval_interval == 0:
                    self._log_eval()
                if self.step % t.ckpt_interval == 0:
                    self.save_checkpoint()
            if self.last_val_step != self.step:
                self._log_eval()
            final_saved = self.save_checkpoint() is not None
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
            if self._bar is not None:
                self._bar.close()
            self.logger.close()
        run_tokens = self.tokens - start_tokens
        summary = {
            "run_dir": str(self.run_dir),
            "steps": self.step,
            "tokens": self.tokens,
            "final_val_loss": self.last_val,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "tokens_per_s": run_tokens / train_time if train_time > 0 else None,
            "elapsed": self.elapsed(),
            "skipped_steps": self.skipped_steps,
            "stopped_by": reason,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "best_checkpoint": str(self.run_dir / BEST_NAME) if (self.run_dir / BEST_NAME).is_dir() else None,
            "lost": self._lost(final_saved, reason),
        }
        val = f"{self.last_val:.4f}" if self.last_val is not None else "n/a"
        self._print(f"quadgpt: stopped by {reason} after {self.step - start_step} steps this session; "
                    f"final val loss {val}; checkpoint {summary['last_checkpoint']}")
        return summary

    def _lost(self, final_saved: bool, reason: str) -> list[str]:
        """What of this run's result is not on disk, as sentences (empty when all is saved)."""
        lost = []
        if not final_saved:
            kept = self.last_checkpoint or "none"
            lost.append(f"the final checkpoint (step {self.step}, stopped by {reason}) could not be saved; "
                        f"the newest saved checkpoint is {kept}")
        if self.best_save_error:
            lost.append(f"best/ is stale: {self.best_save_error}")
        return lost

    def _log_train(self, loss: float, grad_norm: float, tokens_per_s: float) -> None:
        record = {
            "kind": "train", "step": self.step, "tokens": self.tokens, "elapsed": round(self.elapsed(), 3),
            "loss": loss, "lr": lr_at(self.step - 1, self.config.train, self.plan.horizon), "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s, "mfu": mfu(self.flops_per_token, tokens_per_s, self.peak, self.world),
            "skipped_steps": self.skipped_steps,
        }
        self.logger.log(record)
        self._print(format_line(record))

    def _on_bad_step(self, loss: float) -> None:
        self.skipped_steps += 1
        self.bad_in_row += 1
        self._print(f"quadgpt: step {self.step + 1}: non-finite loss or gradient ({loss}); step skipped "
                    f"({self.bad_in_row} in a row, {self.skipped_steps} in all).")
        # the skipped step's batch is consumed: the next attempt sees new data
        if self.bad_in_row >= self.config.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.bad_in_row} consecutive non-finite steps at step {self.step} (train.max_bad_steps). "
                f"Last good checkpoint: {self.last_checkpoint or 'none (no checkpoint was saved)'}. "
                "Lower train.lr, check the data, or resume from that checkpoint with --resume PATH."
            )

    def _announce(self) -> None:
        cfg, plan = self.config, self.plan
        print(
            f"quadgpt: {self.raw_model.num_params() / 1e6:.2f}M non-embedding params, ffn={cfg.model.ffn.kind}, "
            f"{self.world} process(es) on {self.device.type} ({'fsdp' if self.fsdp else 'ddp' if self.world > 1 else 'single'}), "
            f"precision={self.accelerator.mixed_precision}, "
            f"{plan.tokens_per_step:,} tokens/step (batch {cfg.train.batch_size} x block {cfg.model.block_size} "
            f"x {self.world} proc x {plan.accum} accum), run folder {self.run_dir}",
            flush=True,
        )


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def finish(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` if the run's result is saved; otherwise raise ResultLost saying what is missing."""
    if summary["lost"]:
        raise ResultLost("; ".join(summary["lost"]) + ".", summary)
    return summary


def train(config: Config) -> dict[str, Any]:
    """Train with ``config``; returns the run summary (final/best val loss, tokens, steps,
    tokens/s, stop reason, run folder, last and best checkpoint paths).

    Raises ConfigError / DataError / CheckpointError before anything is created when the config,
    its data, its resume checkpoint or the free disk space cannot work; TrainingDiverged; and
    ResultLost when training ended but its final checkpoint or best/ could not be written.
    """
    return finish(Trainer(config).run())


def main(argv: list[str] | None = None) -> int:
    """Train a model: ``quadgpt train --config F [--section.key=value ...] [--resume auto|PATH]``.

    Launch on several GPUs or nodes with ``accelerate launch train.py ...`` or
    ``torchrun --nproc_per_node N train.py ...`` (see docs/training.md).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="quadgpt train", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="TOML file (presets in configs/)")
    parser.add_argument("--resume", help="'auto' (newest checkpoint in train.out_dir) or a checkpoint/run folder")
    parser.add_argument("overrides", nargs="*", help="--section.key=value, e.g. --train.max_steps=100")
    try:
        config_path, overrides, rest = split_config_args(argv)
        args = parser.parse_args(rest)
        if args.overrides:
            parser.error(f"unexpected arguments {args.overrides}; overrides look like --section.key=value")
        if args.resume:
            overrides.append(f"train.resume={args.resume}")
        config = load_config(config_path, overrides)
        if "LOCAL_RANK" in os.environ:  # launched by torchrun or accelerate
            parallel.enable_fault_tracebacks()
        train(config)
        if parallel.leave_process_group():  # every rank done: leave together, so no torchrun agent waits
            parallel.exit_worker(0)
    except (ConfigError, CheckpointError, DataError, UnsafeOutput) as err:
        print(f"quadgpt train: error: {err}", file=sys.stderr)
        return 2
    except (TrainingDiverged, ResultLost) as err:
        print(f"quadgpt train: stopped: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
