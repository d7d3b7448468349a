"""Runs ``training/refl.py`` sharded by Accelerate's FSDP2 on CPU processes, for tests on machines without GPUs.

Accelerate selects FSDP only for GPU process groups (on gloo it always makes MULTI_CPU / DDP), while
PyTorch's ``fully_shard`` itself runs on gloo. This lifts only that gate: the plugin still comes from the
accelerate config the launcher turned into ``FSDP_*`` variables, and the sharding, state-dict gathering and
loading are Accelerate's and PyTorch's own code. Launch it like the trainer::

    python -m accelerate.commands.launch --config_file training/accelerate/fsdp.yaml --num_processes 2 \\
        tests/realign_testkit/fsdp_on_cpu.py ARGS
"""

import os
import runpy
import sys
from pathlib import Path

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wanted and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the launcher's FSDP_* variables


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    script = Path(__file__).resolve().parents[2] / "training" / "refl.py"
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")
