"""Benchmarks of ZeCon for ComfyUI (not loaded by ComfyUI; run from the repository root)."""
