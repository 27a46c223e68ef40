"""Pure tensor maths of FreeSeg: pooling, ITSM, losses and the partial label strategy.

Plain PyTorch only; every function is unit-tested on tiny tensors. Import each from its own
module (``freeseg.ops.pooling``, ``freeseg.ops.itsm``, ``freeseg.ops.labels``,
``freeseg.ops.losses``, ...). This package imports nothing itself, so that importing one
submodule (``freeseg.ops.crf``, which the dense-CRF worker processes import) does not import
torch.
"""
