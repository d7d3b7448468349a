"""The trainer's processes, on Hugging Face Accelerate: one, or N launched by ``accelerate launch`` / ``torchrun``.

Accelerate starts the process group (NCCL on GPUs, gloo on CPUs, with our timeout), wraps the trained module
in DDP (or FSDP / DeepSpeed from an accelerate config) and gives the device of each process. What is ours:
the reductions the trainer needs (means of logged numbers, "did any process see a non-finite loss"),
gradient sync only on the last backward of an optimizer step, and the one-writer rule (``is_main``).
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
        if self.engine in ("FSDP", "DEEPSPEED"):
            from .config import ConfigError

            raise ConfigError(
                f"the accelerate config asks for {self.engine}, which the trainer does not support yet "
                "(its checkpoints are written from whole weights): use a multi-GPU (DDP) config, and "
                "--lora, --gradient-checkpointing or --use-8bit-adam to fit the UNet"
            )
        self.count = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device if device in ("auto", "cpu") else _local(torch.device(device), self)
        self.distributed = self.count > 1
        self.timeout_s = timeout_s

    @property
    def engine(self) -> str:
        return str(self.accelerator.distributed_type).replace("DistributedType.", "")

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The trained module as the engine runs it (DDP across processes; itself in one process)."""
        return self.accelerator.prepare_model(module, device_placement=False)

    def grad_sync(self, module: torch.nn.Module, sync: bool):
        """Gradients are all-reduced only in the backward of a forward made with ``sync`` True."""
        if sync or not self.distributed:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(module)

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


def _local(device: torch.device, processes: Processes) -> torch.device:
    """An explicit ``--device cuda`` in a multi-process run means each process's own GPU."""
    if device.type == "cuda" and device.index is None and processes.distributed:
        return processes.accelerator.device
    return device
