"""Parameter counts of the dense models as the paper gives them (millions; arXiv 2104.13840,
Tables 2, 3, 4 and 8; dense FACTS §4).

The paper counts the official dense backbone, which still holds the classifier's unused final
norm and 1000-class head (0.51 M for PCPVT and SVT-S, 0.77 M for SVT-B, 1.03 M for SVT-L),
with mmseg's / mmdet's heads (UperNet with its auxiliary head). This toolkit's models have no
such classifier, so they are that much smaller; Mask R-CNN in torchvision's layout has 4,357
parameters more than mmdet's (background rows). The SVT-L segmenters read 103.7 and 133 (the
paper truncates), and SVT-S Mask R-CNN 44.0 where 44.2 is recomputed (unexplained).
"""

from __future__ import annotations

_VARIANTS = ("pcpvt_small", "pcpvt_base", "pcpvt_large", "svt_small", "svt_base", "svt_large")

PAPER_PARAMS_M: dict[str, float] = {
    f"{head}_{variant}": count
    for head, counts in {
        "semantic_fpn": (28.4, 48.1, 65.3, 28.3, 60.4, 103.7),
        "upernet": (54.6, 74.3, 91.5, 54.4, 88.5, 133.0),
        "retinanet": (34.4, 54.1, 71.2, 34.3, 67.0, 110.9),
        "maskrcnn": (44.3, 64.0, 81.2, 44.0, 76.3, 119.7),
    }.items()
    for variant, count in zip(_VARIANTS, counts, strict=True)
}
