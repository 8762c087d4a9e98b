"""Dense prediction with Twins backbones: semantic segmentation (Semantic FPN, UperNet) and
detection (torchvision's RetinaNet and Mask R-CNN)."""
