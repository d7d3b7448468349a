"""Measuring prompt following: the evaluation behind ``evaluation/evaluate.py`` (RealignDiff, arXiv 2305.19599,
Table I: CLIP score, TIFA and the caption reward of the coarse and the realigned image of each prompt).

The pieces, each usable alone: ``workflow_api`` (UI-format workflow -> API prompt), ``prompt_sets``
(txt / jsonl / MS-COCO / TIFA question files), ``comfy_client`` (ComfyUI's HTTP API), ``runs`` (the resumable
generation over one or several servers), ``clip_score``, ``tifa`` and ``scoring`` (the metrics, offline),
``stats`` and ``report`` (the table, the CSV, the grid). Nothing here imports ComfyUI.
"""
