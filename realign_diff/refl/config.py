"""Every setting of the ReFL trainer, its default and its help text: the one place they live.

``training/refl.py`` builds its command line from :class:`TrainConfig` (``--reward-weight`` for the field
``reward_weight``); tests build a ``TrainConfig`` directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dtypes import PRECISION_CHOICES, PRECISIONS


class ConfigError(ValueError):
    """Settings or paths that cannot work, with what to change."""


def _opt(default, help: str, group: str, choices=None, metavar=None):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar})


PAPER_TOTAL_BATCH = 128


@dataclass(frozen=True)
class BatchPlan:
    train_batch_size: int  # per process and micro-step
    accumulation: int  # micro-steps per optimizer step
    processes: int

    @property
    def total(self) -> int:
        return self.train_batch_size * self.accumulation * self.processes

    @property
    def per_micro_step(self) -> int:
        return self.train_batch_size * self.processes

    def describe(self) -> str:
        return (
            f"{self.train_batch_size} per micro-batch x {self.accumulation} accumulation x {self.processes} "
            f"process(es) = {self.total} per optimizer step"
        )


@dataclass
class TrainConfig:
    # --- inputs and outputs -------------------------------------------------------------------------------
    base: str = _opt(
        None, "SD-1.5 single-file checkpoint (.safetensors, or .ckpt) to fine-tune.", "inputs", metavar="FILE"
    )
    prompts: str = _opt(
        None,
        "Training prompts: a .txt file (one per line), .jsonl (objects with 'prompt', 'caption' or "
        "'text'), or an MS-COCO captions .json.",
        "inputs",
        metavar="FILE",
    )
    output: str = _opt(
        None,
        "Where to write the result (.safetensors): the base checkpoint with its UNet replaced, or with "
        "--lora the LoRA file.",
        "inputs",
        metavar="FILE",
    )
    captioner: str = _opt(
        None, "BLIP-2 captioner folder in Hugging Face format (e.g. blip2-opt-2.7b).", "inputs", metavar="DIR"
    )
    text_encoder: str = _opt(
        None,
        "BLIP-2 image-text-retrieval folder whose text tower embeds captions (e.g. blip2-itm-vit-g).",
        "inputs",
        metavar="DIR",
    )
    tokenizer: str = _opt(
        None,
        "Folder with the SD-1 CLIP tokenizer (vocab.json + merges.txt). Default: ComfyUI's "
        "comfy/sd1_tokenizer (COMFYUI_PATH) or the vocabulary inside open-clip-torch.",
        "inputs",
        metavar="DIR",
    )
    run_dir: str = _opt(
        None,
        "Folder for checkpoints, metrics.csv, TensorBoard logs and the reward curve. "
        "Default: the output path without its suffix plus '-run'.",
        "inputs",
        metavar="DIR",
    )

    # --- data ---------------------------------------------------------------------------------------------
    pairs: str = _opt(
        None,
        "Real image-caption pairs for the pre-training loss: a folder of images with same-named "
        ".txt captions (or a metadata.jsonl with file_name/text), or an MS-COCO captions .json. "
        "Without it the pre-training loss uses the model's own x0' latents.",
        "data",
        metavar="PATH",
    )
    pairs_image_root: str = _opt(
        None, "Image folder for an MS-COCO --pairs file (default: the .json's folder).", "data", metavar="DIR"
    )
    validation_prompts: str = _opt(
        None,
        "Held-out validation prompts (same formats as --prompts). Default: split "
        "--validation-split off the training prompts.",
        "data",
        metavar="FILE",
    )
    validation_split: float = _opt(
        0.05,
        "Fraction of the training prompts held out for validation when no "
        "--validation-prompts is given (0 disables validation).",
        "data",
    )
    max_validation_prompts: int = _opt(64, "At most this many validation prompts are scored per validation.", "data")
    resolution: int = _opt(512, "Image size in pixels (square) for training, validation and --pairs images.", "data")

    # --- the algorithm ----------------------------------------------------------------------------------
    num_inference_steps: int = _opt(50, "T: DDIM steps of the rollout (paper: 50).", "algorithm")
    refl_step_min: int = _opt(
        30, "Earliest rollout step (0-based, of T) at which the gradient step may happen (paper: 30).", "algorithm"
    )
    refl_step_max: int = _opt(49, "Latest rollout step at which the gradient step may happen (inclusive).", "algorithm")
    guidance_scale: float = _opt(
        7.5, "Classifier-free guidance during the rollout and the gradient step (1 disables it).", "algorithm"
    )
    reward_weight: float = _opt(
        1e-3, "lambda: weight of the reward loss lambda*ReLU(margin - R) (paper: 1e-3).", "algorithm"
    )
    reward_margin: float = _opt(
        1.0,
        "margin of the reward loss; R_cap lies in [-1, 1], so 1.0 keeps pushing until the caption matches the prompt.",
        "algorithm",
    )
    baseline: str = _opt(
        "ema",
        "Baseline subtracted from the per-image reward loss in the score-function surrogate: "
        "'ema' (running mean over steps), 'batch' (mean of the micro-batch; needs batch size >= 2) or 'none'.",
        "algorithm",
        choices=("ema", "batch", "none"),
    )
    baseline_decay: float = _opt(0.9, "Decay of the 'ema' baseline.", "algorithm")
    prompt_likelihood_weight: float = _opt(
        0.0,
        "Weight of the optional teacher-forced term -log p_BLIP2(prompt | x0') inside the reward loss (0 disables it).",
        "algorithm",
    )
    caption_max_new_tokens: int = _opt(30, "Longest caption BLIP-2 writes for the reward.", "algorithm")
    caption_num_beams: int = _opt(1, "Beams for the reward caption (1 = greedy).", "algorithm")
    caption_sampling: bool = _opt(
        False,
        "Sample the reward captions from BLIP-2's distribution (the unbiased "
        "score-function estimator) instead of greedy or beam decoding.",
        "algorithm",
    )
    pre_loss_weight: float = _opt(
        1.0,
        "Weight of the pre-training (noise-prediction) loss L_pre; 0 disables it, which "
        "usually collapses image quality.",
        "algorithm",
    )

    # --- optimisation -----------------------------------------------------------------------------------
    learning_rate: float = _opt(1e-5, "AdamW learning rate (paper: 1e-5).", "optimisation")
    lr_warmup_steps: int = _opt(0, "Linear learning-rate warm-up, in optimizer steps.", "optimisation")
    adam_beta1: float = _opt(0.9, "AdamW beta1.", "optimisation")
    adam_beta2: float = _opt(0.999, "AdamW beta2.", "optimisation")
    adam_weight_decay: float = _opt(1e-2, "AdamW weight decay.", "optimisation")
    adam_epsilon: float = _opt(1e-8, "AdamW epsilon.", "optimisation")
    use_8bit_adam: bool = _opt(False, "8-bit AdamW from bitsandbytes (must be installed).", "optimisation")
    max_grad_norm: float = _opt(1.0, "Gradient clipping norm (0 disables clipping).", "optimisation")
    train_batch_size: int = _opt(1, "Prompts per micro-batch on each process.", "optimisation")
    total_batch_size: int = _opt(
        None,
        "Effective batch: prompts per optimizer step over all processes (train batch x "
        "accumulation x processes); the accumulation is derived from it and the process count. "
        "Default: 128, the paper's, unless --gradient-accumulation-steps is given.",
        "optimisation",
    )
    gradient_accumulation_steps: int = _opt(
        None,
        "Micro-batches per optimizer step on each process. Default: derived from --total-batch-size.",
        "optimisation",
    )
    max_steps: int = _opt(1000, "Optimizer steps to train (the paper stopped near 947).", "optimisation")
    seed: int = _opt(
        42, "Seed for noise, step choice, data order and validation; equal seeds give equal runs.", "optimisation"
    )

    # --- memory and speed -------------------------------------------------------------------------------
    device: str = _opt("auto", "Torch device ('auto' = cuda when available, else cpu).", "memory")
    mixed_precision: str = _opt(
        "auto",
        "Autocast precision of the trained UNet: 'fp16' (with loss scaling), 'bf16' or "
        "'no'. 'auto' = bf16 on CUDA GPUs that support it, else fp16; no on CPU.",
        "memory",
        choices=("auto", "no", "fp16", "bf16"),
    )
    frozen_dtype: str = _opt(
        "auto",
        "dtype of the frozen CLIP text encoder, VAE and BLIP-2 models (and the frozen base UNet "
        "under --lora). 'auto' follows the autocast: bf16 with bf16, fp16 with fp16 (whose loss "
        "scaling keeps the reward gradient through them), fp32 without. A Flan-T5 captioner never "
        "runs in fp16.",
        "memory",
        choices=PRECISION_CHOICES,
    )
    gradient_checkpointing: bool = _opt(
        False, "Recompute UNet and VAE-decoder activations in the backward pass (less memory, ~30% slower).", "memory"
    )
    lora: int = _opt(
        0,
        "Train a LoRA of this rank on the UNet attention projections instead of the full UNet (0 = full fine-tuning).",
        "memory",
        metavar="RANK",
    )
    lora_alpha: float = _opt(None, "LoRA alpha (scale = alpha / rank). Default: the rank.", "memory")

    # --- running ----------------------------------------------------------------------------------------
    checkpointing_steps: int = _opt(
        100, "Save a resumable checkpoint-N every this many optimizer steps (0 = never).", "running"
    )
    checkpoints_total_limit: int = _opt(
        3, "Keep only the newest this many checkpoint-N folders (0 = keep all).", "running"
    )
    resume: str = _opt(
        None,
        "Continue a run: 'latest' (newest checkpoint-N in --run-dir) or a checkpoint folder.",
        "running",
        metavar="CKPT",
    )
    validation_steps: int = _opt(
        50, "Score the validation prompts every this many optimizer steps (0 = never).", "running"
    )
    validation_batch_size: int = _opt(4, "Images per batch when generating for validation.", "running")
    early_stopping_patience: int = _opt(
        5, "Stop after this many validations without a better reward (0 = never stop early).", "running"
    )
    keep_best: bool = _opt(
        True, "Write the weights of the best validation reward to --output instead of the last ones.", "running"
    )
    save_dtype: str = _opt("fp16", "dtype of the trained tensors in the output file.", "running", choices=PRECISIONS)
    tensorboard: bool = _opt(
        True, "Also log to TensorBoard in --run-dir when tensorboard is installed (CSV is always written).", "running"
    )
    progress_bar: bool = _opt(True, "Show a progress bar with loss, reward and it/s.", "running")
    process_timeout: float = _opt(
        1800.0,
        "Seconds a process waits for the others (while the main process writes a "
        "checkpoint, or in a reduction) before the run ends with an error.",
        "running",
        metavar="S",
    )

    # --- derived ----------------------------------------------------------------------------------------
    def batch_plan(self, processes: int) -> BatchPlan:
        """How an optimizer step's samples are formed on ``processes`` processes; ConfigError when they cannot be."""
        batch, accumulation, total = self.train_batch_size, self.gradient_accumulation_steps, self.total_batch_size
        per_micro_step = batch * processes
        if accumulation is None:
            total = PAPER_TOTAL_BATCH if total is None else total
            if total % per_micro_step:
                lower = max(per_micro_step, total // per_micro_step * per_micro_step)
                raise ConfigError(
                    f"--total-batch-size {total} is not divisible by --train-batch-size {batch} x {processes} "
                    f"process(es) = {per_micro_step}: use --total-batch-size {lower} or {lower + per_micro_step}, "
                    f"or another --train-batch-size"
                )
            accumulation = total // per_micro_step
        elif total is not None and total != accumulation * per_micro_step:
            raise ConfigError(
                f"--total-batch-size {total} != --train-batch-size {batch} x --gradient-accumulation-steps "
                f"{accumulation} x {processes} process(es) = {accumulation * per_micro_step}: give only one of the two"
            )
        if self.baseline == "batch" and per_micro_step < 2:
            raise ConfigError(
                "--baseline batch needs at least 2 prompts per micro-step over all processes (with one "
                "image its advantage is always 0): raise --train-batch-size, or use --baseline ema"
            )
        return BatchPlan(batch, accumulation, processes)

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        out = Path(self.output)
        return out.with_name(out.stem + "-run")

    def resolved_lora_alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.lora)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work, before anything is loaded."""
        if not self.base:
            raise ConfigError("--base is required: the SD-1.5 checkpoint to fine-tune")
        if not self.prompts:
            raise ConfigError("--prompts is required: a .txt, .jsonl or MS-COCO captions .json file")
        if not self.output:
            raise ConfigError("--output is required: the .safetensors file to write")
        if Path(self.output).suffix.lower() != ".safetensors":
            raise ConfigError(f"--output must end in .safetensors, got {self.output}")
        T = self.num_inference_steps
        if T < 1:
            raise ConfigError("--num-inference-steps must be at least 1")
        if not 0 <= self.refl_step_min <= self.refl_step_max < T:
            raise ConfigError(
                f"need 0 <= --refl-step-min ({self.refl_step_min}) <= --refl-step-max ({self.refl_step_max}) "
                f"< --num-inference-steps ({T})"
            )
        for name in (
            "train_batch_size",
            "gradient_accumulation_steps",
            "total_batch_size",
            "max_steps",
            "resolution",
            "validation_batch_size",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.validation_split < 1.0:
            raise ConfigError("--validation-split must be in [0, 1)")
        if self.lora < 0:
            raise ConfigError("--lora must be 0 (full fine-tuning) or a positive rank")


def _groups() -> dict[str, str]:
    return {
        "inputs": "inputs and outputs",
        "data": "data",
        "algorithm": "the ReFL algorithm",
        "optimisation": "optimisation",
        "memory": "memory and speed",
        "running": "running, logging and checkpoints",
    }


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' only where there is a default to show and the help text does not give it."""

    def _get_help_string(self, action):
        if action.default is None or action.required or "default" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python training/refl.py",
        description="ReFL fine-tuning of SD-1.5 against the BLIP-2 caption reward (RealignDiff stage 1). "
        "Writes a checkpoint that ComfyUI's Load Checkpoint node loads, or with --lora a LoRA for LoraLoader.",
        epilog="Several GPUs or machines: `accelerate launch --num_processes 8 training/refl.py ...` (or torchrun) "
        "trains one run of the same effective batch on all of them (DDP); `accelerate launch --config_file "
        "training/accelerate/fsdp.yaml training/refl.py ...` shards a full fine-tuning's UNet, gradients and "
        "AdamW state over them (FSDP2, with --mixed-precision bf16 or no). See docs/training.md.",
        formatter_class=_HelpFormatter,
    )
    groups = {key: parser.add_argument_group(title) for key, title in _groups().items()}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": meta["help"]}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.type in ("int", int):
            kwargs["type"] = int
            kwargs.setdefault("metavar", "N")
        elif f.type in ("float", float):
            kwargs["type"] = float
            kwargs.setdefault("metavar", "X")
        else:
            kwargs["type"] = str
        if f.name in ("base", "prompts", "output"):
            kwargs["required"] = True
        groups[meta["group"]].add_argument(flag, **kwargs)
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    args = build_arg_parser().parse_args(argv)
    return TrainConfig(**vars(args))
