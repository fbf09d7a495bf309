"""Evaluation on frozen features: feature extraction, kNN and linear probes."""

from compmod.eval.features import extract_features, pixel_features
from compmod.eval.knn import knn_accuracy, knn_predict
from compmod.eval.linear import linear_probe

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "linear_probe", "pixel_features"]
