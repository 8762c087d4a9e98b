"""The reference for a segmenter's benchmark: segmentation-models-pytorch's UperNet over
timm's Twins encoder (`tu-twins_<variant>`), with our model's backbone shape, classes and the
official head width (512 channels), carrying our backbone's weights.

segmentation-models-pytorch is an optional extra (`pip install 'twins[smp]'`). Its UperNet has
no auxiliary head; ours computes the auxiliary FCN head's logits in every forward, as
torchvision's segmentation models do, so ours does that much more work.
"""

from __future__ import annotations

from torch import nn

from twins.errors import TwinsError
from twins.models.arguments import STAGE_ARGS
from twins.tasks import split_model_name

HEAD_CHANNELS = 512  # mmseg's UperNet `channels`, the official recipes' head width


def smp_upernet(model: nn.Module) -> nn.Module:
    """smp's UperNet of the same variant, classes and backbone weights as `model`."""
    head, variant = split_model_name(model.arch) or (None, None)
    if head != "upernet":
        raise TwinsError(
            f"--compare smp times segmentation-models-pytorch's UperNet: benchmark an "
            f"upernet_<variant> model, not {model.arch}",
            argument="compare",
        )
    try:
        import segmentation_models_pytorch as smp
    except ImportError as error:
        raise TwinsError(
            "--compare smp needs segmentation-models-pytorch: pip install 'twins[smp]'",
            argument="compare",
        ) from error
    shape = {k: v for k, v in model.model_args.items() if k in STAGE_ARGS}
    reference = smp.UPerNet(
        encoder_name=f"tu-twins_{variant}",
        encoder_weights=None,
        decoder_channels=HEAD_CHANNELS,
        classes=model.num_classes,
        **shape,
    )
    # The same backbone weights: timm's keys are the official ones, as ours.
    # (SVT's per-stage norms are the official dense extra that timm's encoder lacks.)
    backbone = {
        f"model.{k}": v for k, v in model.backbone.state_dict().items() if "norm_list" not in k
    }
    unused = reference.encoder.model.load_state_dict(backbone, strict=False).unexpected_keys
    if unused:
        raise TwinsError(f"timm's Twins encoder has no {unused[0]}: compare another variant")
    return reference
