"""One process against two (torchrun, gloo on CPU) for the same ReFL run: step time and how far the weights differ.

    python bench/refl_processes.py [--steps 3] [--rounds 2] [--resolution 16]

The real CLI (``training/refl.py``) trains the tiny test checkpoint against the tiny random BLIP-2 reward with an
effective batch of 4: ``1 process x 4`` and ``2 processes x 2``, alternating, ``--rounds`` times each. Printed: the
median optimizer-step time of each (from ``metrics.csv``, the first step left out as warm-up), their ratio, and
the largest and mean difference of the trained weights. On a 2-core CPU this checks the multi-process path, not a
speed-up: two processes share the cores and add an all-reduce per step.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _command(processes: int, args: list[str]) -> list[str]:
    script = str(ROOT / "training" / "refl.py")
    if processes == 1:
        return [sys.executable, script, *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        script,
        *args,
    ]


def _step_seconds(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(row["seconds"]) for row in csv.DictReader(f) if row["seconds"]][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--resolution", type=int, default=16)
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file

    from realign_testkit.blip2 import write_tiny_blip2
    from realign_testkit.refl import write_prompts, write_tiny_sd1_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_tiny_sd1_checkpoint(tmp / "base.safetensors")
        captioner, text_encoder = write_tiny_blip2(tmp / "blip2")
        common = [
            "--base",
            str(base),
            "--prompts",
            str(write_prompts(tmp / "p.txt")),
            "--captioner",
            str(captioner),
            "--text-encoder",
            str(text_encoder),
            "--resolution",
            str(args.resolution),
            "--num-inference-steps",
            "4",
            "--refl-step-min",
            "1",
            "--refl-step-max",
            "3",
            "--total-batch-size",
            "4",
            "--max-steps",
            str(args.steps),
            "--validation-split",
            "0",
            "--checkpointing-steps",
            "0",
            "--learning-rate",
            "1e-3",
            "--reward-weight",
            "1",
            "--save-dtype",
            "fp32",
            "--device",
            "cpu",
            "--no-tensorboard",
            "--no-progress-bar",
        ]
        variants = {"1 process x 4": (1, "4"), "2 processes x 2": (2, "2")}
        seconds = {name: [] for name in variants}
        outputs = {}
        for round_ in range(args.rounds):
            for name, (processes, batch) in variants.items():
                output = tmp / f"{processes}-{round_}.safetensors"
                run = subprocess.run(
                    _command(processes, [*common, "--train-batch-size", batch, "--output", str(output)]),
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if run.returncode:
                    sys.exit(f"{name} failed:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
                seconds[name] += _step_seconds(output.with_name(output.stem + "-run"))
                outputs[name] = load_file(str(output))

    one, two = outputs["1 process x 4"], outputs["2 processes x 2"]
    diff = torch.cat([(one[k].float() - two[k].float()).flatten() for k in one]).abs()
    print(
        f"tiny SD-1 UNet, tiny BLIP-2, {args.resolution} px, effective batch 4, {args.steps} steps x {args.rounds} "
        f"runs each (median step, first step of each run left out)"
    )
    print(f"{'variant':18s} {'step s':>8s}")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"{name:18s} {value:8.3f}")
    print(f"2 processes / 1 process: step time x{median['2 processes x 2'] / median['1 process x 4']:.2f}")
    print(f"trained weights, 2 processes vs 1: largest difference {diff.max():.2e}, mean {diff.mean():.2e}")


if __name__ == "__main__":
    main()
