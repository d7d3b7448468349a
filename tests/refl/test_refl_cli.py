"""The command line: every setting is a flag with help, defaults come from TrainConfig, errors exit cleanly."""

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

from realign_diff.refl.config import TrainConfig, build_arg_parser, config_from_args

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "refl.py"


def _cli():
    spec = importlib.util.spec_from_file_location("refl_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_is_a_flag_with_help_and_the_configs_default():
    parser = build_arg_parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert actions.keys() == fields.keys()
    for name, action in actions.items():
        assert action.help and len(action.help) > 10, name
        assert action.default == fields[name].default, name
        assert "--" + name.replace("_", "-") in action.option_strings
    text = parser.format_help()
    assert "--gradient-accumulation-steps" in text and "--no-keep-best" in text


def test_flags_reach_the_config():
    config = config_from_args(
        [
            "--base",
            "b.safetensors",
            "--prompts",
            "p.txt",
            "--output",
            "o.safetensors",
            "--lora",
            "8",
            "--no-keep-best",
            "--mixed-precision",
            "bf16",
            "--reward-margin",
            "0.5",
            "--resume",
            "latest",
        ]
    )
    assert (config.lora, config.keep_best, config.mixed_precision, config.reward_margin, config.resume) == (
        8,
        False,
        "bf16",
        0.5,
        "latest",
    )
    assert config.reward_weight == 1e-3 and config.num_inference_steps == 50 and config.refl_step_min == 30
    assert config.resolved_run_dir() == Path("o-run") and config.resolved_lora_alpha() == 8.0


def test_user_errors_exit_with_a_message_not_a_traceback(tmp_path, tiny_base, capsys):
    cli = _cli()
    code = cli.main(
        [
            "--base",
            str(tiny_base),
            "--prompts",
            str(tmp_path / "missing.txt"),
            "--output",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert code == 2
    assert "error: prompts file not found" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("a cat\n")
    code = cli.main(["--base", str(tiny_base), "--prompts", str(tmp_path / "p.txt"), "--output", str(tiny_base)])
    assert code == 2 and "would overwrite the base checkpoint" in capsys.readouterr().err
    code = cli.main(
        ["--base", str(tiny_base), "--prompts", str(tmp_path / "p.txt"), "--output", str(tmp_path / "o.safetensors")]
    )
    assert code == 2 and "--captioner and --text-encoder are required" in capsys.readouterr().err


def test_script_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=tmp_cwd(), timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "Running" not in result.stdout and "--captioner" in result.stdout


def tmp_cwd():
    return str(Path(SCRIPT).parent)  # not the repo root: the script must find the core by itself


def test_batch_plan_derives_the_accumulation_and_names_the_numbers_when_it_cannot():
    import pytest

    from realign_diff.refl.config import ConfigError

    def plan(processes, **settings):
        return TrainConfig(base="b", prompts="p", output="o.safetensors", **settings).batch_plan(processes)

    assert plan(1).accumulation == 128 and plan(8).accumulation == 16  # the paper's 128 on any process count
    assert plan(8, train_batch_size=2, total_batch_size=64).total == 64
    assert plan(2, gradient_accumulation_steps=3).total == 6
    with pytest.raises(
        ConfigError,
        match=r"--total-batch-size 128 is not divisible by --train-batch-size 1 x 3 "
        r"process\(es\) = 3: use --total-batch-size 126 or 129",
    ):
        plan(3)
    with pytest.raises(
        ConfigError,
        match=r"--total-batch-size 64 != --train-batch-size 1 x --gradient-accumulation-steps "
        r"4 x 2 process\(es\) = 8: give only one of the two",
    ):
        plan(2, total_batch_size=64, gradient_accumulation_steps=4)
    assert plan(2, baseline="batch").per_micro_step == 2  # one prompt on each of 2 processes: a group of 2
    with pytest.raises(
        ConfigError, match="--baseline batch needs at least 2 prompts per micro-step over all processes"
    ):
        plan(1, baseline="batch")
