"""The miniature world: procedural pictures with ground truth, and the tiny models trained on it.

``bench.world.world`` draws the pictures (one object, a texture, a colour, a grey background),
their captions, masks and ground-truth restyles; the training scripts beside it make the
committed miniature models in ``bench/world/weights/``.
"""
