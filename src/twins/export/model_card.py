"""The `README.md` model card of a Hub-layout folder (`twins.export.hub`), written from what the
weights file knows: the model (arch, shape, parameters), its classes and preprocessing, and
for a training checkpoint the run that made it (`twins.weights.record`): the data set and its
counts, the recipe and its semantics, the final and best evaluation, and the resolved config
with the command that trains it again. Nothing is written that the file does not say.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from torch import nn

# The recipe keys a card lists (the whole resolved config follows, for reproducing).
RECIPE_KEYS = (
    "semantics",
    "epochs",
    "max_iters",
    "batch_size",
    "optimizer",
    "base_lr",
    "min_lr",
    "warmup_length",
    "lr_scheduler",
    "weight_decay",
    "label_smoothing",
    "mix_up",
    "cutmix",
    "auto_augment",
    "drop_path_rate",
    "with_ema",
    "image_size",
    "crop_pct",
    "seed",
)
SHOWN_CLASSES = 20


def model_card(
    model: nn.Module, metadata: Mapping[str, Any], config: Mapping[str, Any], record: Mapping
) -> str:
    """The card's Markdown, with the Hub's YAML header (library, tags, pipeline)."""
    arch = metadata.get("arch") or getattr(model, "arch", "model")
    timm_layout = "architecture" in config
    header = {
        "library_name": "timm" if timm_layout else "twins",
        "tags": ["twins", "vision", *(["timm", "image-classification"] if timm_layout else [])],
    }
    if timm_layout:
        header["pipeline_tag"] = "image-classification"
    parts = [
        f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n",
        f"# {arch}\n",
        _model_section(model, metadata, config),
        _classes_section(metadata.get("class_names")),
        _preprocessing_section(metadata.get("preprocessing")),
        _run_sections(record),
        _use_section(arch, timm_layout),
    ]
    return "\n".join(part for part in parts if part)


def _model_section(model: nn.Module, metadata: Mapping[str, Any], config: Mapping) -> str:
    parameters = sum(p.numel() for p in model.parameters())
    lines = [
        "## Model\n",
        f"A Twins model (Chu et al., NeurIPS 2021), written by `twins export --format hf`: "
        f"{metadata.get('task') or 'classify'} task, {parameters:,} parameters.\n",
        f"- arch: `{metadata.get('arch')}`"
        + (f" (timm: `{config['architecture']}`)" if "architecture" in config else ""),
        f"- model_args: `{json.dumps(metadata.get('model_args') or {})}`",
    ]
    if metadata.get("act_layer"):
        lines.append(f"- activation: {metadata['act_layer']}")
    return "\n".join(lines) + "\n"


def _classes_section(class_names: Sequence[str] | None) -> str:
    if not class_names:
        return ""
    shown = ", ".join(f"`{name}`" for name in class_names[:SHOWN_CLASSES])
    more = (
        f", … ({len(class_names) - SHOWN_CLASSES} more)" if len(class_names) > SHOWN_CLASSES else ""
    )
    return f"## Classes\n\n{len(class_names)} classes, in label order: {shown}{more}\n"


def _preprocessing_section(preprocessing: Mapping[str, Any] | None) -> str:
    if not preprocessing:
        return ""
    lines = [f"- {key}: {value}" for key, value in preprocessing.items()]
    return "## Preprocessing (as evaluated)\n\n" + "\n".join(lines) + "\n"


def _run_sections(record: Mapping[str, Any]) -> str:
    """Data, recipe, evaluation and reproduction of a training checkpoint's run."""
    config = record.get("config") or {}
    if not config:
        return ""
    data = [f"- data_url: `{config.get('data_url')}`"]
    data += [f"- {key}: {config[key]}" for key in ("set", "num_classes") if config.get(key)]
    for name, count in (record.get("data_counts") or {}).items():
        data.append(f"- {name}: {count}")
    recipe = [f"- {key}: {config[key]}" for key in RECIPE_KEYS if config.get(key) is not None]
    evaluation = [f"- {key}: {value}" for key, value in (record.get("metrics") or {}).items()]
    if record.get("best_score") is not None:
        evaluation.append(
            f"- best score (the task's: top-1, mIoU or box AP): {record['best_score']:.4g}, "
            f"by the {record.get('best_weights') or 'raw'} weights"
        )
    trained = f"{record.get('epoch', '?')} epochs, {record.get('global_step', '?')} steps"
    command = f"twins train -c recipe.yaml --data {config.get('data_url') or 'DATA'}"
    return "\n".join(
        [
            "## Data\n",
            *data,
            "\n## Recipe\n",
            f"Trained {trained} under semantics `{config.get('semantics')}`:\n",
            *recipe,
            "\n## Evaluation\n",
            "The last evaluation of the run, and its best:\n",
            *(evaluation or ["- none recorded"]),
            "\n## Reproduce\n",
            "Save the run's resolved config below as `recipe.yaml`, then:\n",
            f"```bash\n{command}\n```\n",
            f"```yaml\n{yaml.safe_dump(dict(config), sort_keys=True)}```\n",
        ]
    )


def _use_section(arch: str, timm_layout: bool) -> str:
    lines = [
        "## Use\n",
        "```python",
        "import twins",
        "",
        'model = twins.load_model("hf-hub:ORG/NAME")  # or the local folder',
    ]
    if timm_layout:
        lines += [
            "",
            "import timm",
            "",
            'model = timm.create_model("hf-hub:ORG/NAME", pretrained=True)',
            "",
            "from transformers import AutoModelForImageClassification",
            "",
            'model = AutoModelForImageClassification.from_pretrained("ORG/NAME")',
        ]
    lines += ["```", "", f"Fine-tune it: `pretrained: hf-hub:ORG/NAME` in a {arch} recipe.\n"]
    return "\n".join(lines)
