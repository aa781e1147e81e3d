"""Nodes of the pixel ADM backbone: DDIM inversion, the guided sampler, and the one-node style transfer."""
