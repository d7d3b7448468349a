"""Realign Attention Maps: (1) the inside-mask share per object, unpatched vs patched; (2) the recorder's cost.

Full-shape random-weight SD-1.5 checkpoint in a real ComfyUI, two objects (left/right halves of the image, scores
2 and 0.5), one seed. (1) samples once per strength λ and schedule with a recording and prints one table of each
object's share of attention inside its mask (its mask covers 50%: even attention gives 50%). (2) alternates
sampling with and without a recorder, on the plain and on the patched model, in one process, and prints the
median step times and the median of the paired ratios, in wall and process CPU time, and the time spent inside
the recorder itself (a direct measure, steadier than the ratios on a shared machine). Needs COMFYUI_PATH.

    COMFYUI_PATH=/path/to/ComfyUI python bench/attention_maps.py [--size 256] [--steps 4] [--timing-steps 3]
        [--repeats 3] [--only table|timing]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # a script: the core and the testkit by path

import torch  # noqa: E402

from realign_testkit.comfyui import start_comfyui  # noqa: E402
from realign_testkit.pack import load_pack  # noqa: E402
from realign_testkit.sd15_checkpoint import write_sd15_checkpoint  # noqa: E402

PROMPT = "a red book and a yellow pen"
STRENGTHS = (0.0, 0.5, 1.0, 2.0)
SCHEDULES = ("paper", "densediffusion")


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps of each run of the share table")
    parser.add_argument("--timing-steps", type=int, default=3, help="sampling steps of each timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant, interleaved")
    parser.add_argument("--only", choices=("table", "timing"), help="run one part only")
    args = parser.parse_args()

    comfyui = start_comfyui(Path(tempfile.mkdtemp(prefix="realign-bench-")))
    load_pack()
    from realign_pack.nodes import attention_maps, attention_patch
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance

    t0 = time.perf_counter()
    write_sd15_checkpoint(comfyui.models_dir / "checkpoints" / "sd15_full_random.safetensors", small_unet=False)
    print(
        f"wrote full-shape random SD-1.5 checkpoint in {time.perf_counter() - t0:.1f} s; load average {load_average()}"
    )
    model, clip = comfyui.nodes.CheckpointLoaderSimple().load_checkpoint("sd15_full_random.safetensors")[:2]
    left = torch.zeros(args.size, args.size)
    left[:, : args.size // 2] = 1
    objects = [GuidedObject("book", 2.0, "a red book", left), GuidedObject("pen", 0.5, "a yellow pen", 1 - left)]
    negative = comfyui.nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 4, args.size // 8, args.size // 8)}

    def sample(m, positive, steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        comfyui.nodes.common_ksampler(m, 1, steps, 5.0, "euler", "normal", positive, negative, latent)
        return (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps

    bench = SimpleNamespace(
        args=args,
        model=model,
        clip=clip,
        guidance=[RealignGuidance(PROMPT, args.size, args.size, objects)],
        plain_positive=comfyui.nodes.CLIPTextEncode().encode(clip, PROMPT)[0],
        sample=sample,
        record=lambda m, text="": attention_maps.record_attention(m, clip, text, 0.0, 1.0),
        show=attention_maps.show_attention,
        patch=lambda strength, schedule="paper": attention_patch.apply_realign_patch(
            model, clip, bench.guidance, strength, schedule, 1.0, "prompt only"
        )[:2],
    )
    if args.only != "timing":
        table(bench)
    if args.only != "table":
        timing(bench)


def table(bench):
    args = bench.args
    background = torch.zeros(1, args.size, args.size, 3)

    def shares(m, positive, text=""):
        recording_model, recording = bench.record(m, text)
        bench.sample(recording_model, positive, args.steps)
        data = json.loads(bench.show(recording, background, "", bench.guidance)[1])
        return {o["tag"]: o["inside"] for o in data["images"][0]}

    print(f"\n(1) share of each object's attention inside its mask ({args.size}px, {args.steps} euler steps, cfg 5)")
    print("| model | schedule | λ | book (score 2) | pen (score 0.5) |\n|---|---|---|---|---|")
    plain = shares(bench.model, bench.plain_positive, PROMPT)
    print(f"| unpatched | — | — | {100 * plain['book']:.1f}% | {100 * plain['pen']:.1f}% |")
    for schedule in SCHEDULES:
        for strength in STRENGTHS:
            got = shares(*bench.patch(strength, schedule))
            print(f"| patched | {schedule} | {strength:g} | {100 * got['book']:.1f}% | {100 * got['pen']:.1f}% |")


def timing(bench):
    from realign_pack.realign_diff.attention_maps import AttentionRecorder

    args = bench.args
    inside = {"seconds": 0.0}  # process CPU time spent in the recorder's observe()
    observe = AttentionRecorder.observe

    def timed_observe(self, *a, **kw):
        start = time.process_time()
        observe(self, *a, **kw)
        inside["seconds"] += time.process_time() - start

    AttentionRecorder.observe = timed_observe
    patched, positive = bench.patch(1.0)
    variants = {
        "plain": (bench.model, bench.plain_positive),
        "plain+maps": (bench.record(bench.model, PROMPT)[0], bench.plain_positive),
        "patched": (patched, positive),
        "patched+maps": (bench.record(patched)[0], positive),
    }
    for m, pos in variants.values():
        bench.sample(m, pos, 1)  # warm-up
    times = {name: [] for name in variants}
    recorder_seconds = {name: [] for name in variants}
    for r in range(args.repeats):
        for name in variants if r % 2 == 0 else reversed(list(variants)):
            inside["seconds"] = 0.0
            times[name].append(bench.sample(*variants[name], args.timing_steps))
            recorder_seconds[name].append(inside["seconds"] / args.timing_steps)
    print(
        f"\n(2) step time, {args.size}px, {args.timing_steps} steps x {args.repeats} runs each, cfg batch 2, "
        f"{torch.get_num_threads()} threads, load average {load_average()}"
    )
    for index, clock in enumerate(("wall", "process CPU")):
        for name, values in times.items():
            per_run = [v[index] for v in values]
            print(f"  {clock:11s} {name:13s} median step {statistics.median(per_run):.3f} s")
        for base in ("plain", "patched"):
            ratios = [m[index] / b[index] for m, b in zip(times[f"{base}+maps"], times[base])]
            print(
                f"  {clock:11s} {base}+maps / {base}: median of paired ratios {statistics.median(ratios):.3f}x "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
            )
    for base in ("plain", "patched"):
        spent = statistics.median(recorder_seconds[f"{base}+maps"])
        step = statistics.median(v[1] for v in times[base])
        print(
            f"  inside the recorder on {base}: {spent:.3f} s CPU per step = {100 * spent / step:.1f}% of the {base} "
            f"step ({1 + spent / step:.3f}x)"
        )


if __name__ == "__main__":
    main()
