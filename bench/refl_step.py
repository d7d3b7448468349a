"""Cost of one ReFL step against one plain noise-prediction training step, with and without gradient checkpointing.

    python bench/refl_step.py [--resolution 64] [--steps 20] [--repeats 3]

A random SD-1-layout checkpoint (SD-1.5's 320-channel UNet width, one level; tiny CLIP and VAE) is trained by
the real trainer (``ReFLTrainer``) against the real caption reward on random BLIP-2 folders (``--reward``:
the testkit's ``small`` preset, 224 px, ~13 M parameters, by default; ``tiny``; or ``toy``, the test scorer
without BLIP-2). Variants run interleaved
in one process; each is timed and its peak memory taken: on CUDA ``max_memory_allocated``, on CPU the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs after ``malloc_trim``) above the
resident set before the step. The ReFL step is one optimizer step of the trainer (rollout without gradient
to a fixed late step k, one UNet call with gradient, VAE decode, surrogate, backward, plus L_pre);
the plain step is one noise-prediction loss with backward and the same optimizer step.

A second table compares the reward part of a micro-step alone, on pixels that require grad (as the decoded
x0'), ``--reward-batch`` images, greedy captions of up to 30 tokens, the surrogate's backward to the pixels included:
"before" is ``score`` (BLIP-2 generate: vision pass 1) then ``caption_log_prob`` of the decoded captions (pass 2)
[then of the prompts (pass 3)]; "after" is ``reward_terms`` (one vision pass), also with sampled captions.
``--reward-pass-only`` runs that table alone (no SD checkpoint, no trainer)::

    python bench/refl_step.py --reward-pass-only [--reward blip2-small] [--reward-batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

if TYPE_CHECKING:
    from realign_diff.refl.trainer import ReFLTrainer

from realign_testkit.refl import PROMPTS, ToyCaptionScorer, tiny_config, write_prompts  # noqa: E402
from realign_testkit.sd15_checkpoint import write_sd15_checkpoint  # noqa: E402


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory of a block, in MiB: ``mib`` above what was in use when it started, ``peak_mib`` in all."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.start = _status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_mib = _status_kb("VmHWM") / 2**10
        self.mib = self.peak_mib - self.start / 2**20


def plain_step(trainer: ReFLTrainer) -> None:
    from realign_diff.refl import draws
    from realign_diff.refl.step import noise_prediction_loss

    trainer.optimizer.zero_grad(set_to_none=True)
    samples, prompts = trainer.micro_batches(trainer.global_step)[0]
    latents, noise = (
        trainer._noise(trainer.global_step, samples),
        trainer._noise(trainer.global_step, samples, "pre_noise"),
    )
    timesteps = draws.integers(0, trainer.ddim.num_train_timesteps - 1, 0, trainer.global_step, samples, "pre_timestep")
    loss = noise_prediction_loss(
        trainer.model, trainer.ddim, latents, trainer._encode(prompts), noise, timesteps, trainer._autocast()
    )
    loss.backward()
    trainer.optimizer.step()


def refl_step(trainer: ReFLTrainer) -> None:
    trainer.optimizer_step()


def set_checkpointing(trainer: ReFLTrainer, enabled: bool) -> None:
    for module in (trainer.unet, trainer.vae):
        module.enable_gradient_checkpointing() if enabled else module.disable_gradient_checkpointing()


def _surrogate_backward(rewards, log_p_caption, log_p_prompt) -> None:
    loss = ((1.0 - rewards.detach()).to(log_p_caption.device) * log_p_caption).mean()
    if log_p_prompt is not None:
        loss = loss - log_p_prompt.mean()
    if loss.requires_grad:
        loss.backward()


def reward_before(scorer, pixels, prompts, prompt_term: bool, sampling: bool) -> None:
    with torch.no_grad():
        scored = scorer.score(pixels.detach().permute(0, 2, 3, 1), prompts, max_new_tokens=30, num_beams=1)
    log_p_prompt = scorer.caption_log_prob(pixels, prompts) if prompt_term else None
    _surrogate_backward(scored.rewards, scorer.caption_log_prob(pixels, scored.captions), log_p_prompt)


def reward_after(scorer, pixels, prompts, prompt_term: bool, sampling: bool) -> None:
    terms = scorer.reward_terms(
        pixels,
        prompts,
        max_new_tokens=30,
        num_beams=1,
        sampling=sampling,
        seeds=list(range(len(prompts))),
        prompt_log_prob=prompt_term,
    )
    _surrogate_backward(terms.rewards, terms.log_p_caption, terms.log_p_prompt)


def reward_pass_comparison(scorer, device: torch.device, args) -> None:
    """The reward part of a micro-step, before (score + caption_log_prob [+ of the prompts]) and after
    (reward_terms)."""
    variants = {}
    for prompt_term in (False, True):
        variants[("before", prompt_term, False)] = reward_before
        variants[("after", prompt_term, False)] = reward_after
        variants[("after", prompt_term, True)] = reward_after
    vision = getattr(getattr(scorer, "captioner", None), "vision_model", None)
    passes = []
    hook = vision.register_forward_hook(lambda *_: passes.append(1)) if vision is not None else None
    times = {k: [] for k in variants}
    peaks = {k: [] for k in variants}
    vit = {}
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.reward_batch)]
    generator = torch.Generator().manual_seed(0)
    for round_ in range(args.repeats + 1):
        for key, fn in variants.items():
            pixels = torch.rand(args.reward_batch, 3, args.resolution, args.resolution, generator=generator)
            pixels = pixels.to(device).requires_grad_(True)
            passes.clear()
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                fn(scorer, pixels, prompts, key[1], key[2])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            vit[key] = len(passes)
            if round_:  # round 0 warms up
                times[key].append(seconds)
                peaks[key].append(memory.mib)
    if hook is not None:
        hook.remove()

    print(
        f"reward pass of a micro-step: device {device}, reward {args.reward}, {args.reward_batch} image(s) of "
        f"{args.resolution} px, captions up to 30 tokens, surrogate backward to the pixels, "
        f"{args.repeats} rounds (median)"
    )
    print(f"{'variant':44s} {'ViT passes':>10s} {'time s':>8s} {'peak MiB':>9s}")
    med = _medians(times, peaks, args.verbose)
    for (name, prompt_term, sampling), (t, m) in med.items():
        label = (
            "before: score + caption_log_prob"
            if name == "before"
            else f"after: reward_terms ({'sampled' if sampling else 'greedy'})"
        ) + (" + prompt" if prompt_term else "")
        print(f"{label:44s} {vit[(name, prompt_term, sampling)]:10d} {t:8.3f} {m:9.1f}")
    for prompt_term in (False, True):
        (tb, mb) = med[("before", prompt_term, False)]
        for sampling in (False, True):
            ta, ma = med[("after", prompt_term, sampling)]
            print(
                f"after ({'sampled' if sampling else 'greedy'}) / before, {'with' if prompt_term else 'without'} the "
                f"prompt term: time x{ta / tb:.2f}, peak memory x{ma / max(mb, 1e-9):.2f}"
            )


def _medians(times: dict, peaks: dict, verbose: bool) -> dict:
    """variant -> (median seconds, median peak MiB); every round's numbers printed first when ``verbose``."""
    if verbose:
        for k in times:
            print(k, [f"{t:.3f}" for t in times[k]], [f"{m:.0f}" for m in peaks[k]])
    return {k: (statistics.median(times[k]), statistics.median(peaks[k])) for k in times}


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def reward_pass_only(args) -> None:
    """The reward-pass table without the trainer (nothing of realign_diff.refl is imported)."""
    device = _device(args.device)
    if args.reward == "toy":
        return reward_pass_comparison(ToyCaptionScorer(), device, args)
    from realign_diff.reward import CaptionReward
    from realign_testkit.blip2 import write_tiny_blip2

    with tempfile.TemporaryDirectory() as tmp:
        captioner, text_encoder = write_tiny_blip2(Path(tmp) / "blip2", preset=args.reward.split("-")[1])
        scorer = CaptionReward.from_pretrained(captioner, text_encoder, device=device)
    reward_pass_comparison(scorer, device, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64, help="image size (the tiny VAE halves it once)")
    parser.add_argument("--steps", type=int, default=20, help="T, DDIM steps of the rollout")
    parser.add_argument(
        "--late-step",
        type=float,
        default=0.79,
        help="gradient step k = round(late_step * T), fixed so every variant does the same work "
        "(0.79: the mean of the paper's 30..49 of 50)",
    )
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds after one warm-up round")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--reward",
        choices=("blip2-small", "blip2-tiny", "toy"),
        default="blip2-small",
        help="the reward scored and differentiated in the ReFL step",
    )
    parser.add_argument("--verbose", action="store_true", help="print every round's numbers")
    parser.add_argument(
        "--reward-pass-only",
        action="store_true",
        help="only the reward-pass table (before: score + caption_log_prob; after: reward_terms)",
    )
    parser.add_argument("--reward-batch", type=int, default=1, help="images in the reward-pass table")
    args = parser.parse_args()
    if args.reward_pass_only:
        return reward_pass_only(args)
    from realign_diff.refl.trainer import ReFLTrainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_sd15_checkpoint(tmp / "base.safetensors", small_unet=True, tiny_clip_vae=True)
        config = tiny_config(
            base,
            write_prompts(tmp / "p.txt"),
            tmp / "out.safetensors",
            resolution=args.resolution,
            num_inference_steps=args.steps,
            refl_step_min=round(args.late_step * args.steps),
            refl_step_max=round(args.late_step * args.steps),
            guidance_scale=args.guidance_scale,
            device=args.device,
            learning_rate=1e-6,
            max_steps=10**6,
        )
        if args.reward == "toy":
            scorer = ToyCaptionScorer()
        else:
            from realign_diff.refl.scorer import load_caption_reward
            from realign_testkit.blip2 import write_tiny_blip2

            captioner, text_encoder = write_tiny_blip2(tmp / "blip2", preset=args.reward.split("-")[1])
            scorer = load_caption_reward(str(captioner), str(text_encoder), _device(args.device), None)
        trainer = ReFLTrainer(config, scorer)
        variants = {
            ("plain", False): plain_step,
            ("refl", False): refl_step,
            ("plain", True): plain_step,
            ("refl", True): refl_step,
        }
        times = {k: [] for k in variants}
        peaks = {k: [] for k in variants}
        for round_ in range(args.repeats + 1):
            for (name, ckpt), fn in variants.items():
                set_checkpointing(trainer, ckpt)
                with PeakMemory(trainer.device) as memory:
                    start = time.perf_counter()
                    fn(trainer)
                    if trainer.device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - start
                if round_:  # round 0 warms up
                    times[(name, ckpt)].append(seconds)
                    peaks[(name, ckpt)].append(memory.mib)

    params = sum(p.numel() for p in trainer.unet.parameters()) / 1e6
    print(
        f"device {trainer.device}, UNet {params:.1f} M parameters, {args.resolution} px "
        f"(latent {trainer.latent_size}), T = {args.steps}, gradient step k = {config.refl_step_min}, "
        f"guidance {args.guidance_scale}, reward {args.reward}, batch 1, {args.repeats} rounds (median)"
    )
    print(f"{'variant':34s} {'time s':>8s} {'peak MiB':>9s}")
    med = _medians(times, peaks, args.verbose)
    for (name, ckpt), (t, m) in med.items():
        print(f"{name + (' + grad checkpointing' if ckpt else ''):34s} {t:8.2f} {m:9.1f}")
    for ckpt in (False, True):
        (tp, mp), (tr, mr) = med[("plain", ckpt)], med[("refl", ckpt)]
        label = "with" if ckpt else "without"
        print(
            f"ReFL / plain, {label} gradient checkpointing: time x{tr / tp:.2f}, peak memory x{mr / max(mp, 1e-9):.2f}"
        )
    for name in ("plain", "refl"):
        (t0, m0), (t1, m1) = med[(name, False)], med[(name, True)]
        print(f"{name}: gradient checkpointing / none: time x{t1 / t0:.2f}, peak memory x{m1 / max(m0, 1e-9):.2f}")
    print()
    reward_pass_comparison(scorer, trainer.device, args)


if __name__ == "__main__":
    main()
