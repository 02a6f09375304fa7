"""The dataset directory: where each file lives (see docs/dataset-format.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
INTERACTIONS_FILE = "interactions.parquet"
ITEM_FEATURES_DIR = "item_features"

#: items.parquet columns holding a raw modality, by modality name.
MEDIA_COLUMNS = {"title": "title", "image": "image_path", "audio": "audio_path"}

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class DatasetPaths:
    """Paths of one dataset directory's files (which may or may not exist)."""

    root: Path

    @property
    def items(self) -> Path:
        return self.root / ITEMS_FILE

    @property
    def users(self) -> Path:
        return self.root / USERS_FILE

    @property
    def interactions(self) -> Path:
        return self.root / INTERACTIONS_FILE

    @property
    def item_features_dir(self) -> Path:
        return self.root / ITEM_FEATURES_DIR

    def item_feature_files(self) -> dict[str, Path]:
        """Precomputed modality vectors: ``{name: item_features/<name>.parquet}``, sorted by name."""
        if not self.item_features_dir.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.item_features_dir.glob("*.parquet"))}

    def media(self, relative: str) -> Path:
        """A media file named in items.parquet (paths are relative to the dataset directory)."""
        return self.root / relative


def dataset_paths(root: str | Path) -> DatasetPaths:
    """The :class:`DatasetPaths` of a dataset directory."""
    return DatasetPaths(Path(root))
