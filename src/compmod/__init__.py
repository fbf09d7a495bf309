"""compmod: self-supervised representation learning with CompMod / Meta Comprehensive Regularization."""

__version__ = "0.1.0"
