"""What a user is told: no server at the address, a node type the server lacks, a node the workflow has no title
for, a run the server refuses (recorded as failed; the other runs go on); and the shipped two-pass workflow, as the
evaluation finds its prompt, seed and image nodes through a real server's /object_info."""

from __future__ import annotations

import csv
import json

import pytest

from realign_diff.evaluation.comfy_client import ComfyClient, ServerUnreachable
from realign_diff.evaluation.config import EvalConfig
from realign_diff.evaluation.pipeline import evaluate
from realign_diff.evaluation.template import build_template
from realign_diff.evaluation.workflow_api import MissingNodeTypes, WorkflowError, load_workflow
from realign_testkit.comfyui_server import free_port
from realign_testkit.evaluation import PROMPTS, two_pass_prompt
from realign_testkit.pack import PACK_ROOT

REFUSED = -(2**63)  # below PrimitiveInt's minimum: ComfyUI refuses the prompt


def _prompts(tmp_path, prompts=PROMPTS[:1]):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path


def test_no_server_says_where_it_looked_and_how_to_start_one(tmp_path, capsys, evaluate_script):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match=f"ComfyUI at {url} is not reachable .*--server"):
        ComfyClient(url).object_info()
    code = evaluate_script.main(
        ["--prompts", str(_prompts(tmp_path)), "--output", str(tmp_path / "out"), "--server", url]
    )
    assert code == 2 and f"error: ComfyUI at {url} is not reachable" in capsys.readouterr().err


@pytest.fixture
def evaluate_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_script", PACK_ROOT / "evaluation" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.comfyui
def test_missing_node_and_unknown_titles_are_named(eval_server, tmp_path):
    workflow = two_pass_prompt()
    workflow["11"]["class_type"] = "RealignDiffNoSuchNode"
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow), encoding="utf-8")
    config = EvalConfig(prompts=str(_prompts(tmp_path)), output=str(tmp_path / "a"), server=[eval_server.url])
    config.workflow = str(path)
    with pytest.raises(
        MissingNodeTypes,
        match=f"(?s)ComfyUI at {eval_server.url}: node types not registered.*RealignDiffNoSuchNode: node",
    ):
        evaluate(config)
    info = ComfyClient(eval_server.url).object_info()
    nodes = {"prompt": "Prompt", "seed": "Seed", "coarse": "Coarse image", "realigned": "Final image"}
    with pytest.raises(WorkflowError, match="'Final image' for the realigned image.*--realigned-node.*Realigned image"):
        build_template(two_pass_prompt(), info, nodes)


@pytest.mark.comfyui
def test_a_refused_run_is_recorded_and_the_others_go_on(eval_server, workflow_file, tmp_path):
    out = tmp_path / "out"
    config = EvalConfig(
        prompts=str(_prompts(tmp_path)),
        output=str(out),
        server=[eval_server.url],
        seeds=f"{REFUSED},0",
        progress_bar=False,
    )
    config.workflow = str(workflow_file)
    summary = evaluate(config)
    assert summary.runs == 2 and summary.generated == 2
    (failed,) = summary.failed
    assert failed["seed"] == REFUSED and "node 3 (Seed (both passes))" in failed["error"], failed["error"]
    assert "smaller than min" in failed["error"]
    assert json.loads((out / "runs" / "00000_s0.json").read_text())["status"] == "ok"
    with open(out / "report" / "failed.csv", encoding="utf-8") as handle:
        assert [r["run"] for r in csv.DictReader(handle)] == [f"00000_s{REFUSED}"]
    assert "Failed runs: 1" in (out / "report" / "table.md").read_text()


@pytest.mark.comfyui
def test_the_shipped_two_pass_workflow_through_object_info(eval_server):
    info = ComfyClient(eval_server.url).object_info()
    workflow = load_workflow(PACK_ROOT / "workflows" / "realigndiff_two_pass.json")
    nodes = {"prompt": "Prompt", "seed": "Seed", "coarse": "Coarse image", "realigned": "Realigned image"}
    template = build_template(workflow, info, nodes)
    prompt = template.prompt
    text_node, text_input = template.text_target
    assert (prompt[text_node]["class_type"], text_input) == ("PrimitiveStringMultiline", "value")
    assert [(prompt[n]["class_type"], i) for n, i in template.seed_targets] == [("PrimitiveInt", "value")]
    for kind, node in template.save_nodes.items():
        source = prompt[prompt[node]["inputs"]["images"][0]]
        assert source["class_type"] == "VAEDecode" and kind in source["_meta"]["title"].lower()
    run = template.for_run("a green cat", 7, "x_s7")
    assert (
        run[text_node]["inputs"]["value"] == "a green cat" and run[template.seed_targets[0][0]]["inputs"]["value"] == 7
    )
    shown = [e for e in prompt.values() if e.get("_meta", {}).get("title", "").startswith("evaluation: json of")]
    if any(e["class_type"] == "RealignDiffAttentionHeatmaps" for e in prompt.values()):
        assert len(shown) == 2  # each pass's attention data lands in the run's history


@pytest.mark.comfyui
def test_a_run_failing_on_the_server_is_recorded_with_the_nodes_error(eval_server, scoring_models, tmp_path):
    blip2 = eval_server.base_dir / "models" / "blip2"
    blip2.mkdir(parents=True, exist_ok=True)
    for folder in (scoring_models["captioner"], scoring_models["text_encoder"]):
        if not (blip2 / folder.name).exists():
            (blip2 / folder.name).symlink_to(folder, target_is_directory=True)
    workflow = two_pass_prompt()
    loader = {"captioner": scoring_models["captioner"].name, "text_encoder": scoring_models["text_encoder"].name}
    workflow["20"] = {"class_type": "RealignDiffBlip2RewardLoader", "inputs": {**loader, "precision": "auto"}}
    workflow["21"] = {  # an empty prompt: the scorer raises while the prompt runs
        "class_type": "RealignDiffCaptionRewardScorer",
        "inputs": {"caption_reward": ["20", 0], "images": ["8", 0], "prompt": "   "}
        | {"max_new_tokens": 4, "num_beams": 1, "batch_size": 1},
        "_meta": {"title": "Caption reward"},
    }
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow), encoding="utf-8")
    config = EvalConfig(prompts=str(_prompts(tmp_path)), output=str(tmp_path / "out"), server=[eval_server.url])
    config.workflow, config.progress_bar = str(path), False
    (failed,) = evaluate(config).failed
    assert "node 21 (Caption reward) failed: PromptError: The prompt is empty" in failed["error"], failed["error"]
