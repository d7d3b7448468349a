"""Local Dense Captioner benchmarks, at the real model shapes with random weights.

    python bench/dense_captioner.py             # every benchmark below
    python bench/dense_captioner.py ram sam     # only some (ram, sam, sam_load, grounding, captioner)

- ``ram``: RAM / RAM++ tagging latency (Swin-L 384), 1 vs 4 images per batch.
- ``sam``: SAM ViT-B, one 512 px image, 1 box vs 8 boxes (the image embedding is computed once per image,
  so 8 boxes should cost little more than 1).
- ``sam_load``: loading an original-layout SAM ViT-H ``.pth`` (2.4 GB): ``load_sam`` (built on the meta
  device, weights assigned from the file) vs building the model with its random init and copying the
  file's weights in (how it loaded before).
- ``grounding``: GroundingDINO SwinT OGC (with bert-base-uncased's shapes), written as an original
  ``{"model": ...}`` checkpoint and loaded through ``load_grounding_dino(config="auto")``, then detection
  latency on a 512 px image, at 512 px (no resize) and at the default 800 px.
- ``captioner``: the whole Local Dense Captioner pipeline (``caption_images``: RAM Swin-L 384 + offline scorer
  + GroundingDINO SwinT OGC at its default 800 px + SAM ViT-B) on 512 px images, 1 vs 2 images per call, with
  the time of each stage.

Each benchmark runs its compared variants interleaved in one process and prints ratios; no timing is asserted.
CPU unless a GPU is present (none was lent when these were written). Wall time on a shared machine is noisy:
the RAM benchmark prints the process CPU time too. Peak memory: about 3.3 GiB (SAM's global attention at
1024 px), 2.1 GiB (GroundingDINO), 2.3 GiB (RAM), 4.9 GiB for the whole captioner (the three models together).
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
    from realign_diff.dense_captioner.ram import RamConfig, RamTagger

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for variant in variants:
        config = RamConfig.official(variant)
        torch.manual_seed(0)
        tagger = (
            RamTagger(config, [f"tag{i}" for i in range(config.num_classes)]).eval().requires_grad_(False).to(device)
        )
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
        print(
            f"{variant} (Swin-L 384, {params / 1e6:.1f} M parameters, {device.type}, {torch.get_num_threads()} threads)"
        )
        for b in batches:
            print(
                f"  batch {b}: {best[b]:.2f} s per call, {best[b] / b:.2f} s per image; process CPU time "
                f"{best_cpu[b] / b:.2f} s per image (best of {iterations})"
            )
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
    from realign_diff.dense_captioner.sam import SAM_CONFIGS, SamSegmenter, build_sam

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


def bench_sam_load(repeats: int = 2, model_type: str = "vit_h") -> dict[str, float]:
    from realign_diff.checkpoint_file import read_state_dict
    from realign_diff.dense_captioner.sam import SAM_CONFIGS, build_sam, load_sam

    config = SAM_CONFIGS[model_type]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"sam_{model_type}.pth"
        torch.save(build_sam(config).state_dict(), path)

        def build_then_copy():
            sam = build_sam(config)
            sam.load_state_dict(read_state_dict(path))
            return sam

        result = _interleaved({"build + copy": build_then_copy, "load_sam": lambda: load_sam(path)}, repeats)
    print(f"SAM {model_type} .pth load, CPU, {torch.get_num_threads()} threads (file in the page cache)")
    for name, seconds in result.items():
        print(f"  {name:>15}: {seconds:7.3f} s")
    print(f"  load_sam / build + copy: {result['load_sam'] / result['build + copy']:.3f}x")
    return result


def bench_grounding(repeats: int = 3) -> dict[str, float]:
    from transformers import BertConfig, BertTokenizerFast

    from realign_diff.dense_captioner.grounding import SWINT_OGC, build_model, load_grounding_dino

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
    print(
        f"GroundingDINO {detector.config.name} ({params / 1e6:.0f} M params, random weights), 512x512 image, "
        f"{len(TAGS)} tags, CPU, {torch.get_num_threads()} threads"
    )
    print(f"  load (auto config): {load_seconds:7.2f} s")
    for name, seconds in result.items():
        print(f"  {name:>17}: {seconds:7.3f} s")
    print(f"  peak RSS {_peak_rss_gib():.2f} GiB")
    return {"load": load_seconds, **result}


CAPTIONER_PROMPT = "a red book and a yellow pen on a wooden desk next to a lamp"


def bench_captioner_end_to_end(batches=(1,), repeats: int = 2, boxes: int = 8) -> dict:
    """End-to-end Local Dense Captioner latency on 512 px images: RAM (Swin-L 384), the offline scorer,
    GroundingDINO SwinT OGC (bert-base-uncased shapes, 800 px as in the original inference) and SAM ViT-B, all at
    the released shapes with random weights, through ``caption_images`` exactly as the node runs it.

    Random weights tag random classes, so the work is set to what a real image of the prompt gives: RAM's top 10
    tags (all scored 0 by the offline scorer here), the 4 objects the prompt names (``add_prompt_objects``) sent
    to GroundingDINO, and a box threshold calibrated once so that ``boxes`` boxes reach SAM (its image embedding is
    computed once per image).

    No warm-up call (one call takes minutes on a 2-core CPU): every call is reported, the first included. With
    ``batches=(1, 2)`` the per-image time of both is compared (measured once: 1.00x, batching gains nothing on CPU).
    """
    from transformers import BertConfig, BertTokenizerFast

    from realign_diff.dense_captioner.grounding import SWINT_OGC, GroundingDinoDetector, build_model
    from realign_diff.dense_captioner.lexicon import all_nouns
    from realign_diff.dense_captioner.offline_scorer import OfflineScorer, prompt_objects
    from realign_diff.dense_captioner.pipeline import CaptionerSettings, caption_images
    from realign_diff.dense_captioner.ram import RamConfig, RamTagger
    from realign_diff.dense_captioner.sam import SAM_CONFIGS, SamSegmenter, build_sam

    torch.manual_seed(0)
    config = RamConfig.official("ram")
    names = sorted(all_nouns() - {name for name, _ in prompt_objects(CAPTIONER_PROMPT)})
    names = (names + [f"tag{i}" for i in range(config.num_classes)])[: config.num_classes]
    tagger = RamTagger(config, names).eval().requires_grad_(False)
    with torch.no_grad():
        tagger.label_embed.normal_(0, 0.02)
    with tempfile.TemporaryDirectory(prefix="realign-bench-") as folder:
        (Path(folder) / "vocab.txt").write_text(
            "\n".join(VOCAB + ["red", "yellow", "wooden", "next", "to", "a", "on"]) + "\n"
        )
        tokenizer = BertTokenizerFast.from_pretrained(folder)
    model = build_model(SWINT_OGC, tokenizer, BertConfig()).eval().requires_grad_(False)
    detector = GroundingDinoDetector(model, tokenizer, SWINT_OGC)
    segmenter = SamSegmenter(build_sam(SAM_CONFIGS["vit_b"]).eval().requires_grad_(False), SAM_CONFIGS["vit_b"])
    images = {b: _synthetic_images(b, 512) for b in batches}
    objects = [name for name, _ in prompt_objects(CAPTIONER_PROMPT)]

    # the box threshold that lets about ``boxes`` boxes through on these weights (once, not timed)
    found = detector.detect(images[batches[0]][0], objects, box_threshold=0.0, text_threshold=0.0)
    confidences = sorted((d.confidence for d in found), reverse=True)
    box_threshold = confidences[min(boxes, len(confidences)) - 1] if confidences else 0.0
    settings = CaptionerSettings(
        ram_threshold=0.0, ram_top_k=10, box_threshold=box_threshold, text_threshold=0.0, nms_threshold=0.5
    )

    stages: dict[int, list[dict[str, float]]] = {b: [] for b in batches}

    def run(b):
        def call():
            cpu_start = time.process_time()
            marks = [time.perf_counter()]
            results = caption_images(
                images[b],
                CAPTIONER_PROMPT,
                tagger=tagger,
                scorer=OfflineScorer(),
                detector=detector,
                segmenter=segmenter,
                settings=settings,
                on_step=lambda n=1: marks.append(time.perf_counter()),
            )
            # marks: start, tagged, then per image: scored, detected, segmented, done
            split = {"tag": marks[1] - marks[0], "score": 0.0, "detect": 0.0, "segment": 0.0}
            for i in range(b):
                scored, detected, segmented, done = marks[2 + 4 * i : 6 + 4 * i]
                previous = marks[1 + 4 * i]
                split["score"] += scored - previous
                split["detect"] += detected - scored
                split["segment"] += segmented - detected + done - segmented
            split["process CPU"] = time.process_time() - cpu_start
            stages[b].append(split)
            call.objects = sum(len(r.guidance.objects) for r in results)

        return call

    runs = {b: run(b) for b in batches}
    calls: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(repeats):
        for b in batches:  # interleaved
            calls[b] += _timed(runs[b], 1)
    seconds = {f"batch {b}": min(times) for b, times in calls.items()}
    print(
        f"Local Dense Captioner end to end, 512x512 images, offline scorer, CPU, {torch.get_num_threads()} threads "
        f"(RAM Swin-L 384 + GroundingDINO SwinT OGC at 800 px + SAM ViT-B; random weights; "
        f"{len(objects)} prompt objects grounded, box threshold {box_threshold:.3f} for ~{boxes} boxes)"
    )
    for b in batches:
        last = stages[b][-1]
        per_stage = ", ".join(f"{name} {value / b:.1f}" for name, value in last.items() if name != "process CPU")
        cpu = last["process CPU"] / b
        every = ", ".join(f"{t:.1f}" for t in calls[b])
        print(
            f"  batch {b}: {seconds[f'batch {b}']:7.2f} s per call (best of: {every}), "
            f"{seconds[f'batch {b}'] / b:6.2f} s per image; last call per image: {per_stage} s, "
            f"process CPU time {cpu:.1f} s; {runs[b].objects} objects found"
        )
    if len(batches) > 1:
        first, last = batches[0], batches[-1]
        ratio = (seconds[f"batch {last}"] / last) / (seconds[f"batch {first}"] / first)
        print(f"  per-image time, batch {last} / batch {first}: {ratio:.2f}x")
    print(f"  peak RSS {_peak_rss_gib():.2f} GiB")
    return {"box_threshold": box_threshold, **seconds}


BENCHMARKS = {
    "ram": bench_ram,
    "sam": bench_sam,
    "sam_load": bench_sam_load,
    "grounding": bench_grounding,
    "captioner": bench_captioner_end_to_end,
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
