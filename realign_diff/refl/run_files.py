"""What a ReFL run writes: resumable checkpoints, the best weights, settings.json and the output file.

A mixin of :class:`realign_diff.refl.trainer.ReFLTrainer`: only its main process writes; every process reads a
checkpoint to resume, after the main one finished writing it. Under FSDP the whole weights and optimizer state
are gathered from the shards first, which every process takes part in, so the methods that gather are called
on every process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..dtypes import dtype_of
from . import saving
from .resume import check_resumable, run_facts

log = logging.getLogger("realign_diff.refl")


class RunFiles:
    # --- checkpoints --------------------------------------------------------------------------------------

    def _trainable_tensors(self) -> dict[str, torch.Tensor]:
        """Every process calls it; only the main one gets the tensors."""
        return {k: v.detach().float().cpu() for k, v in self.processes.full_state_dict(self.trainable).items()}

    def training_state(self) -> dict:
        """Every process calls it (see :meth:`_trainable_tensors`)."""
        state = {
            "global_step": self.global_step,
            "samples_seen": self.samples_seen,
            "optimizer": self.processes.optimizer_state(self.trainable, self.optimizer),
            "sharded": self.processes.sharded,  # FSDP's optimizer state is keyed by name, DDP's by position
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "baseline": self.baseline.state_dict(),
            "best_reward": self.best_reward,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "lora": self.config.lora,
            "config": self.config.to_json(),
            "run": json.dumps(run_facts(self.plan)),
        }
        return state

    def save_checkpoint(self) -> Path | None:
        """The main process writes ``checkpoint-N``; every process waits until it is complete."""
        path = None
        tensors, state = self._trainable_tensors(), self.training_state()
        if self.processes.is_main:
            path = saving.save_training_checkpoint(
                self.run_dir, self.global_step, tensors, state, self.config.checkpoints_total_limit
            )
            self._checkpointed_best = self.best_step  # what a resume from this checkpoint will look for
            self._prune_best()
            log.info("saved %s", path)
        self.processes.barrier(f"the end of checkpoint-{self.global_step}")
        return path

    def save_best(self, reward: float) -> None:
        """``best/trainable-N.safetensors`` of this step's weights; every process calls it, the main one writes."""
        tensors = self._trainable_tensors()
        if self.processes.is_main:
            meta = {"step": str(self.global_step), "validation_reward": str(reward)}
            saving.atomic_save_safetensors(tensors, self._best_path(self.global_step), meta)
            self._prune_best()

    def _best_path(self, step: int) -> Path:
        return self.run_dir / "best" / f"trainable-{step}.safetensors"

    def _prune_best(self) -> None:
        """Keeps the best file of ``best_step`` and the one the newest checkpoint records (they differ after a
        better validation until the next checkpoint: a run killed in between still finds its best file on
        resume). Files of steps past a resumed checkpoint belong to the killed run and go."""
        keep = {self._best_path(step) for step in (self.best_step, self._checkpointed_best) if step is not None}
        for path in (self.run_dir / "best").glob("trainable-*.safetensors"):
            if path not in keep:
                path.unlink(missing_ok=True)

    def _maybe_resume(self) -> bool:
        which = self.config.resume
        if not which:
            return False
        path = saving.latest_checkpoint(self.run_dir) if which == "latest" else Path(which)
        if path is None:
            self._log(logging.INFO, "--resume latest: no checkpoint-N in %s, starting a new run", self.run_dir)
            return False
        tensors, state = saving.load_training_checkpoint(path)
        for note in check_resumable(state, self.config, self.plan, path, self.processes.sharded):
            self._log(logging.WARNING, "%s", note)
        self.processes.load_state_dict(self.trainable, tensors)
        self.processes.load_optimizer_state(self.trainable, self.optimizer, state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.baseline.load_state_dict(state["baseline"])
        self.global_step, self.samples_seen = state["global_step"], state["samples_seen"]
        self.best_reward, self.best_step, self.bad_validations = (
            state["best_reward"],
            state["best_step"],
            state["bad_validations"],
        )
        self._checkpointed_best = self.best_step
        if self.processes.is_main:
            self._prune_best()
        self._log(logging.INFO, "resumed from %s at step %d", path, self.global_step)
        return True

    def write_settings(self) -> None:
        settings = dict(self.config.to_dict(), run=run_facts(self.plan))
        saving.atomic_write_text(self.run_dir / "settings.json", json.dumps(settings, indent=2, sort_keys=True))

    # --- output --------------------------------------------------------------------------------------------

    def output_metadata(self, step: int) -> dict[str, str]:
        c = self.config
        meta = {
            "realign_diff.refl.settings": c.to_json(),
            "realign_diff.refl.base": Path(c.base).name,
            "realign_diff.refl.step": str(step),
            "realign_diff.refl.steps_trained": str(self.global_step),
            "realign_diff.refl.run": json.dumps(run_facts(self.plan), sort_keys=True),
        }
        if self.best_reward is not None:
            meta["realign_diff.refl.best_validation_reward"] = f"{self.best_reward:.6f}"
        return meta

    def write_output(self) -> Path:
        """Every process calls it (the last weights may have to be gathered); the main one writes the file."""
        c = self.config
        step = self.global_step
        best = self._best_path(self.best_step) if self.best_step is not None else None
        # the main process's answer on every process ("any" of it and False elsewhere): the best file is its own
        use_best = c.keep_best and best is not None and self.processes.any(self.processes.is_main and best.is_file())
        if use_best:
            from safetensors.torch import load_file

            tensors = load_file(str(best)) if self.processes.is_main else {}
        else:
            tensors = self._trainable_tensors()
        if not self.processes.is_main:
            return Path(c.output)
        if use_best:
            step = self.best_step
            log.info("writing the best weights (step %d, validation reward %.4f)", step, self.best_reward)
        elif c.keep_best and best is not None:
            log.warning(
                "the best weights (step %d) are not in %s any more: writing the last ones (step %d)",
                self.best_step,
                best.parent,
                step,
            )
        dtype = dtype_of(c.save_dtype)
        meta = self.output_metadata(step)
        if self.lora is not None:
            if use_best:
                self.lora.load_state_dict({k: v.to(self.device) for k, v in tensors.items()})
            meta.update(
                {
                    "ss_network_module": "networks.lora",
                    "ss_network_dim": str(c.lora),
                    "ss_network_alpha": str(c.resolved_lora_alpha()),
                    "ss_base_model_version": "sd_v1",
                }
            )
            path = saving.atomic_save_safetensors(self.lora.kohya_state_dict(dtype), c.output, meta)
        else:
            tensors = saving.unet_to_checkpoint_tensors(tensors, self.unet_config, dtype)
            path = saving.write_checkpoint_with_unet(c.base, c.output, tensors, meta)
        log.info("wrote %s", path)
        return path
