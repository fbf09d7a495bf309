"""Transfer to other frameworks and tasks: weight export formats (safetensors, torchvision, detectron2)
and COCO detection / instance segmentation with Mask R-CNN (the paper's Table 5)."""

from compmod.transfer.export_formats import FORMATS, UnsupportedBackboneError, export, export_backbone

__all__ = ["FORMATS", "UnsupportedBackboneError", "export", "export_backbone"]
