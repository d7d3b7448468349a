"""Local Dense Captioner benchmarks, at the real model shapes with random weights.

    python bench/dense_captioner.py             # every benchmark below
    python bench/dense_captioner.py ram sam     # only some (ram, sam, grounding)

- ``ram``: RAM / RAM++ tagging latency (Swin-L 384), 1 vs 4 images per batch.
- ``sam``: SAM ViT-B, one 512 px image, 1 box vs 8 boxes (the image embedding is computed once per image,
  so 8 boxes should cost little more than 1).
- ``grounding``: GroundingDINO SwinT OGC (with bert-base-uncased's shapes), written as an original
  ``{"model": ...}`` checkpoint and loaded through ``load_grounding_dino(config="auto")``, then detection
  latency on a 512 px image, at 512 px (no resize) and at the default 800 px.

Each benchmark runs its compared variants interleaved in one process and prints ratios; no timing is asserted.
CPU unless a GPU is present (none was lent when these were written). Wall time on a shared machine is noisy:
the RAM benchmark prints the process CPU time too. Peak memory: about 3.3 GiB (SAM's global attention at
1024 px), 2.1 GiB (GroundingDINO), 2.3 GiB (RAM).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: the repo root holds realign_diff

import torch  # noqa: E402

import realign_diff  # noqa: E402,F401 - the torchvision guard, before segment_anything / transformers

TAGS = ["book", "pen", "desk", "lamp", "cup", "chair", "window", "wall", "table", "paper"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","] + TAGS


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


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _interleaved(variants: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each variant, the variants taking turns (one warm-up call each)."""
    for fn in variants.values():
        fn()
    runs = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            runs[name] += _timed(fn, 1)
    return {name: sorted(times)[len(times) // 2] for name, times in runs.items()}


def bench_sam(repeats: int = 1) -> dict[str, float]:
    from realign_diff.captioner.sam import SAM_CONFIGS, SamSegmenter, build_sam

    torch.manual_seed(0)
    segmenter = SamSegmenter(build_sam(SAM_CONFIGS["vit_b"]).requires_grad_(False), SAM_CONFIGS["vit_b"])
    image = torch.rand(512, 512, 3)
    boxes = torch.tensor([[40.0 * i, 30.0 * i, 40.0 * i + 150, 30.0 * i + 200] for i in range(8)])
    embedding, size = segmenter.embed(image)
    result = _interleaved(
        {
            "1 box": lambda: segmenter.segment(image, boxes[:1]),
            "8 boxes": lambda: segmenter.segment(image, boxes),
            "decode 1 box": lambda: segmenter.masks_from_embedding(embedding, size, (512, 512), boxes[:1]),
            "decode 8 boxes": lambda: segmenter.masks_from_embedding(embedding, size, (512, 512), boxes),
        },
        repeats,
    )
    print(f"SAM vit_b (random weights), 512x512 image, CPU, {torch.get_num_threads()} threads")
    for name, seconds in result.items():
        print(f"  {name:>15}: {seconds:7.3f} s")
    print(f"  8 boxes / 1 box: {result['8 boxes'] / result['1 box']:.2f}x  (peak RSS {_peak_rss_gib():.2f} GiB)")
    return result


def bench_grounding(repeats: int = 3) -> dict[str, float]:
    from transformers import BertConfig, BertTokenizerFast

    from realign_diff.captioner.grounding import SWINT_OGC, build_model, load_grounding_dino

    with tempfile.TemporaryDirectory(prefix="realign-bench-") as folder:
        bert_dir = Path(folder) / "bert-base-uncased"
        bert_dir.mkdir()
        BertConfig().save_pretrained(bert_dir)  # bert-base-uncased's shapes
        (bert_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        torch.manual_seed(0)
        model = build_model(SWINT_OGC, BertTokenizerFast.from_pretrained(str(bert_dir)), BertConfig())
        checkpoint = Path(folder) / "groundingdino_swint_ogc.pth"
        torch.save({"model": model.state_dict()}, checkpoint)
        params = sum(p.numel() for p in model.parameters())
        del model
        start = time.perf_counter()
        detector = load_grounding_dino(checkpoint, bert_dir)  # config="auto"
        load_seconds = time.perf_counter() - start
    image = torch.rand(512, 512, 3)

    def detect(size):
        def run():
            detector.image_size = size
            detector.detect(image, TAGS, box_threshold=0.35, text_threshold=0.25)
        return run

    result = _interleaved({"512 px": detect(512), "800 px (default)": detect(800)}, repeats)
    print(f"GroundingDINO {detector.config.name} ({params / 1e6:.0f} M params, random weights), 512x512 image, "
          f"{len(TAGS)} tags, CPU, {torch.get_num_threads()} threads")
    print(f"  load (auto config): {load_seconds:7.2f} s")
    for name, seconds in result.items():
        print(f"  {name:>17}: {seconds:7.3f} s")
    print(f"  peak RSS {_peak_rss_gib():.2f} GiB")
    return {"load": load_seconds, **result}


BENCHMARKS = {
    "ram": bench_ram,
    "sam": bench_sam,
    "grounding": bench_grounding,
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
        print()


if __name__ == "__main__":
    main()
