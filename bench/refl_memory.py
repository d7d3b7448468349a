"""Throughput and peak memory of one ReFL optimizer step for the ways of fitting SD-1.5 on a GPU: full
fine-tuning with and without gradient checkpointing and 8-bit AdamW, and LoRA.

    python bench/refl_memory.py [--shapes real] [--resolution 512] [--repeats 2] [--lora 16]

``--shapes real`` (the default, for a GPU): random weights in the real shapes of SD-1.5 (UNet, VAE, CLIP) and of
blip2-opt-2.7b + blip2-itm-vit-g (the test tokenizers' vocabularies: 3.7 B instead of 3.9 B parameters), written
once to ``--models`` (about 10 GB; fp16). ``--shapes small``: a one-level UNet, tiny CLIP/VAE and the small
BLIP-2, to check the script on a CPU. Every variant is a fresh ``ReFLTrainer`` built from the files through the
real loaders, with ``--mixed-precision auto``, the paper's T = 50 (``--steps``), k in [30, 49] and guidance 7.5, batch
``--batch`` per step; variants run in turn, ``--rounds`` times. Printed per variant: images per second (median
step), the memory held once built, and the peak during the steps (CUDA: ``max_memory_allocated``; CPU: the
process's peak resident set). A variant that does not fit is reported as such and the others go on.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from refl_step import PeakMemory, _device  # noqa: E402

VARIANTS = {
    "full": dict(),
    "full + checkpointing": dict(gradient_checkpointing=True),
    "full + checkpointing + 8-bit AdamW": dict(gradient_checkpointing=True, use_8bit_adam=True),
    "LoRA": dict(lora=True),
    "LoRA + checkpointing": dict(lora=True, gradient_checkpointing=True),
}


def write_models(folder: Path, shapes: str) -> tuple[Path, Path, Path]:
    """(SD-1.5 checkpoint, captioner folder, text-encoder folder), written unless already there."""
    from realign_testkit.blip2 import write_tiny_blip2
    from realign_testkit.sd15_checkpoint import write_sd15_checkpoint

    real = shapes == "real"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"sd15-{shapes}.safetensors"
    if not base.is_file():
        print(f"writing {base} ...", flush=True)
        write_sd15_checkpoint(base, small_unet=not real, tiny_clip_vae=not real)
    preset = "opt-2.7b" if real else "small"
    captioner, text_encoder = folder / f"blip2-{preset}-opt", folder / f"blip2-{preset}-itm"
    if not (captioner / "config.json").is_file() or not (text_encoder / "config.json").is_file():
        print(f"writing {captioner} and {text_encoder} ...", flush=True)
        write_tiny_blip2(folder, preset=preset, dtype=torch.float16 if real else None)
    return base, captioner, text_encoder


def measure(config, repeats: int) -> dict:
    """One warm-up optimizer step, then ``repeats`` timed ones."""
    from realign_diff.refl.trainer import ReFLTrainer

    device = _device(config.device)
    trainer = None
    try:
        with PeakMemory(device) as built:
            trainer = ReFLTrainer(config)
        times = []
        with PeakMemory(device) as stepping:
            for i in range(repeats + 1):
                start = time.perf_counter()
                trainer.optimizer_step()
                trainer.global_step += 1
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - start)
        step = statistics.median(times)
        return dict(
            images_per_s=trainer.plan.total / step, step_s=step, built_mib=built.peak_mib, peak_mib=stepping.peak_mib
        )
    except torch.cuda.OutOfMemoryError:
        return dict(error="out of memory")
    finally:
        if trainer is not None:
            trainer.close()
        del trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=("real", "small"), default="real")
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "realign_diff_bench_models")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1, help="images per optimizer step (one micro-batch)")
    parser.add_argument("--lora", type=int, default=16, help="rank of the LoRA variants")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per variant after one warm-up step")
    parser.add_argument("--rounds", type=int, default=1, help="times every variant is built and measured, in turn")
    parser.add_argument("--steps", type=int, default=50, help="T; the gradient step k is drawn in [0.6 T, T - 1]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="measure only these variants")
    args = parser.parse_args()

    from realign_diff.refl.config import ConfigError, TrainConfig
    from realign_testkit.refl import write_prompts

    base, captioner, text_encoder = write_models(args.models, args.shapes)
    results = {name: [] for name in args.only or VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = write_prompts(Path(tmp) / "prompts.txt")
        for round_ in range(args.rounds):
            for name in results:
                flags = dict(VARIANTS[name])
                flags["lora"] = args.lora if flags.get("lora") else 0
                config = TrainConfig(
                    base=str(base),
                    prompts=str(prompts),
                    output=str(Path(tmp) / f"{round_}-{len(results[name])}.safetensors"),
                    captioner=str(captioner),
                    text_encoder=str(text_encoder),
                    resolution=args.resolution,
                    num_inference_steps=args.steps,
                    refl_step_min=round(0.6 * args.steps),
                    refl_step_max=args.steps - 1,
                    train_batch_size=args.batch,
                    total_batch_size=args.batch,
                    max_steps=10**6,
                    validation_split=0.0,
                    validation_steps=0,
                    checkpointing_steps=0,
                    tensorboard=False,
                    progress_bar=False,
                    device=args.device,
                    **flags,
                )
                try:
                    results[name].append(measure(config, args.repeats))
                except ConfigError as exc:  # e.g. --use-8bit-adam without bitsandbytes
                    results[name].append(dict(error=f"skipped: {exc}"))
                print(f"{name}: {results[name][-1]}", flush=True)

    device = _device(args.device)
    gpu = f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    print(
        f"\n{device}{gpu}, {args.shapes} shapes, {args.resolution} px, batch {args.batch}, T = {args.steps}, "
        f"k in [{round(0.6 * args.steps)}, {args.steps - 1}], "
        f"mixed precision auto, LoRA rank {args.lora}; median of {args.repeats} steps x {args.rounds} round(s)"
    )
    print(f"{'variant':36s} {'images/s':>9s} {'built GiB':>10s} {'peak GiB':>9s}")
    for name, runs in results.items():
        done = [r for r in runs if "error" not in r]
        if not done:
            print(f"{name:36s} {runs[-1]['error'][:100]}")
            continue
        ips, built, peak = (statistics.median(r[k] for r in done) for k in ("images_per_s", "built_mib", "peak_mib"))
        print(f"{name:36s} {ips:9.3f} {built / 1024:10.2f} {peak / 1024:9.2f}")


if __name__ == "__main__":
    main()
