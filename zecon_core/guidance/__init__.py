"""The guidance every backbone shares: the losses of paper eq. 8 and what they need.

``core`` (the loss terms on a ``LossView`` and their staged gradient), ``losses`` (CLIP
distances, PatchNCE, VGG, MSE, range), ``augment`` (CLIP views), ``clip_model`` / ``vgg``
(the scoring networks), ``style`` / ``prompt_weights`` (target and source embeddings),
``mask`` (regions) and ``draws`` (every random draw, keyed by step and loss). A backbone
(``zecon_core.pixel``, ``zecon_core.latent``) only builds the view.
"""
