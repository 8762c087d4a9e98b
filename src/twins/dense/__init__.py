"""Dense prediction with Twins backbones: semantic segmentation (Semantic FPN, UperNet) and
detection (torchvision's RetinaNet and Mask R-CNN)."""

from twins.dense.backbone import DenseBackbone, dense_backbone

__all__ = ["DenseBackbone", "dense_backbone"]
