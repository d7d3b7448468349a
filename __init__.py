"""ComfyUI-RealignDiff: prompt re-alignment for Stable Diffusion 1.5 (RealignDiff) as ComfyUI nodes.

ComfyUI imports this folder as a package; every import below is relative so the folder may
have any name. Nodes whose optional dependencies are missing are left out with a log line.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a lone file, not as a package: pytest does this to a checkout whose folder name is not
    # a Python identifier (e.g. "ComfyUI-RealignDiff"). Nothing to register then.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
