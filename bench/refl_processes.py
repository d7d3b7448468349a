"""One process against two (DDP through torchrun, and FSDP2 through accelerate launch; gloo on CPU) for the same
ReFL run: step time and how far the trained weights differ.

    python bench/refl_processes.py [--steps 4] [--rounds 2] [--resolution 16]

The real CLI (``training/refl.py``) trains the tiny test checkpoint against the tiny random BLIP-2 reward with an
effective batch of 4: ``1 process x 4``, ``2 processes x 2`` (DDP) and ``2 processes x 2`` sharded with the
shipped ``training/accelerate/fsdp.yaml``, in turn, ``--rounds`` times each. Printed: the median optimizer-step
time of each (from ``metrics.csv``, the first step left out as warm-up), their ratios to one process, and the
largest and mean difference of the trained weights from one process's. On a 2-core CPU this checks the
multi-process paths, not a speed-up: two processes share the cores, DDP adds an all-reduce per step and FSDP
an all-gather per layer and UNet call. Accelerate shards only on GPUs; the FSDP variant runs through the test
kit's ``fsdp_on_cpu`` launcher, which lifts that one gate.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _step_seconds(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(row["seconds"]) for row in csv.DictReader(f) if row["seconds"]][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, in turn")
    parser.add_argument("--resolution", type=int, default=16)
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file

    from realign_testkit.blip2 import write_tiny_blip2
    from realign_testkit.refl import cli_args, write_prompts, write_tiny_sd1_checkpoint
    from realign_testkit.refl_launch import run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = write_tiny_sd1_checkpoint(tmp / "base.safetensors")
        blip2_dirs = write_tiny_blip2(tmp / "blip2")
        prompts = write_prompts(tmp / "p.txt")
        flags = dict(resolution=args.resolution, refl_step_min=1, total_batch_size=4, max_steps=args.steps)
        flags |= dict(validation_split=0, checkpointing_steps=0, save_dtype="fp32", tensorboard=False)
        variants = {"1 process x 4": (1, 4, "ddp"), "2 DDP x 2": (2, 2, "ddp"), "2 FSDP x 2": (2, 2, "fsdp")}
        seconds = {name: [] for name in variants}
        outputs = {}
        for round_ in range(args.rounds):
            for i, (name, (processes, batch, engine)) in enumerate(variants.items()):
                output = tmp / f"{i}-{round_}.safetensors"
                run(processes, cli_args(base, prompts, blip2_dirs, output, train_batch_size=batch, **flags), engine)
                seconds[name] += _step_seconds(output.with_name(output.stem + "-run"))
                outputs[name] = load_file(str(output))

    print(
        f"tiny SD-1 UNet, tiny BLIP-2, {args.resolution} px, effective batch 4, {args.steps} steps x {args.rounds} "
        f"runs each (median step, first step of each run left out)"
    )
    one = outputs["1 process x 4"]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{'variant':16s} {'step s':>8s} {'vs 1':>6s} {'max diff':>9s} {'mean diff':>9s}")
    for name, value in median.items():
        diff = torch.cat([(one[k].float() - outputs[name][k].float()).flatten() for k in one]).abs()
        ratio = value / median["1 process x 4"]
        print(f"{name:16s} {value:8.3f} {ratio:5.2f}x {diff.max():9.2e} {diff.mean():9.2e}")


if __name__ == "__main__":
    main()
