"""The detectors over a Twins backbone (torchvision's RetinaNet and Mask R-CNN)."""

from twins.tasks.head import Head

HEADS: dict[str, Head] = {
    "retinanet": Head("twins.tasks.detect.detectors:retinanet", 80),
    "maskrcnn": Head("twins.tasks.detect.detectors:maskrcnn", 80),
}
