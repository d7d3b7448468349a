"""Full fine-tuning sharded by FSDP2 through Accelerate and the shipped ``training/accelerate/fsdp.yaml``, on 2 CPU
processes, against the real CLI and the tiny BLIP-2 reward.

Accelerate shards only on GPUs; ``realign_testkit/fsdp_on_cpu.py`` lifts that one gate, so the real FSDP2 path
(sharding, collective rollouts, gathering whole weights for every file, loading them back on resume) runs on
gloo here. A sharded run must train what one process with the whole batch trains, write whole weights from one
process, and resume exactly.
"""

import re
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from realign_diff.refl import saving
from realign_diff.refl.config import ConfigError, TrainConfig
from realign_diff.refl.models import load_base
from realign_testkit.refl import assert_same_run, cli_args, write_prompts
from realign_testkit.refl_launch import assert_same_training, kill_one_worker, launch, metrics_rows, run

STEPS = 3


def _args(tiny_base, prompts_file, blip2_dirs, output, *extra):
    # 3 validation prompts on 2 processes: one process rolls out a repeat to keep the sharded UNet's calls in step
    flags = dict(refl_step_min=1, total_batch_size=4, max_steps=STEPS, validation_split=0.375, validation_steps=2)
    flags |= dict(checkpointing_steps=1, checkpoints_total_limit=2, baseline="ema", save_dtype="fp32", seed=5)
    flags |= dict(keep_best=False, tensorboard=False, process_timeout=120, train_batch_size=2)
    return [*cli_args(tiny_base, prompts_file, blip2_dirs, output, **flags), *extra]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, tiny_base, blip2_dirs):
    """An uninterrupted sharded run: 2 processes x 2 per micro-batch (= 4 per step)."""
    root = tmp_path_factory.mktemp("fsdp")
    prompts = write_prompts(root / "prompts.txt")
    log = run(2, _args(tiny_base, prompts, blip2_dirs, root / "out.safetensors"), engine="fsdp")
    return root, prompts, log


def _line(log: str, start: str) -> str:
    return next(line.strip() for line in log.splitlines() if line.strip().startswith(start))


def test_fsdp_trains_what_one_process_with_the_whole_batch_trains(fsdp_run, tiny_base, blip2_dirs):
    root, prompts, log = fsdp_run
    one = run(1, _args(tiny_base, prompts, blip2_dirs, root / "one.safetensors", "--train-batch-size", "4"))
    base = load_file(str(tiny_base))
    trained = load_file(str(root / "out.safetensors"))
    assert_same_training(trained, load_file(str(root / "one.safetensors")), base, STEPS)
    assert metrics_rows(root / "out-run" / "metrics.csv") == metrics_rows(root / "one-run" / "metrics.csv")
    assert "processes = 2 (FSDP), this one on cpu" in log
    assert _line(log, "trained = ") == _line(one, "trained = ")  # parameters counted whole, not per shard
    assert "trained weights identical" not in log  # one sharded copy: nothing to compare


def test_fsdp_writes_whole_weights_once(fsdp_run, tiny_base):
    root, _, log = fsdp_run
    run_dir = root / "out-run"
    assert [r.split(",")[0] for r in (run_dir / "metrics.csv").read_text().splitlines()[1:]] == ["0", "1", "2", "3"]
    assert [step for step, _ in saving.list_checkpoints(run_dir)] == [2, 3]
    assert log.count("saved ") == STEPS and log.count("INFO wrote ") == 1
    assert not [p for p in root.rglob(".*") if saving.TEMPORARY_RE.match(p.name)]
    # the last checkpoint holds the whole UNet: converted, it is the output's UNet bit for bit
    tensors, state = saving.load_training_checkpoint(run_dir / "checkpoint-3")
    output = load_file(str(root / "out.safetensors"))
    unet_config = load_base(tiny_base).unet_config
    for key, value in saving.unet_to_checkpoint_tensors(tensors, unet_config, torch.float32).items():
        assert torch.equal(output[key], value), key
    assert state["sharded"] is True
    moments = state["optimizer"]["state"]  # AdamW's state of every weight, whole and keyed by name
    assert set(moments) == set(tensors)
    assert all(moments[name]["exp_avg"].shape == tensors[name].shape for name in tensors)


