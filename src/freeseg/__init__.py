"""FreeSeg: free masks from interpretable contrastive language-image pretraining."""

__version__ = "0.1.0"
