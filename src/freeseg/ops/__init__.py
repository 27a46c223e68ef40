"""Pure tensor maths of FreeSeg: pooling, ITSM, losses and the partial label strategy.

Plain PyTorch only; every function is unit-tested on tiny tensors. Import each from its own
module (``freeseg.ops.pooling``, ``freeseg.ops.itsm``, ``freeseg.ops.partial_labels``,
``freeseg.ops.first_stage``, ``freeseg.ops.losses``, ...). This package imports nothing
itself, so that importing one submodule (``freeseg.ops.crf``, which the dense-CRF worker
processes import, or the numpy-only ``freeseg.ops.clustering``) does not import torch.
"""

# A map (or a set of scores) whose range max − min is at most this counts as constant: its
# min-max normalisation would only magnify rounding noise. Read by the ITSM's Norm (Eq. 1) and
# by the clustering baselines' background threshold.
CONSTANT_SPAN = 1e-6
