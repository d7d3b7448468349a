"""The trainer's processes, on Hugging Face Accelerate: one, or N launched by ``accelerate launch`` / ``torchrun``.

Accelerate starts the process group (NCCL on GPUs, gloo on CPUs, with our timeout), wraps the trained module
in DDP, or shards it with FSDP2 when the accelerate config asks for FSDP, and gives the device of each process.
What is ours: the reductions the trainer needs (means of logged numbers, "did any process see a non-finite
loss"), gradient sync only on the last backward of an optimizer step, and the one-writer rule (``is_main``).

Under FSDP every process holds a shard of the UNet and of its optimizer state: gathering them into whole
weights for a file, and every UNet forward, are collective, so all processes make the same calls in the same
order (the trainer keeps its rollouts in step for that), and gradients are reduce-scattered at every backward
(accumulating unsharded gradients would cost the memory FSDP is there to save).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging

import torch

log = logging.getLogger("realign_diff.refl")


class ProcessError(RuntimeError):
    """Another process failed or did not answer in time: this one stops too (the message names it)."""


class Processes:
    def __init__(self, device: str = "auto", timeout_s: float = 1800.0):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        # broadcast_buffers off: the UNet trains no buffer, so DDP need not send them at every forward
        handlers = [
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=timeout_s)),
            DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False),
        ]
        # mixed precision stays the trainer's (--mixed-precision): the rollout runs on the plain UNet and the
        # frozen models' dtypes follow it, which Accelerate's model wrapper would not know about
        self.accelerator = Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=handlers)
        _check_engine(self.accelerator, self.engine)
        self.sharded = self.engine == "FSDP"
        self.count = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device if device in ("auto", "cpu") else _local(torch.device(device), self)
        self.distributed = self.count > 1
        self.timeout_s = timeout_s

    @property
    def engine(self) -> str:
        return str(self.accelerator.distributed_type).replace("DistributedType.", "")

    def prepare(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> torch.nn.Module:
        """The trained module as the engine runs it: DDP across processes, itself in one process, or sharded in
        place by FSDP2 (which also swaps ``optimizer``'s parameters for their shards)."""
        if self.sharded:
            # the optimizer stays ours: AcceleratedOptimizer's step bookkeeping belongs to accelerator.accumulate
            model, _ = self.accelerator.prepare(module, optimizer)
            return model
        return self.accelerator.prepare_model(module, device_placement=False)

    def grad_sync(self, module: torch.nn.Module, sync: bool):
        """Gradients are all-reduced only in the backward of a forward made with ``sync`` True (under FSDP at
        every backward, into the shards)."""
        if sync or not self.distributed or self.sharded:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(module)

    # --- whole weights and optimizer state (collective under FSDP: every process calls them) -----------------

    def full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module``'s whole weights on the main process, the one that writes them (the others get {}); under
        FSDP gathered from the shards."""
        if not self.sharded:
            return module.state_dict() if self.is_main else {}
        with self.failures("gathering the sharded weights"):
            return self.accelerator.get_state_dict(module)

    def load_state_dict(self, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Whole weights into ``module`` (under FSDP each process keeps its shard of them)."""
        if not self.sharded:
            module.load_state_dict({k: v.to(self.device) for k, v in tensors.items()}, strict=True)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        with self.failures("loading the sharded weights"):
            set_model_state_dict(module, tensors, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's whole state on the main process ({} on the others); under FSDP keyed by parameter
        name and gathered from the shards."""
        if not self.sharded:
            return optimizer.state_dict() if self.is_main else {}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        with self.failures("gathering the sharded optimizer state"):
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(module, optimizer, options=options)

    def load_optimizer_state(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        with self.failures("loading the sharded optimizer state"):
            set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))

    # --- reductions (every process calls them, in the same order) ------------------------------------------

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.distributed or not values:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        total = self._collective(lambda: self.accelerator.reduce(tensor, reduction="sum"))
        return {k: float(v) / self.count for k, v in zip(keys, total.tolist())}

    def any(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self._collective(lambda: self.accelerator.reduce(tensor, reduction="sum")).item() > 0)

    def max(self, value: int) -> int:
        if not self.distributed:
            return value
        return max(self.gather([value]))

    def gather(self, items: list) -> list:
        """Every process's list, concatenated in rank order, on every process."""
        if not self.distributed:
            return list(items)
        from accelerate.utils import gather_object

        return self._collective(lambda: gather_object([list(items)]), flatten=True)

    def check_identical(self, module: torch.nn.Module, what: str) -> str:
        """Digest of ``module``'s weights; ProcessError unless every process holds bit-identical ones."""
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        mine = digest.hexdigest()
        everyone = self.gather([mine])
        if len(set(everyone)) > 1:
            raise ProcessError(f"the processes ended with different {what} (digests {everyone}): gradient sync failed")
        return mine

    def barrier(self, why: str) -> None:
        """Wait for every process (e.g. while the main one writes); a process gone or too slow ends the run."""
        if self.distributed:
            self._collective(self.accelerator.wait_for_everyone, what=why)

    def _collective(self, call, what: str = "a reduction", flatten: bool = False):
        with self.failures(what):
            out = call()
        return [x for part in out for x in part] if flatten else out

    @contextlib.contextmanager
    def failures(self, what: str = "the next collective step"):
        """Turns a lost peer (a gloo/NCCL timeout or closed connection, in our reductions or inside DDP) into a
        ProcessError naming this process and the timeout."""
        try:
            yield
        except (RuntimeError, torch.distributed.DistError) as exc:
            if not self.distributed or not _is_communication_failure(exc):
                raise
            raise ProcessError(
                f"process {self.rank} of {self.count}: the other processes did not reach {what} within "
                f"--process-timeout {self.timeout_s:g} s, or one of them failed ({str(exc).splitlines()[0][:300]})"
            ) from exc


_COMMUNICATION_ERRORS = (
    "gloo",
    "nccl",
    "timed out",
    "connection closed",
    "connection reset",
    "broken pipe",
    "processgroup",
    "socket",
)


def _is_communication_failure(exc: BaseException) -> bool:
    return isinstance(exc, torch.distributed.DistError) or any(m in str(exc).lower() for m in _COMMUNICATION_ERRORS)


def _check_engine(accelerator, engine: str) -> None:
    from .config import ConfigError

    if engine == "DEEPSPEED":
        raise ConfigError(
            "the accelerate config asks for DeepSpeed, which the trainer does not support: for a UNet and optimizer "
            "that do not fit one GPU use FSDP (training/accelerate/fsdp.yaml shards weights, gradients and "
            "optimizer state like ZeRO-3); else a multi-GPU (DDP) config with --lora, --gradient-checkpointing "
            "or --use-8bit-adam"
        )
    if engine == "FSDP" and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError(
            "the accelerate config asks for FSDP version 1; the trainer shards with FSDP2: set `fsdp_version: 2` "
            "in its fsdp_config (see training/accelerate/fsdp.yaml)"
        )


def _local(device: torch.device, processes: Processes) -> torch.device:
    """An explicit ``--device cuda`` in a multi-process run means each process's own GPU."""
    if device.type == "cuda" and device.index is None and processes.distributed:
        return processes.accelerator.device
    return device
