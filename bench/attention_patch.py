"""Realign Attention Patch: sampling step time, patched vs unpatched, in a real ComfyUI.

``--model sd15``: full-shape random-weight SD-1.5 checkpoint. ``--model sdxl``: full-shape random SDXL UNet
(2.6 B parameters, 70 cross-attention blocks) built through ComfyUI's own ``supported_models.SDXL``, stored in
``--weight-dtype`` (fp16 by default: half the memory; ComfyUI casts each layer to fp32 on CPU) with a complete
SDXL CLIP (CLIP-L + CLIP-G) from the tests' cached checkpoint. Two objects (left/right halves, scores 2 and
0.5). The two variants alternate within one process; the script prints the median step time of each and
the median of the paired ratios, in wall time and in process CPU time (steadier on a shared machine).
Needs COMFYUI_PATH.

    COMFYUI_PATH=/path/to/ComfyUI python bench/attention_patch.py [--model sd15] [--size 256] [--steps 4]
        [--repeats 5] [--gpu] [--pytorch-attention] [--weight-dtype fp16] [--threads 0]

On CPU ComfyUI's default attention is its sub-quadratic kernel, slower than our explicit-logit path for
cross-attention's 77 keys, so the patch can even look faster; ``--pytorch-attention`` makes PyTorch's SDPA
the baseline (ComfyUI's default on recent GPUs) for the modulation's own overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # a script: the core and the testkit by path

import torch  # noqa: E402

from realign_testkit.comfyui import start_comfyui  # noqa: E402
from realign_testkit.family_checkpoints import cached_checkpoint, full_unet_config, link_checkpoint, randomize  # noqa: E402
from realign_testkit.pack import load_pack  # noqa: E402
from realign_testkit.sd15_checkpoint import write_sd15_checkpoint  # noqa: E402

PROMPT = "a red book and a yellow pen"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15", help="full-shape random SD-1.5 or SDXL")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant, interleaved")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (fp16 there)")
    parser.add_argument("--pytorch-attention", action="store_true", help="ComfyUI's --use-pytorch-cross-attention")
    parser.add_argument(
        "--weight-dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="SDXL UNet weights as stored"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # one thread: CPU time that other jobs on the machine barely disturb

    base = Path(tempfile.mkdtemp(prefix="realign-bench-"))
    extra = ("--use-pytorch-cross-attention",) if args.pytorch_attention else ()
    comfyui = start_comfyui(base, cpu=not args.gpu, extra_args=extra)
    import comfy.ldm.modules.attention as comfy_attention

    print(f"ComfyUI attention: {comfy_attention.optimized_attention.__name__}")
    load_pack()
    from realign_pack.nodes.attention_patch import apply_realign_patch
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    t0 = time.perf_counter()
    model, clip = (full_sdxl if args.model == "sdxl" else full_sd15)(comfyui, args)
    print(f"built the full-shape random {args.model} model in {time.perf_counter() - t0:.1f} s")
    from realign_pack.nodes.attention_patch import cross_attention_blocks

    blocks = len(cross_attention_blocks(model.model.diffusion_model))
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    print(
        f"{type(model.model.model_config).__name__}: {params / 1e9:.2f} B UNet parameters, "
        f"{blocks} cross-attention blocks"
    )

    left = torch.zeros(args.size, args.size)
    left[:, : args.size // 2] = 1
    guidance = [
        RealignGuidance(
            PROMPT,
            args.size,
            args.size,
            [GuidedObject("book", 2.0, "a red book", left), GuidedObject("pen", 0.5, "a yellow pen", 1 - left)],
        )
    ]
    patched, positive, report = apply_realign_patch(model, clip, guidance, 1.0, "paper", 1.0, "prompt only")
    print(report)
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, "")[0]
    plain_positive = comfyui.nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
    latent = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}
    del clip  # everything is encoded: its memory goes to the UNet (SDXL's CLIP-G alone is 0.7 B parameters)

    def run(which):
        m, pos = (patched, positive) if which == "patched" else (model, plain_positive)
        start, start_cpu = time.perf_counter(), time.process_time()
        comfyui.nodes.common_ksampler(
            m, 1, args.steps, 5.0, "euler", "normal", pos, negative, latent, disable_noise=False
        )
        if args.gpu:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps, (time.process_time() - start_cpu) / args.steps

    run("plain"), run("patched")  # warm-up: model load, allocator, caches
    times = {"plain": [], "patched": []}
    for r in range(args.repeats):
        for which in ("plain", "patched") if r % 2 == 0 else ("patched", "plain"):
            times[which].append(run(which))
    device = "GPU" if args.gpu else "CPU"
    print(
        f"{args.model}, {device}, {args.size}px, {args.steps} steps x {args.repeats} runs each, cfg batch 2, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end"
    )
    for index, clock in enumerate(("wall", "process CPU")):
        for which, values in times.items():
            per_run = [v[index] for v in values]
            print(
                f"  {clock:11s} {which:8s} median step {statistics.median(per_run):.3f} s  "
                f"({', '.join(f'{v:.3f}' for v in per_run)})"
            )
        ratios = [p[index] / u[index] for p, u in zip(times["patched"], times["plain"])]
        print(
            f"  {clock:11s} patched / plain: median of paired ratios {statistics.median(ratios):.3f}x "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )


def full_sd15(comfyui, args):
    write_sd15_checkpoint(comfyui.models_dir / "checkpoints" / "sd15_full_random.safetensors", small_unet=False)
    return comfyui.nodes.CheckpointLoaderSimple().load_checkpoint("sd15_full_random.safetensors")[:2]


def full_sdxl(comfyui, args):
    """SDXL base's UNet shape through ComfyUI's own SDXL class; the CLIP of the tests' reduced SDXL checkpoint."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    cached_checkpoint("sdxl")
    name = link_checkpoint(comfyui.models_dir / "checkpoints", "sdxl_reduced_random.safetensors", "sdxl")
    clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint(name)[1]
    unet = full_unet_config("sdxl")
    config = comfy.supported_models.SDXL(unet)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.weight_dtype]
    device = comfy.model_management.get_torch_device()
    compute = dtype if args.gpu else torch.float32
    config.set_inference_dtype(dtype, None if compute == dtype else compute)
    base = randomize(config.get_model({}, device="cpu"))
    return comfy.model_patcher.ModelPatcher(base, device, comfy.model_management.unet_offload_device()), clip


if __name__ == "__main__":
    main()
