"""Local dense captions: image tags, per-tag scores and local captions, and one mask per object.

Submodules are imported where needed (``llm`` imports the ``openai`` package lazily, the grounding and
tagging modules import their model libraries lazily), so importing this package stays cheap.
"""
