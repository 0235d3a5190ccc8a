"""How a GPT is parallelised: FSDP2 sharding, activation checkpointing, and the state dicts and
gradient clipping that sharded parameters need. The model never knows (as torchtitan's
``parallelize.py``): the trainer builds a plain ``GPT``, loads its weights, and asks this module
to wrap it.

FSDP here is PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``): each ``Block`` is one
shard group, then the root takes the rest (embeddings, the tied LM head, the final LayerNorm).
Parameters become ``DTensor`` shards over a 1-D device mesh of every process. The same code runs
on CPUs over gloo and on GPUs over NCCL; accelerate only launches and sets up the process group
(its FSDP plugin needs CUDA, so it cannot serve the CPU path the tests run on).

Every function here also accepts an unsharded (plain or DDP) model, so the trainer has one path.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn


def _base(model: nn.Module) -> nn.Module:
    """``model`` without a ``torch.compile`` wrapper (which goes outside the sharding)."""
    return getattr(model, "_orig_mod", model)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` has been applied to ``model`` (compiled or not)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(_base(model), FSDPModule)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them.

    Uses the composable ``checkpoint`` (non-reentrant), which hooks the block in place: parameter
    names, and so checkpoints, stay the same as without it. Must come before ``apply_fsdp``.
    """
    from torch.distributed._composable import checkpoint

    for block in model.blocks:
        checkpoint(block)


def mixed_precision(device_type: str, dtype: str):
    """FSDP2's policy: bf16 parameters and activations with fp32 gradient reduction on CUDA when
    ``dtype`` is bf16; ``None`` (fp32 throughout) otherwise.

    Raises ValueError for fp16, which would need a loss scaler aware of sharded gradients.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if dtype == "fp16":
        raise ValueError("train.dtype=fp16 is not supported with train.distributed=fsdp; use bf16 (or fp32).")
    if device_type == "cuda" and dtype == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def apply_fsdp(model: nn.Module, device_type: str, world_size: int, mp_policy=None) -> nn.Module:
    """Shard ``model`` over all ``world_size`` processes (the process group must exist): each
    block, then the root. Returns the same object, now an ``FSDPModule``."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (world_size,))
    kwargs = {"mesh": mesh, "mp_policy": mp_policy or MixedPrecisionPolicy()}
    for block in model.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def parallelize(model: nn.Module, accelerator, *, fsdp: bool, activation_checkpointing: bool = False,
                compile: bool = False, dtype: str = "fp32") -> nn.Module:
    """Wrap the plain ``model`` for training: activation checkpointing per block, then FSDP2
    sharding (``fsdp``, over ``accelerator``'s processes) or accelerate's DDP/device placement,
    with ``torch.compile`` outside the sharding. ``dtype`` is the resolved ``train.dtype``.

    Returns the module to call; ``model`` is changed in place. Raises ValueError for fp16 + fsdp.
    """
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if not fsdp:
        return accelerator.prepare(torch.compile(model) if compile else model)
    policy = mixed_precision(accelerator.device.type, dtype)
    model = apply_fsdp(model.to(accelerator.device), accelerator.device.type, accelerator.num_processes, policy)
    return torch.compile(model) if compile else model


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Under FSDP, skip (``False``) or do the gradients' reduce-scatter at the end of backward;
    the accumulating micro-batches skip it, the last one syncs. No-op on an unsharded model."""
    if is_sharded(model):
        _base(model).set_requires_gradient_sync(enabled)


def clip_grad_norm_(model: nn.Module, max_norm: float) -> float:
    """Clip the gradients of ``model`` to total L2 norm ``max_norm`` (``math.inf`` = only measure)
    and return the norm before clipping, over all shards (the same number on every rank)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    if hasattr(norm, "full_tensor"):  # a DTensor holding each rank's partial norm
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)  # takes parameters, scales their .grad
    return float(norm)


# --------------------------------------------------------------------------------------
# State dicts (parameter names as in the plain model, whatever the wrapping)
# --------------------------------------------------------------------------------------