def test_fsdp_killed_worker_ends_the_run_and_resume_is_exact(fsdp_run, tiny_base, blip2_dirs):
    root, prompts, _ = fsdp_run
    output, run_dir = root / "killed.safetensors", root / "killed-run"
    args = _args(tiny_base, prompts, blip2_dirs, output)
    _, returncode, seconds = kill_one_worker(args, run_dir, "fsdp")
    assert returncode != 0 and seconds < 60
    assert not output.exists()

    resumed = run(2, [*args, "--resume", "latest"], engine="fsdp")
    assert "resumed from" in resumed
    assert_same_run(root / "out.safetensors", output, root / "out-run", run_dir)


def test_fsdp_with_bf16_autocast_and_gradient_checkpointing_trains(tmp_path, tiny_base, blip2_dirs):
    output = tmp_path / "bf16.safetensors"
    extra = ("--max-steps", "2", "--checkpointing-steps", "0", "--validation-steps", "0")
    args = _args(tiny_base, write_prompts(tmp_path / "p.txt"), blip2_dirs, output, *extra)
    log = run(2, [*args, "--mixed-precision", "bf16", "--gradient-checkpointing"], engine="fsdp")
    assert "mixed precision = bf16" in log and "gradient checkpointing = True" in log
    rows = [row.split(",") for row in (tmp_path / "bf16-run" / "metrics.csv").read_text().splitlines()]
    header, steps = rows[0], rows[1:]
    assert len(steps) == 2 and all(row[header.index("skipped")] == "0" for row in steps)
    assert all(torch.isfinite(torch.tensor(float(row[header.index("loss")]))) for row in steps)
    base, trained = load_file(str(tiny_base)), load_file(str(output))
    unet = [k for k in trained if k.startswith("model.diffusion_model.")]
    moved = [k for k in unet if not torch.equal(trained[k].float(), base[k].float())]
    assert len(moved) > len(unet) // 2  # trained, in bf16 autocast, through the checkpointed blocks


def test_a_sharded_checkpoint_is_refused_by_an_unsharded_run_with_the_fix(fsdp_run, tiny_base, blip2_dirs):
    root, prompts, _ = fsdp_run
    checkpoint = root / "copied-run" / "checkpoint-3"
    shutil.copytree(root / "out-run" / "checkpoint-3", checkpoint)
    args = _args(tiny_base, prompts, blip2_dirs, root / "copied.safetensors", "--resume", str(checkpoint))
    process = launch(1, [*args, "--train-batch-size", "4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "was written by an FSDP (sharded) run and this is a DDP or one-process run" in out
    assert "resume with the kind of accelerate config the run started with" in out


def test_lora_is_refused_under_fsdp_with_the_fix(tmp_path, tiny_base, blip2_dirs):
    args = _args(tiny_base, write_prompts(tmp_path / "p.txt"), blip2_dirs, tmp_path / "o.safetensors", "--lora", "4")
    process = launch(2, args, "fsdp", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    error = next(line for line in out.splitlines() if line.startswith("error: "))
    assert "--lora with an FSDP accelerate config" in error and "use a multi-GPU (DDP) config" in error
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize(
    "engine, version, message",
    [("DEEPSPEED", None, "use FSDP (training/accelerate/fsdp.yaml"), ("FSDP", 1, "set `fsdp_version: 2`")],
)
def test_deepspeed_and_fsdp1_are_refused_with_the_fix(engine, version, message):
    from types import SimpleNamespace

    from realign_diff.refl.processes import _check_engine

    # Accelerate's FSDP1 and DeepSpeed plugins cannot even be built without a GPU: only their settings here
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=version)))
    with pytest.raises(ConfigError, match=re.escape(message)):
        _check_engine(accelerator, engine)
    _check_engine(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=2))), "FSDP")


@pytest.mark.parametrize(
    "flags, loss_scaling, message",
    [
        (dict(use_8bit_adam=True), False, "FSDP already shards the optimizer state"),
        ({}, True, "use --mixed-precision bf16"),
    ],
)
def test_sharding_refuses_8bit_adam_and_fp16_loss_scaling(flags, loss_scaling, message):
    from realign_diff.refl.trainer import _check_sharded

    with pytest.raises(ConfigError, match=message):
        _check_sharded(TrainConfig(base="b", prompts="p", output="o.safetensors", **flags), loss_scaling)
    _check_sharded(TrainConfig(base="b", prompts="p", output="o.safetensors"), False)  # full, fp32/bf16: fine
