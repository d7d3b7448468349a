"""ReFL fine-tuning of SD-1.5 against the BLIP-2 caption reward (RealignDiff stage 1).

    python training/refl.py --base v1-5-pruned-emaonly.safetensors --prompts prompts.txt \\
        --captioner models/blip2/blip2-opt-2.7b --text-encoder models/blip2/blip2-itm-vit-g \\
        --output realign_sd15.safetensors

On several GPUs or machines the same script runs under a launcher (see the README, "Multi-GPU and multi-node")::

    accelerate launch --num_processes 8 training/refl.py ...
    torchrun --nproc_per_node 8 training/refl.py ...

Every flag: ``python training/refl.py --help``. The work is done by ``realign_diff.refl``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: make the core importable

from realign_diff.refl.config import config_from_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from realign_diff.refl.config import ConfigError
    from realign_diff.refl.data import DataError
    from realign_diff.refl.models import BaseCheckpointError
    from realign_diff.refl.processes import ProcessError
    from realign_diff.refl.trainer import train

    main_process = os.environ.get("RANK", "0") == "0"  # set by torchrun / accelerate launch
    try:
        result = train(config)
    except (ConfigError, BaseCheckpointError, DataError, FileNotFoundError) as exc:
        if main_process:  # every process finds the same error: said once
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if not main_process:
        return 0
    best = (
        f", best validation reward {result.best_validation_reward:.4f} at step {result.best_step}"
        if result.best_step
        else ""
    )
    print(f"done: {result.steps} steps{best}; wrote {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
