"""The segmentation heads over a Twins backbone (mmsegmentation 0.12's, as the paper uses)."""

from twins.tasks.head import Head

HEADS: dict[str, Head] = {
    "semantic_fpn": Head("twins.tasks.segment.semantic_fpn:semantic_fpn", 150),
    "upernet": Head("twins.tasks.segment.upernet:upernet", 150),
}
