"""Files in and out: weight files (``checkpoints``, ``convert``), the known models and their
verified downloads (``registry``, ``download``), and pictures (``images``)."""
