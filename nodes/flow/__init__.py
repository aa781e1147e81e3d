"""The rectified-flow backbone inside ComfyUI: DiT feature extraction (features.py, flux_blocks.py)."""
