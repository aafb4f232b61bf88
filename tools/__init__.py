"""Developer tools, not installed: speed scripts, `make gpu-check`, the resolution ceiling."""
