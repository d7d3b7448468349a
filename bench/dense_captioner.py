"""Benchmarks of the Local Dense Captioner's parts, at the real model shapes with random weights.

    python bench/dense_captioner.py            # every benchmark below
    python bench/dense_captioner.py ram        # only some

Each benchmark runs its compared variants interleaved in one process and prints ratios. CPU unless a GPU is
present (none was lent when these were written). Wall time on a shared machine is noisy: the process CPU time
is printed too.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: the repo root holds realign_diff

import torch  # noqa: E402

import realign_diff  # noqa: E402,F401  (torchvision guard first)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _synthetic_images(batch: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    return torch.rand(batch, size, size, 3, generator=generator)


def bench_ram(variants=("ram", "ram_plus"), batches=(1, 4), iterations: int = 2, image_px: int = 512) -> dict:
    """RAM / RAM++ tagging latency, Swin-L at 384 px (the released shapes, random weights), ``tag()`` end to end
    (resize + normalize + network + thresholds) on ``image_px`` square images: 1 vs 4 images per batch."""
    from realign_diff.captioner.ram import RamConfig, RamTagger

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for variant in variants:
        config = RamConfig.official(variant)
        torch.manual_seed(0)
        tagger = RamTagger(config, [f"tag{i}" for i in range(config.num_classes)]).eval().requires_grad_(False).to(device)
        with torch.no_grad():
            tagger.label_embed.normal_(0, 0.02)
        params = sum(p.numel() for p in tagger.parameters())
        images = {b: _synthetic_images(b, image_px) for b in batches}
        for b in batches:  # warm-up
            tagger.tag(images[b][:1] if b > 1 else images[b])
        times = {b: [] for b in batches}
        cpu = {b: [] for b in batches}
        for _ in range(iterations):
            for b in batches:  # interleaved
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, start_cpu = time.perf_counter(), time.process_time()
                tagger.tag(images[b])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[b].append(time.perf_counter() - start)
                cpu[b].append(time.process_time() - start_cpu)
        best = {b: min(t) for b, t in times.items()}
        best_cpu = {b: min(t) for b, t in cpu.items()}
        print(f"{variant} (Swin-L 384, {params / 1e6:.1f} M parameters, {device.type}, {torch.get_num_threads()} threads)")
        for b in batches:
            print(f"  batch {b}: {best[b]:.2f} s per call, {best[b] / b:.2f} s per image; process CPU time "
                  f"{best_cpu[b] / b:.2f} s per image (best of {iterations})")
        if len(batches) > 1:
            first, last = batches[0], batches[-1]
            ratio = (best[last] / last) / (best[first] / first)
            cpu_ratio = (best_cpu[last] / last) / (best_cpu[first] / first)
            print(f"  per-image time, batch {last} / batch {first}: {ratio:.2f} (CPU time: {cpu_ratio:.2f})")
        results[variant] = best
        del tagger
    print(f"  peak RSS {_peak_rss_gib():.2f} GiB")
    return results


BENCHMARKS = {
    "ram": bench_ram,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {list(BENCHMARKS)}")
    for name in args.only or BENCHMARKS:
        print(f"== {name}")
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
