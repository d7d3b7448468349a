"""Core of ComfyUI-RealignDiff: the math, the models, the reward and the trainer's steps.

Pure torch: nothing in this package imports ComfyUI. Heavy libraries (transformers, diffusers,
segment-anything, groundingdino) are imported inside the functions that need them.
"""

from .compat.torchvision_ops import ensure_torchvision_importable

# transformers, segment-anything and groundingdino import torchvision; make that survivable first
ensure_torchvision_importable()
