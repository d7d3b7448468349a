"""The ReFL training loop: build everything from a config, run optimizer steps, validate, checkpoint, save."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..clip_tokenizer import load_clip_tokenizer
from . import data as data_mod
from . import draws, saving
from . import precision as precision_mod
from .config import ConfigError, TrainConfig
from .lora import UNetLoRA, WithLoRA
from .metrics import MetricsLogger, NoMetrics
from .models import BaseCheckpointError, encode_prompts, load_base
from .processes import Processes
from .run_files import RunFiles
from .scorer import check_reward_folders, check_scorer, load_caption_reward
from .step import (
    DDIM,
    Conditioning,
    RewardBaseline,
    RewardOutput,
    decode_pixels,
    encode_images,
    noise_prediction_loss,
    predict_noise,
    reward_surrogate,
    rollout,
)

log = logging.getLogger("realign_diff.refl")


@dataclass
class TrainResult:
    output: Path
    steps: int
    best_step: int | None
    best_validation_reward: float | None
    stopped_early: bool
    run_dir: Path


class StopTraining(Exception):
    """Raised by an ``on_step_end`` callback to end the run at once (used to simulate a killed run)."""


def check_paths(config: TrainConfig) -> None:
    """The errors a user can fix before anything heavy is loaded."""
    base, output = Path(config.base), Path(config.output)
    if not base.is_file():
        raise BaseCheckpointError(f"base checkpoint not found: {base}")
    if not Path(config.prompts).is_file():
        raise FileNotFoundError(f"prompts file not found: {config.prompts}")
    if output.resolve() == base.resolve() or (output.exists() and output.samefile(base)):
        raise ConfigError(f"--output {output} would overwrite the base checkpoint; choose another file name")


class ReFLTrainer(RunFiles):
    def __init__(self, config: TrainConfig, scorer=None, on_step_end: Callable[[int], None] | None = None):
        config.validate()
        check_paths(config)
        if scorer is None:
            check_reward_folders(config.captioner, config.text_encoder)
        self.config, self.on_step_end = config, on_step_end
        self.processes = Processes(config.device, config.process_timeout)
        self.plan = config.batch_plan(self.processes.count)
        self.device = self.processes.device
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.precision = precision_mod.resolve(
            config.mixed_precision,
            config.frozen_dtype,
            self.device.type,
            bf16,
            scorer is None and precision_mod.is_t5_captioner(config.captioner),
        )
        self.mixed, self.frozen_dtype, self.autocast_dtype = (
            self.precision.mixed,
            self.precision.frozen,
            self.precision.autocast,
        )
        for note in self.precision.notes:
            self._log(logging.WARNING, "%s", note)
        if self.processes.sharded:
            _check_sharded(config, self.precision.loss_scaling)
        # 2**12 rather than torch's 2**16: every step skipped while the scale comes down costs a whole
        # accumulation of rollouts, and ReFL's gradients are small (lambda = 1e-3) anyway
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**12, enabled=self.precision.loss_scaling)
        self.run_dir = config.resolved_run_dir()
        self._load_data()
        self._build_models()
        self.scorer = (
            scorer
            if scorer is not None
            else load_caption_reward(config.captioner, config.text_encoder, self.device, self.precision.captioner)
        )
        check_scorer(self.scorer)
        self._build_optimizer()
        self.ddim = DDIM(config.num_inference_steps)
        self.baseline = RewardBaseline(config.baseline, config.baseline_decay)
        self.global_step, self.samples_seen = 0, 0
        self.best_reward: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self._checkpointed_best: int | None = None
        self.lock = saving.RunLock(self.run_dir).acquire() if self.processes.is_main else None
        try:
            self._open_run()
        except BaseException:
            self.close()
            raise

    def _open_run(self) -> None:
        """Clean up after a killed run, resume, open the metrics: the main process writes, the others wait."""
        c = self.config
        if self.processes.is_main:
            saving.remove_stale_temporaries(self.run_dir)
            saving.remove_stale_temporaries(Path(c.output).parent, only_for=Path(c.output).name)
        self.processes.barrier("the clean-up of a killed run's files")
        self.resumed = self._maybe_resume()
        self.metrics = NoMetrics()
        if self.processes.is_main:
            self.metrics = MetricsLogger(
                self.run_dir, c.tensorboard, resume_step=self.global_step if self.resumed else None
            )

    def close(self) -> None:
        """Lets another run write to this run folder (the end of :meth:`train` does this)."""
        if self.lock is not None:
            self.lock.release()

    def _log(self, level: int, message: str, *args) -> None:
        if self.processes.is_main:
            log.log(level, message, *args)

    # --- building ---------------------------------------------------------------------------------------

    def _load_data(self) -> None:
        c = self.config
        prompts = data_mod.read_prompts(c.prompts)
        if c.validation_prompts:
            self.train_prompts, self.val_prompts = prompts, data_mod.read_prompts(c.validation_prompts)
        else:
            self.train_prompts, self.val_prompts = data_mod.split_validation(prompts, c.validation_split, c.seed)
        self.val_prompts = self.val_prompts[: c.max_validation_prompts]
        if len(self.train_prompts) < self.plan.per_micro_step:
            raise ConfigError(
                f"{len(self.train_prompts)} training prompts cannot fill one micro-step of "
                f"{self.plan.train_batch_size} per process x {self.plan.processes} processes = "
                f"{self.plan.per_micro_step}: give more prompts, or "
                f"lower --train-batch-size or the process count"
            )
        self.pairs = data_mod.read_pairs(c.pairs, c.pairs_image_root) if c.pairs else []
        self.sampler = data_mod.EpochSampler(len(self.train_prompts), c.seed)
        self.pair_sampler = data_mod.EpochSampler(len(self.pairs), c.seed + 1) if self.pairs else None

    def _build_models(self) -> None:
        c = self.config
        base = load_base(c.base)
        self.unet_config = base.unet_config
        if c.resolution % base.latent_multiple:
            raise ConfigError(
                f"--resolution {c.resolution} must be a multiple of {base.latent_multiple} for this model"
            )
        self.latent_size = c.resolution // base.vae_scale_factor
        self.latent_channels = base.vae_config["latent_channels"]
        self.scaling_factor = base.vae_config["scaling_factor"]
        self.vae = base.vae.to(self.device, self.frozen_dtype)
        self.text_encoder = base.text_encoder.to(self.device, self.frozen_dtype)
        self.tokenizer = load_clip_tokenizer(c.tokenizer)
        self.unet = base.unet
        if c.lora:
            # the frozen base UNet may sit in half precision only when autocast does the mixing
            unet_dtype = self.frozen_dtype if self.autocast_dtype is not None else torch.float32
            self.unet.to(self.device, unet_dtype)
            with torch.random.fork_rng(devices=[]):  # the same adapters in every process and every run of a seed
                torch.manual_seed(c.seed)
                self.lora = UNetLoRA(self.unet, c.lora, c.resolved_lora_alpha()).to(self.device, torch.float32)
            self.trainable: torch.nn.Module = self.lora
            self.model: torch.nn.Module = WithLoRA(self.unet, self.lora)
        else:
            self.lora = None
            self.unet.to(self.device, torch.float32).requires_grad_(True)
            self.trainable = self.model = self.unet
        if c.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        self._empty = None

    def _build_optimizer(self) -> None:
        c = self.config
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        kwargs = dict(
            lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2), weight_decay=c.adam_weight_decay, eps=c.adam_epsilon
        )
        if c.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError as exc:
                raise ConfigError("--use-8bit-adam needs bitsandbytes: `pip install bitsandbytes` (CUDA only)") from exc
            self.optimizer = bnb.optim.AdamW8bit(params, **kwargs)
        else:
            self.optimizer = torch.optim.AdamW(params, **kwargs)
        self.model = self.processes.prepare(self.model, self.optimizer)
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]  # FSDP2: now the shards
        warmup = c.lr_warmup_steps
        # not handed to Accelerate: its scheduler wrapper steps once per process
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )

    # --- pieces of a step -------------------------------------------------------------------------------

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        return encode_prompts(self.text_encoder, self.tokenizer, prompts, self.device).float()

    def _conditioning(self, prompts: list[str]) -> Conditioning:
        cond = self._encode(prompts)
        if self.config.guidance_scale == 1.0:
            return Conditioning(cond, None)
        if self._empty is None:
            self._empty = self._encode([""])
        return Conditioning(cond, self._empty.expand_as(cond), self.config.guidance_scale)

    def _noise(self, step: int, samples: list[int], purpose: str = "noise") -> torch.Tensor:
        shape = (self.latent_channels, self.latent_size, self.latent_size)
        return draws.normal(shape, self.config.seed, step, samples, purpose).to(self.device)

    def reward_step(
        self, prompts: list[str], samples: list[int] | None = None, step: int | None = None, sync: bool = True
    ) -> RewardOutput:
        """Rollout without gradient to a late step k drawn per sample, one UNet call with gradient, x0', decode,
        surrogate. ``samples``: the global sample numbers of ``prompts`` (they key every random draw)."""
        c = self.config
        step = self.global_step if step is None else step
        samples = list(range(len(prompts))) if samples is None else samples
        conditioning = self._conditioning(prompts)
        index = draws.integers(c.refl_step_min, c.refl_step_max, c.seed, step, samples, "refl_step")
        # a sharded UNet's forward is collective: every process makes as many calls as the longest rollout
        calls = self.processes.max(int(index.max())) if self.processes.sharded else 0
        x_t = rollout(self.unet, self.ddim, self._noise(step, samples), conditioning, index, self._autocast(), calls)
        with self._autocast(), self.processes.grad_sync(self.model, sync):
            eps = predict_noise(self.model, x_t, self.ddim.timesteps[index], conditioning)
        x0 = self.ddim.predict_x0(x_t, eps, index)
        pixels = decode_pixels(self.vae, x0, self.scaling_factor)
        seeds = [draws.key_seed(c.seed, step, n, "caption") for n in samples]
        terms = self.scorer.reward_terms(
            pixels,
            prompts,
            max_new_tokens=c.caption_max_new_tokens,
            num_beams=c.caption_num_beams,
            sampling=c.caption_sampling,
            seeds=seeds,
            prompt_log_prob=bool(c.prompt_likelihood_weight),
        )
        rewards = torch.as_tensor(terms.rewards, dtype=torch.float32).detach().cpu()
        cost = torch.relu(c.reward_margin - rewards)
        group_mean = None
        if self.baseline.kind == "batch" or (self.baseline.kind == "ema" and self.baseline.value is None):
            group_mean = self.processes.mean({"cost": float(cost.mean())})["cost"]
        loss, cost = reward_surrogate(
            rewards,
            terms.log_p_caption,
            self.baseline(cost, group_mean),
            c.reward_weight,
            c.reward_margin,
            terms.log_p_prompt,
            c.prompt_likelihood_weight,
        )
        if not loss.requires_grad:  # every caption empty: nothing to learn, but DDP needs this backward too
            loss = loss + 0.0 * eps.sum()
        return RewardOutput(loss, rewards, cost, list(terms.captions), x0.detach(), index)

    def pre_loss(
        self,
        reward_out: RewardOutput,
        prompts: list[str],
        samples: list[int] | None = None,
        step: int | None = None,
        sync: bool = True,
    ) -> torch.Tensor:
        """L_pre on real pairs when given, else on the rollout's own (detached) x0' latents."""
        c = self.config
        step = self.global_step if step is None else step
        samples = list(range(len(prompts))) if samples is None else samples
        if self.pairs:
            batch = [self.pairs[self.pair_sampler[n]] for n in samples]
            images = torch.stack([data_mod.load_image(p.image, c.resolution) for p in batch]).to(self.device)
            latents = encode_images(self.vae, images, self.scaling_factor, self._noise(step, samples, "posterior"))
            cond = self._encode([p.caption for p in batch])
        else:
            latents, cond = reward_out.x0_latents, self._encode(prompts)
        noise = self._noise(step, samples, "pre_noise")
        timesteps = draws.integers(0, self.ddim.num_train_timesteps - 1, c.seed, step, samples, "pre_timestep")
        with self.processes.grad_sync(self.model, sync):
            return noise_prediction_loss(self.model, self.ddim, latents, cond, noise, timesteps, self._autocast())

    def micro_batches(self, step: int) -> list[tuple[list[int], list[str]]]:
        """This process's (global sample numbers, prompts) of each micro-step of optimizer step ``step``.

        Micro-step m covers the run's samples ``samples_seen + m * per_micro_step`` onwards, process p the
        ``train_batch_size`` of them from ``p * train_batch_size``: no overlap, and the same samples for the
        same step whatever the split."""
        plan, rank = self.plan, self.processes.rank
        out = []
        for m in range(plan.accumulation):
            first = self.samples_seen + m * plan.per_micro_step + rank * plan.train_batch_size
            samples = list(range(first, first + plan.train_batch_size))
            out.append((samples, [self.train_prompts[self.sampler[n]] for n in samples]))
        return out

    def optimizer_step(self) -> dict:
        """One optimizer step over the accumulation's micro-batches on every process; returns its metrics
        (means over all processes)."""
        c = self.config
        accum = self.plan.accumulation
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"reward_loss": 0.0, "pre_loss": 0.0, "reward": 0.0, "cost": 0.0}
        bad = []
        batches = self.micro_batches(self.global_step)
        for m, (samples, prompts) in enumerate(batches):
            last = m == accum - 1
            out = self.reward_step(prompts, samples, sync=last and not c.pre_loss_weight)
            if not torch.isfinite(out.loss).item():
                bad.append(f"reward loss {out.loss.item()} (rewards {out.rewards.tolist()})")
            # every process runs every backward, even of a non-finite loss: a missing one would hang the
            # others' gradient all-reduce; the step is then skipped everywhere
            self.scaler.scale(out.loss / accum).backward()
            totals["reward_loss"] += out.loss.item() / accum
            totals["reward"] += out.rewards.mean().item() / accum
            totals["cost"] += out.cost.mean().item() / accum
            if c.pre_loss_weight:
                pre = self.pre_loss(out, prompts, samples, sync=last)
                if not torch.isfinite(pre).item():
                    bad.append(f"pre-training loss {pre.item()}")
                self.scaler.scale(c.pre_loss_weight * pre / accum).backward()
                totals["pre_loss"] += pre.item() / accum
        totals = self.processes.mean(totals)
        skip = self.processes.any(bool(bad))
        metrics = dict(
            reward_loss=totals["reward_loss"],
            pre_loss=totals["pre_loss"],
            reward=totals["reward"],
            loss=totals["reward_loss"] + c.pre_loss_weight * totals["pre_loss"],
            lr=self.lr_scheduler.get_last_lr()[0],
            skipped=0,
        )
        if not skip:
            self.baseline.update(totals["cost"])
            metrics.update(self._apply_gradients())
        else:
            why = bad[0] if bad else "another process"
            self._log(logging.WARNING, "step %d skipped on every process: non-finite %s", self.global_step + 1, why)
            self.optimizer.zero_grad(set_to_none=True)
            metrics["skipped"] = 1
        self.samples_seen += self.plan.total
        with warnings.catch_warnings():  # a skipped step still advances the schedule; torch warns about that order
            warnings.simplefilter("ignore", UserWarning)
            self.lr_scheduler.step()
        return metrics

    def _apply_gradients(self) -> dict:
        """Clip and step the (already all-reduced, so identical) gradients; every process decides the same."""
        c = self.config
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm if c.max_grad_norm > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor, the same on every process
            norm = norm.full_tensor()
        metrics = {"grad_norm": norm.item(), "skipped": 0}
        if not math.isfinite(metrics["grad_norm"]) and not self.scaler.is_enabled():
            self._log(
                logging.WARNING,
                "step %d skipped: non-finite gradient norm %s",
                self.global_step + 1,
                metrics["grad_norm"],
            )
            self.optimizer.zero_grad(set_to_none=True)
            return dict(metrics, skipped=1)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if scale is not None and self.scaler.get_scale() < scale:
            self._log(
                logging.INFO,
                "step %d skipped: fp16 gradients overflowed; the gradient scaler lowers its scale "
                "to %g and goes on (normal now and then)",
                self.global_step + 1,
                self.scaler.get_scale(),
            )
            metrics["skipped"] = 1
        return metrics

    @torch.no_grad()
    def validate(self) -> float:
        """Mean caption reward of full T-step samples of the validation prompts (the same noise for each prompt
        every time), the prompts shared out among the processes and the rewards gathered."""
        c = self.config
        mine = list(range(self.processes.rank, len(self.val_prompts), self.processes.count))
        if self.processes.sharded:  # the same number of (collective) rollouts on every process; repeats drop out
            share = -(-len(self.val_prompts) // self.processes.count)
            mine += [mine[-1] if mine else 0] * (share - len(mine))
        scored = []
        for start in range(0, len(mine), c.validation_batch_size):
            indices = mine[start : start + c.validation_batch_size]
            prompts = [self.val_prompts[i] for i in indices]
            noise = self._noise(0, indices, "validation_noise")
            x0 = rollout(
                self.unet, self.ddim, noise, self._conditioning(prompts), c.num_inference_steps, self._autocast()
            )
            pixels = decode_pixels(self.vae, x0, self.scaling_factor)
            result = self.scorer.score(
                pixels.permute(0, 2, 3, 1),
                prompts,
                max_new_tokens=c.caption_max_new_tokens,
                num_beams=c.caption_num_beams,
            )
            scored += zip(indices, torch.as_tensor(result.rewards, dtype=torch.float32).tolist())
        rewards = dict(self.processes.gather(scored))
        return sum(rewards[i] for i in range(len(self.val_prompts))) / len(self.val_prompts)

    # --- the loop -----------------------------------------------------------------------------------------

    def summary(self) -> str:
        c, plan = self.config, self.plan
        trainable = sum(p.numel() for p in self.params)
        pre_loss = "off" if not c.pre_loss_weight else f"{len(self.pairs)} pairs" if self.pairs else "own x0 latents"
        captions = (
            "sampled" if c.caption_sampling else "greedy" if c.caption_num_beams == 1 else f"beam {c.caption_num_beams}"
        )
        trained = f"LoRA rank {c.lora:d}" if c.lora else "full UNet"
        lines = [
            "***** Running training *****",
            f"  base = {c.base}",
            f"  training prompts = {len(self.train_prompts)}, validation prompts = {len(self.val_prompts)}, "
            f"L_pre: {pre_loss}",
            f"  effective batch = {plan.describe()}",
            f"  processes = {plan.processes} ({self.processes.engine}), this one on {self.device}",
            f"  optimizer steps = {c.max_steps} (from {self.global_step}), lr = {c.learning_rate}, "
            f"{'8-bit ' if c.use_8bit_adam else ''}AdamW",
            f"  T = {c.num_inference_steps}, gradient step in [{c.refl_step_min}, {c.refl_step_max}], "
            f"guidance = {c.guidance_scale}, lambda = {c.reward_weight}, margin = {c.reward_margin}, "
            f"baseline = {c.baseline}, w_pre = {c.pre_loss_weight}, captions {captions}",
            f"  trained = {trained} ({trainable / 1e6:.2f} M parameters)",
            f"  {self.precision.describe()}, gradient checkpointing = {c.gradient_checkpointing}, "
            f"resolution = {c.resolution}",
            f"  run dir = {self.run_dir}, output = {c.output}",
        ]
        return "\n".join(lines)

    def train(self) -> TrainResult:
        try:
            with self.processes.failures("the same training step"):
                return self._train()
        finally:
            self.close()  # the run is over, finished or not

    def _train(self) -> TrainResult:
        c = self.config
        self._log(logging.INFO, "%s", self.summary())
        if self.processes.is_main:
            self.write_settings()
        validating = bool(self.val_prompts) and c.validation_steps > 0
        if validating and not self.resumed:
            reward = self.validate()
            self._log(logging.INFO, "validation reward before training: %.4f", reward)
            self.metrics.log(0, {"validation_reward": reward})
        bar = _progress(c.progress_bar and self.processes.is_main, c.max_steps, self.global_step)
        stopped_early = False
        start = time.time()
        try:
            while self.global_step < c.max_steps:
                t0 = time.time()
                metrics = self.optimizer_step()
                self.global_step += 1
                metrics["seconds"] = time.time() - t0
                if validating and self.global_step % c.validation_steps == 0:
                    stopped_early = self._validation_round(metrics)
                self.metrics.log(self.global_step, metrics)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4g}", reward=f"{metrics['reward']:.3f}")
                if c.checkpointing_steps and self.global_step % c.checkpointing_steps == 0:
                    self.save_checkpoint()
                if self.on_step_end is not None:
                    self.on_step_end(self.global_step)
                if stopped_early:
                    break
        finally:
            if bar is not None:
                bar.close()
            self.metrics.plot_reward_curve()
        self._log(logging.INFO, "trained %d steps in %.1f s", self.global_step, time.time() - start)
        if self.processes.distributed and not self.processes.sharded:  # sharded weights exist once: no copies
            digest = self.processes.check_identical(self.trainable, "trained weights")
            self._log(
                logging.INFO, "trained weights identical on all %d processes (digest %s)", self.processes.count, digest
            )
        output = self.write_output()
        self.processes.barrier("the output file")
        self.metrics.close()
        return TrainResult(output, self.global_step, self.best_step, self.best_reward, stopped_early, self.run_dir)

    def _validation_round(self, metrics: dict) -> bool:
        c = self.config
        reward = self.validate()  # the same number on every process: they all decide alike below
        metrics["validation_reward"] = reward
        if self.best_reward is None or reward > self.best_reward:
            self.best_reward, self.best_step, self.bad_validations = reward, self.global_step, 0
            if c.keep_best:
                self.save_best(reward)
            self._log(logging.INFO, "step %d: validation reward %.4f (best so far)", self.global_step, reward)
        else:
            self.bad_validations += 1
            self._log(
                logging.INFO,
                "step %d: validation reward %.4f (best %.4f at step %d; %d without improvement)",
                self.global_step,
                reward,
                self.best_reward,
                self.best_step,
                self.bad_validations,
            )
        self.metrics.plot_reward_curve()
        if c.early_stopping_patience and self.bad_validations >= c.early_stopping_patience:
            self._log(
                logging.INFO,
                "early stopping at step %d: no better validation reward for %d validations",
                self.global_step,
                self.bad_validations,
            )
            return True
        return False


def _check_sharded(config: TrainConfig, loss_scaling: bool) -> None:
    """What FSDP sharding cannot be combined with, and what to use instead."""
    if config.lora:
        raise ConfigError(
            "--lora with an FSDP accelerate config: LoRA trains a few million weights, which every GPU holds "
            "easily: use a multi-GPU (DDP) config, or drop --lora to shard a full fine-tuning"
        )
    if config.use_8bit_adam:
        raise ConfigError(
            "--use-8bit-adam with an FSDP accelerate config: FSDP already shards the optimizer state across the "
            "GPUs; drop --use-8bit-adam (or use a DDP config to keep it)"
        )
    if loss_scaling:
        raise ConfigError(
            "fp16 with an FSDP accelerate config: fp16 needs loss scaling, which the trainer does not do on sharded "
            "gradients; use --mixed-precision bf16 (A100, H100 and newer), or a DDP config for fp16"
        )


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="ReFL", unit="step", dynamic_ncols=True)


def train(config: TrainConfig, scorer=None, on_step_end: Callable[[int], None] | None = None) -> TrainResult:
    """Run a whole training from ``config``; ``scorer`` defaults to the BLIP-2 caption reward of the config's
    folders."""
    return ReFLTrainer(config, scorer, on_step_end).train()