def _options(full: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # full: gathered to rank 0 on the CPU (other ranks get {}); else each rank's own shards
    return StateDictOptions(full_state_dict=full, cpu_offload=full)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain CPU tensors on rank 0 (``{}`` on the other ranks of a
    sharded model). Collective under FSDP: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if not is_sharded(model):
        from .checkpoint import unwrap

        return unwrap(model).state_dict()
    state = get_model_state_dict(_base(model), options=_options(full=True))
    # gathered tensors are copies: drop tied names (the LM head) so the file is as unsharded
    return {name: t for name, t in state.items() if name not in tied_aliases(model)}


def tied_aliases(model: nn.Module) -> set[str]:
    """Names of parameters that are the same object as an earlier parameter (tied weights)."""
    seen: set[int] = set()
    aliases = set()
    for name, param in _base(model).named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(name)
        seen.add(id(param))
    return aliases


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name (not position), so it loads into any
    wrapping of the same model; gathered on rank 0 (``{}`` elsewhere under FSDP), and ``{}`` if
    the optimizer has not stepped yet. Collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    if not optimizer.state:  # torch would initialise it with a zero-gradient step, counting a step
        return {}
    return get_optimizer_state_dict(_base(model), optimizer, options=_options(full=is_sharded(model)))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a name-keyed optimizer state (``optimizer_state(full=True)``) read from disk by every
    rank; under FSDP each rank keeps its shard; ``{}`` leaves the optimizer fresh. Collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if not state:
        return
    if any(isinstance(key, int) for key in state["state"]):  # position-keyed, from before quadgpt named them
        if is_sharded(model):
            raise ValueError("this checkpoint's optimizer state is keyed by position (an older quadgpt); "
                             "resume it unsharded (train.distributed=ddp)")
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(_base(model), optimizer, state, options=_options(full=is_sharded(model)))


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """``{"model": ...}``, plus ``"optim"`` when an ``optimizer`` is given, with each rank's own
    shards: what DCP saves and loads into. A given optimizer that has not stepped yet gets its
    state initialised (by a zero-gradient step), so only pass one that has, or that DCP will fill."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(_base(model), options=_options(full=False))}
    model_sd, optim_sd = get_state_dict(_base(model), optimizer, options=_options(full=False))
    return {"model": model_sd, "optim": optim_sd}


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Put a ``sharded_state`` dict that DCP has filled back into ``model`` (and ``optimizer``,
    if it has ``"optim"``)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    if "optim" not in state:
        set_model_state_dict(_base(model), state["model"], options=_options(full=False))
        return
    set_state_dict(_base(model), optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options(full=False))


def leave_process_group() -> bool:
    """After a successful run under torchrun: a last barrier, then destroy the process group.
    Returns whether there was one to leave (``False`` in a single process: nothing done).

    Without it each rank exits with its gloo/NCCL group alive; a rank that leaves while its peer
    still tears down can leave that peer (and its torchrun agent) waiting, seen as a hung
    two-node run on the CPU.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True


def exit_worker(code: int) -> None:
    """End a torchrun/accelerate worker that has left its process group, skipping interpreter
    teardown: flush the standard streams, then ``os._exit(code)``.

    Why: after a finished run, objects that outlive the process group (DTensor's sharding caches
    keep the device mesh and its tensors alive) are destroyed during interpreter finalization,
    while gloo's C++ threads may still hold work items. Seen here as a rare SIGABRT ("terminate
    called without an active exception") after every checkpoint was written, which torchrun then
    reports as a failed job; torch describes the same crash (pytorch/pytorch#179291, #190489).
    Everything the run writes is closed and renamed into place before this point.
    """
    import os

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def enable_fault_tracebacks() -> None:
    """In a distributed worker, print every thread's Python stack on SIGSEGV/SIGABRT/SIGFPE (the
    standard library's ``faulthandler``), so a crash inside a collective says where it was."""
    import faulthandler

    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
