"""CTR models, each built by a named builder from the config (``model.name``): ``marn.marn(...)``,
``baselines.din(...)``, or :func:`build_model` by name.

| name     | builder                      | item representation                          | sequence        |
|----------|------------------------------|----------------------------------------------|-----------------|
| lr       | :func:`baselines.lr`         | one weight per id / attribute value          | none            |
| dnn      | :func:`baselines.dnn`        | id + attribute embeddings                    | mean pooling    |
| din      | :func:`baselines.din`        | id + attribute embeddings (no content)       | DIN attention   |
| concat   | :func:`marn.concat`          | ids + content, early fusion                  | model.sequence  |
| man      | :func:`marn.man`             | ids + content, modal attention               | model.sequence  |
| man_d1   | :func:`marn.man_d1`          | man + shared encoder against D1              | model.sequence  |
| marn     | :func:`marn.marn`            | man + shared encoder + D0 + D1 + Ds (MARN)   | model.sequence  |
| marn_paper | :func:`marn.marn_paper`    | marn with the paper's id path (ids in fusion)| model.sequence  |

``model.id_path``, ``content_gate`` and ``simtier_bins`` apply to the content models (and
``simtier_bins`` to dnn/din when set); ``recsys compare`` trains the id-only baselines without
similarity features, so they stay id-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from recsys.config import ModelConfig
from recsys.errors import ConfigError
from recsys.features.feature_map import FeatureMap
from recsys.models import baselines, marn
from recsys.models.ctr import CTRModel
from recsys.models.inputs import UserSide
from recsys.models.lr import LogisticRegression
from recsys.models.output import AdversarialTerms, ModelOutput

__all__ = [
    "BASELINES",
    "MODELS",
    "AdversarialTerms",
    "CTRModel",
    "LogisticRegression",
    "ModelOutput",
    "ScoringModel",
    "UserSide",
    "baselines",
    "build_model",
    "comparison_config",
    "marn",
]

#: What every built model is: the interface training, evaluation and serving rely on.
ScoringModel = CTRModel | LogisticRegression

Builder = Callable[[ModelConfig, FeatureMap, Mapping[str, int]], nn.Module]

#: Model name -> builder, in the order of the ablation ladder.
BUILDERS: dict[str, Builder] = {
    "lr": baselines.lr,
    "dnn": baselines.dnn,
    "din": baselines.din,
    "concat": marn.concat,
    "man": marn.man,
    "man_d1": marn.man_d1,
    "marn": marn.marn,
    "marn_paper": marn.marn_paper,
}
MODELS: tuple[str, ...] = tuple(BUILDERS)
#: The id-only models every content model is compared against.
BASELINES: tuple[str, ...] = ("lr", "dnn", "din")


def comparison_config(config: ModelConfig, name: str) -> ModelConfig:
    """``config`` for model ``name`` in a comparison: the id-only baselines get no similarity features."""
    update: dict[str, object] = {"name": name}
    if name in BASELINES:
        update["simtier_bins"] = 0
    return ModelConfig.model_validate({**config.model_dump(), **update})


def build_model(config: ModelConfig, feature_map: FeatureMap, content_dims: Mapping[str, int]) -> nn.Module:
    """Build the model named by ``config.name`` for these features and content modalities (name -> width)."""
    builder = BUILDERS.get(config.name)
    if builder is None:
        raise ConfigError(f"model.name: unknown model {config.name!r}; valid names: {', '.join(MODELS)}")
    return builder(config, feature_map, content_dims)
