"""Test helpers: random-weight model files, the pack loader, and a real in-process ComfyUI."""
