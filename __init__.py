"""ComfyUI-RealignDiff: prompt re-alignment for Stable Diffusion 1.5 (RealignDiff) as ComfyUI nodes.

ComfyUI imports this folder as a package; every import below is relative so the folder may
have any name. Nodes whose optional dependencies are missing are left out with a log line.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # pytest imports a rootdir __init__.py as a bare module when the folder name is not a Python name
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
