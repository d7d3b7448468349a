"""Caption reward speed: batches of 8 vs one image at a time, and a second node run (models loaded) vs the first.

    python bench/caption_reward.py [--preset small|tiny] [--rounds 3] [--images 16]

Random-weight BLIP-2 folders of the testkit's ``small`` preset (hidden 256, 4 layers, 224 px images, 32 query
tokens, OPT-style captioner; 12.6 M parameters loaded) are written to a temp folder and loaded through the
real loader; they run on the CPU in seconds. The compared variants run interleaved, ``--rounds`` times, and the
medians are compared. With ComfyUI found (``COMFYUI_PATH``), the node comparison runs the real
LoadImage -> BLIP-2 Caption Reward Loader -> Caption Reward Scorer graph in-process; otherwise it runs what the
two nodes run (``CaptionReward.from_pretrained`` + ``score``).

Not measured here (no GPU on this machine): images/second for the real blip2-opt-2.7b + blip2-itm-vit-g shapes
in fp16 at batch 8.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # a script: the core and the testkit

import torch  # noqa: E402

import realign_diff  # noqa: E402,F401 - the torchvision guard, before transformers
from realign_diff.reward import CaptionReward  # noqa: E402
from realign_testkit.blip2 import write_tiny_blip2  # noqa: E402

PROMPT = "a red book and a yellow pen on a wooden desk"


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_images(count: int, size: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, size, size, 3, generator=generator)


def bench_batching(reward: CaptionReward, images: torch.Tensor, rounds: int, max_new_tokens: int) -> None:
    reward.score(images[:2], PROMPT, max_new_tokens=max_new_tokens)  # warm-up
    times = {8: [], 1: []}
    for _ in range(rounds):
        for batch_size in (8, 1):
            times[batch_size].append(
                timed(lambda bs=batch_size: reward.score(images, PROMPT, batch_size=bs, max_new_tokens=max_new_tokens))
            )
    batched, single = statistics.median(times[8]), statistics.median(times[1])
    n = images.shape[0]
    print(f"score {n} images, batches of 8:   {batched:.3f} s  ({n / batched:.1f} images/s)")
    print(f"score {n} images, one at a time:  {single:.3f} s  ({n / single:.1f} images/s)")
    print(f"  ratio one-at-a-time / batched: {single / batched:.2f}x")


def bench_node_core(dirs, images: torch.Tensor, rounds: int, max_new_tokens: int) -> None:
    first, second = [], []
    for _ in range(rounds):
        holder = {}

        def first_run(holder=holder):
            holder["reward"] = CaptionReward.from_pretrained(*dirs, device="cpu")
            holder["reward"].score(images, PROMPT, max_new_tokens=max_new_tokens)

        first.append(timed(first_run))
        second.append(
            timed(lambda holder=holder: holder["reward"].score(images, PROMPT + " ", max_new_tokens=max_new_tokens))
        )
    report_node(statistics.median(first), statistics.median(second), "library path of the two nodes (no ComfyUI)")


def bench_node_comfyui(comfy_path: Path, dirs, images: torch.Tensor, rounds: int, max_new_tokens: int) -> None:
    import numpy as np
    from PIL import Image

    from realign_testkit.comfyui import start_comfyui

    base = Path(tempfile.mkdtemp(prefix="realign-bench-comfyui-"))
    comfyui = start_comfyui(base)
    blip2 = comfyui.models_dir / "blip2"
    blip2.mkdir(parents=True, exist_ok=True)
    for folder in dirs:
        (blip2 / folder.name).symlink_to(folder, target_is_directory=True)
    Image.fromarray((images[0].numpy() * 255).astype(np.uint8)).save(base / "input" / "bench.png")

    def graph(prompt):
        return {
            "1": {
                "class_type": "RealignDiffBlip2RewardLoader",
                "inputs": {"captioner": dirs[0].name, "text_encoder": dirs[1].name, "precision": "auto"},
            },
            "2": {"class_type": "LoadImage", "inputs": {"image": "bench.png"}},
            "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": images.shape[0]}},
            "4": {
                "class_type": "RealignDiffCaptionRewardScorer",
                "inputs": {
                    "caption_reward": ["1", 0],
                    "images": ["3", 0],
                    "prompt": prompt,
                    "max_new_tokens": max_new_tokens,
                    "num_beams": 1,
                    "batch_size": 8,
                },
            },
        }

    first, second = [], []
    for i in range(rounds):
        first.append(timed(lambda: comfyui.run(graph(PROMPT), reset_cache=True)))
        # only the scorer reruns
        second.append(timed(lambda i=i: comfyui.run(graph(f"{PROMPT} {i}"), reset_cache=False)))
    report_node(statistics.median(first), statistics.median(second), "real ComfyUI graph, in-process")


def report_node(first: float, second: float, how: str) -> None:
    print(f"node, first run (load included):  {first:.3f} s   [{how}]")
    print(f"node, second run (models loaded): {second:.3f} s")
    print(f"  ratio first / second: {first / second:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", default="small", choices=["tiny", "small"], help="random BLIP-2 size (testkit preset)"
    )
    parser.add_argument("--images", type=int, default=16, help="images scored per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians are compared")
    parser.add_argument(
        "--max-new-tokens", type=int, default=12, help="caption length (random models rarely stop early)"
    )
    args = parser.parse_args()

    from realign_testkit.comfyui import find_comfyui

    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_tiny_blip2(tmp, preset=args.preset)
        reward = CaptionReward.from_pretrained(*dirs, device="cpu")
        params = sum(p.numel() for p in reward.parameters())
        print(
            f"random BLIP-2 '{args.preset}' preset: {params / 1e6:.1f} M parameters loaded (captioner + text tower), "
            f"fp32, CPU, {torch.get_num_threads()} threads; {args.images} images, {args.max_new_tokens} new tokens, "
            f"greedy; medians of {args.rounds} interleaved rounds"
        )
        images = make_images(args.images)
        bench_batching(reward, images, args.rounds, args.max_new_tokens)
        comfy_path, _ = find_comfyui()
        if comfy_path is not None:
            bench_node_comfyui(comfy_path, dirs, images, args.rounds, args.max_new_tokens)
        else:
            bench_node_core(dirs, images, args.rounds, args.max_new_tokens)
        print(
            "GPU images/second for blip2-opt-2.7b + blip2-itm-vit-g shapes in fp16 at batch 8: not measured (no GPU)."
        )


if __name__ == "__main__":
    main()
