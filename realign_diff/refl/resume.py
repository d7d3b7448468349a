"""What a checkpoint records of the run that wrote it, and whether this run may continue it.

A resumed run continues exactly when it has the same flags and process count. With another process count
and the same effective batch it continues too: every sample's prompt and random draws are keyed by its
global number, so only the grouping of samples into micro-batches changes (the floating-point sums, and the
'batch' baseline's groups). A different effective batch or a different flag of the computation is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import BatchPlan, ConfigError, TrainConfig

# flags that define the computation: a run continued with another value would not be the run it continues
RUN_DEFINING = (
    "seed",
    "resolution",
    "num_inference_steps",
    "refl_step_min",
    "refl_step_max",
    "guidance_scale",
    "reward_weight",
    "reward_margin",
    "baseline",
    "baseline_decay",
    "prompt_likelihood_weight",
    "caption_max_new_tokens",
    "caption_num_beams",
    "caption_sampling",
    "pre_loss_weight",
    "learning_rate",
    "lr_warmup_steps",
    "adam_beta1",
    "adam_beta2",
    "adam_weight_decay",
    "adam_epsilon",
    "use_8bit_adam",
    "max_grad_norm",
    "lora",
    "lora_alpha",
    "validation_split",
    "max_validation_prompts",
)


def run_facts(plan: BatchPlan) -> dict[str, int]:
    return {
        "num_processes": plan.processes,
        "train_batch_size": plan.train_batch_size,
        "gradient_accumulation_steps": plan.accumulation,
        "effective_batch_size": plan.total,
    }


def check_resumable(state: dict, config: TrainConfig, plan: BatchPlan, path: Path, sharded: bool) -> list[str]:
    """Raise ConfigError when ``config`` cannot continue the checkpoint's run; else the notes to log.
    ``sharded``: this run shards the UNet with FSDP."""
    if "samples_seen" not in state or "run" not in state:
        raise ConfigError(
            f"{path} was written by an earlier version of the trainer and cannot be resumed exactly: "
            "start a new run (its weights are in trainable.safetensors)"
        )
    if state.get("sharded", False) != sharded:
        kinds = ("an FSDP (sharded)", "a DDP or one-process")
        written, this = kinds if state.get("sharded", False) else kinds[::-1]
        raise ConfigError(
            f"{path} was written by {written} run and this is {this} run: their optimizer states are laid out "
            "differently; resume with the kind of accelerate config the run started with (any process count)"
        )
    saved, facts = json.loads(state["config"]), json.loads(state["run"])
    changed = [
        f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(config, k)}"
        for k in RUN_DEFINING
        if saved.get(k) != getattr(config, k)
    ]
    if changed:
        raise ConfigError(
            f"{path} was trained with other settings: {'; '.join(changed)}. Resume with the run's own "
            "values (see settings.json in the run folder), or start a new run in another --run-dir"
        )
    if facts["effective_batch_size"] != plan.total:
        raise ConfigError(
            f"{path} was trained with an effective batch of {facts['effective_batch_size']} "
            f"({facts['train_batch_size']} x {facts['gradient_accumulation_steps']} accumulation x "
            f"{facts['num_processes']} process(es)); this run has {plan.total} ({plan.describe()}). "
            f"Pass --total-batch-size {facts['effective_batch_size']} to continue it"
        )
    if facts["num_processes"] == plan.processes and facts["train_batch_size"] == plan.train_batch_size:
        return []
    return [
        f"resuming a run of {facts['num_processes']} process(es) x {facts['train_batch_size']} per micro-batch on "
        f"{plan.processes} x {plan.train_batch_size}: the same samples and random draws in each step (the "
        f"effective batch stays {plan.total}), but they are grouped into other micro-batches on other processes, "
        "so the result is close to, not bit-identical with, continuing as it was"
    ]
