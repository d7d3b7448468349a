"""Local Dense Captioner benchmarks, on CPU with the real model shapes and random weights.

    python bench/dense_captioner.py            # every benchmark in this file
    python bench/dense_captioner.py sam        # only bench_sam (or: grounding)

- ``bench_sam``: SAM ViT-B, one 512 px image, 1 box vs 8 boxes (the image embedding is computed
  once per image, so 8 boxes should cost little more than 1).
- ``bench_grounding``: GroundingDINO SwinT OGC (with bert-base-uncased's shapes), written as an
  original ``{"model": ...}`` checkpoint and loaded through ``load_grounding_dino(config="auto")``,
  then detection latency on a 512 px image, at 512 px (no resize) and at the default 800 px.

Variants run interleaved in one process. Peak memory: about 3.3 GiB for SAM (ViT-B's global attention
at 1024 px), 2.1 GiB for GroundingDINO. No timings are asserted.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script: make the core importable from the repo root

import torch  # noqa: E402

import realign_diff  # noqa: E402,F401 - the torchvision guard, before segment_anything / transformers

TAGS = ["book", "pen", "desk", "lamp", "cup", "chair", "window", "wall", "table", "paper"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","] + TAGS


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    print(f"  8 boxes / 1 box: {result['8 boxes'] / result['1 box']:.2f}x  (peak RSS {_peak_mib():.0f} MiB)")
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
    print(f"  peak RSS {_peak_mib():.0f} MiB")
    return {"load": load_seconds, **result}


if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    benches = [(name[len("bench_"):], fn) for name, fn in list(globals().items()) if name.startswith("bench_") and callable(fn)]
    gpu = torch.cuda.is_available()
    print(f"torch {torch.__version__}; " + ("CUDA present but these benchmarks run on the CPU" if gpu else "no GPU: CPU only"))
    for name, fn in benches:
        if not wanted or name in wanted:
            fn()
            print()
