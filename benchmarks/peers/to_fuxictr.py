"""Convert our prepared train/valid/test rows into FuxiCTR's input format (and its config YAML).

    # from a prepared run directory (what `recsys train` leaves in <storage>/<run>/prepared)
    python benchmarks/peers/to_fuxictr.py runs/demo/runs/<run>/prepared --out benchmarks/_work/fuxictr/default
    # from a raw dataset directory: runs our own prepare step first (needs OUR venv: .venv/bin/python)
    .venv/bin/python benchmarks/peers/to_fuxictr.py --data data/default --config configs/default.yaml --out ...

Same rows, same split, same order: every row of ``prepared/{train,valid,test}`` becomes one row of
``<out>/raw/{train,valid,test}.parquet``. Our model-ready indices are decoded back into tokens through
our own ``feature_map.json`` (the vocabularies fitted on train), so FuxiCTR re-fits a vocabulary that
is exactly ours: a value our feature map sends to the OOV bucket (unseen in train, rarer than
``min_count``, null) is written as the token ``<oov>`` and lands in FuxiCTR's OOV/shared bucket too.

Columns written (all categorical values as strings; FuxiCTR's sequence format is a ``^``-joined string):

- ``user_id`` and every user categorical field; every context categorical field; ``numeric`` context
  fields as floats (already standardised by our feature map, so no FuxiCTR normaliser);
- ``item_id`` and every item categorical field of the candidate (from ``item_table.pt``);
- ``hist_item_id`` and ``hist_<field>`` for each item categorical field: the behaviour sequence
  (oldest first, newest last, padding dropped) -- FuxiCTR ``sequence`` features that share their
  embedding table with the candidate's field (``share_embedding``);
- item list fields (e.g. genres) of the candidate as a sequence feature with mean pooling;
- ``label``; meta columns ``uid`` (raw user id, for GAUC) and ``row_id`` (row number in our split).

The pure-polars core (:func:`fuxictr_frame`, :func:`feature_cols`) imports neither recsys nor
fuxictr, so it runs in either virtual environment and can be unit-tested in ours. The prepared
directory is read through :class:`recsys.features.prepared.PreparedDir` (its dependencies, polars,
numpy, torch, pydantic and pyyaml, are in the FuxiCTR venv as well).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # recsys and training, also from the FuxiCTR venv's python
    sys.path.insert(0, str(ROOT))

SPLITS = ("train", "valid", "test")
OOV_TOKEN = "<oov>"  # FuxiCTR reserves __OOV__/__PAD__ in its own vocabularies
SEP = "^"  # FuxiCTR's default sequence splitter
PAD, OOV = 0, 1  # our feature map's reserved indices


# --------------------------------------------------------------------------- pure core (polars + numpy)


def fields_of(feature_map: dict, source: str, kind: str) -> list[dict]:
    """Fields of our feature_map.json payload with the given source and kind, in feature-map order."""
    return [f for f in feature_map["fields"] if f["source"] == source and f["kind"] == kind]


def decode(index: np.ndarray, vocab: list[str]) -> np.ndarray:
    """Our feature-map indices -> tokens (index i >= 2 is vocab[i-2]; OOV -> '<oov>'; padding -> '')."""
    table = np.array(["", OOV_TOKEN, *[str(v) for v in vocab]], dtype=object)
    index = np.asarray(index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= len(table)):
        raise ValueError(f"index out of range for a vocabulary of {len(vocab)} values")
    return table[index]


def join_rows(tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """(N, L) tokens and a (N, L) mask -> N '^'-joined strings of the masked-in tokens ('' when none)."""
    return [SEP.join(t[m]) for t, m in zip(tokens, mask)]


def fuxictr_frame(
    prepared: pl.DataFrame,
    feature_map: dict,
    item_id_index: np.ndarray,
    item_categorical: np.ndarray,
    item_lists: dict[str, np.ndarray] | None = None,
) -> pl.DataFrame:
    """One split of our prepared rows -> FuxiCTR input rows (same rows, same order).

    ``prepared``: columns item, hist, hist_mask, user, context, numeric, label, meta_user_id (as
    written by ``recsys.features.prepared.PreparedDir.write``). ``item_id_index`` (R,) and
    ``item_categorical`` (R, C): the item table's feature-map indices per item-table row (row 0 =
    padding); ``item_lists``: name -> (R, W) indices, 0-padded.
    """
    item_lists = item_lists or {}
    n = prepared.height
    item_cat_fields = fields_of(feature_map, "item", "categorical")  # item_id first
    if not item_cat_fields or item_cat_fields[0]["name"] != "item_id":
        raise ValueError("feature map: the first item categorical field must be item_id")
    attrs = item_cat_fields[1:]
    if item_categorical.shape[1] != len(attrs):
        raise ValueError(f"item table has {item_categorical.shape[1]} categorical columns, feature map {len(attrs)}")

    def matrix(name: str, width: int, dtype) -> np.ndarray:
        if width == 0:
            return np.zeros((n, 0), dtype)
        arr = np.asarray(
            prepared[name].to_list() if prepared[name].dtype == pl.List else prepared[name].to_numpy(), dtype
        )
        return arr.reshape(n, -1)[:, :width]

    cols: dict[str, pl.Series] = {}
    user_fields = fields_of(feature_map, "user", "categorical")
    user = matrix("user", len(user_fields), np.int64)
    for j, f in enumerate(user_fields):
        cols[f["name"]] = pl.Series(f["name"], decode(user[:, j], f["vocab"]), dtype=pl.String)

    ctx_fields = fields_of(feature_map, "context", "categorical")
    ctx = matrix("context", len(ctx_fields), np.int64)
    for j, f in enumerate(ctx_fields):
        cols[f["name"]] = pl.Series(f["name"], decode(ctx[:, j], f["vocab"]), dtype=pl.String)
    num_fields = fields_of(feature_map, "context", "numeric")
    num = matrix("numeric", len(num_fields), np.float32)
    for j, f in enumerate(num_fields):
        cols[f["name"]] = pl.Series(f["name"], num[:, j], dtype=pl.Float32)

    rows = prepared["item"].to_numpy().astype(np.int64)
    hist = np.asarray(prepared["hist"].to_list(), dtype=np.int64).reshape(n, -1)
    mask = np.asarray(prepared["hist_mask"].to_list(), dtype=bool).reshape(n, -1) & (hist != PAD)
    item_vocab = item_cat_fields[0]["vocab"]
    cols["item_id"] = pl.Series("item_id", decode(item_id_index[rows], item_vocab), dtype=pl.String)
    for j, f in enumerate(attrs):
        cols[f["name"]] = pl.Series(f["name"], decode(item_categorical[rows, j], f["vocab"]), dtype=pl.String)
    for f in fields_of(feature_map, "item", "list"):
        codes = item_lists[f["name"]][rows]
        cols[f["name"]] = pl.Series(f["name"], join_rows(decode(codes, f["vocab"]), codes != PAD), dtype=pl.String)
    cols["hist_item_id"] = pl.Series(
        "hist_item_id", join_rows(decode(item_id_index[hist], item_vocab), mask), dtype=pl.String
    )
    for j, f in enumerate(attrs):
        tokens = decode(item_categorical[hist, j], f["vocab"])
        cols[f"hist_{f['name']}"] = pl.Series(f"hist_{f['name']}", join_rows(tokens, mask), dtype=pl.String)

    cols["label"] = prepared["label"].cast(pl.Float32).alias("label")
    cols["uid"] = prepared["meta_user_id"].cast(pl.Int64).alias("uid")
    cols["row_id"] = pl.Series("row_id", np.arange(n, dtype=np.int64))
    return pl.DataFrame(list(cols.values()))


def placeholder_history(frame: pl.DataFrame) -> pl.DataFrame:
    """Every history column set to the one token ``<oov>``: for datasets whose behaviour sequences
    are all empty (no timestamps, e.g. lastfm-2k-mm). FuxiCTR cannot build a vocabulary for a
    sequence that never holds a value (IndexError in its tokenizer). A history that is the same
    constant item for every row carries no information about the user, like our empty one: DIN's
    attention over it is a function of the candidate alone, which its MLP already sees."""
    hist = [c for c in frame.columns if c.startswith("hist_")]
    return frame.with_columns([pl.lit(OOV_TOKEN, dtype=pl.String).alias(c) for c in hist])


def feature_cols(feature_map: dict) -> tuple[list[dict], dict]:
    """FuxiCTR ``feature_cols`` and ``label_col`` for the frame :func:`fuxictr_frame` writes.

    History sequences share the candidate's embedding tables and stay unpooled
    (``feature_encoder: null``): DIN's attention pools them against the candidate.
    """
    max_len = int(feature_map["max_history"])
    cols: list[dict] = []
    for f in fields_of(feature_map, "user", "categorical"):
        cols.append({"name": f["name"], "active": True, "dtype": "str", "type": "categorical", "source": "user"})
    for f in fields_of(feature_map, "item", "categorical"):
        cols.append({"name": f["name"], "active": True, "dtype": "str", "type": "categorical", "source": "item"})
    for f in fields_of(feature_map, "item", "list"):
        width = int(feature_map.get("max_list_len", {}).get(f["name"], 1))
        cols.append(
            {
                "name": f["name"],
                "active": True,
                "dtype": "str",
                "type": "sequence",
                "source": "item",
                "splitter": SEP,
                "max_len": width,
                "padding": "post",
                "feature_encoder": "layers.MaskedAveragePooling()",
            }
        )
    for f in fields_of(feature_map, "item", "categorical"):
        cols.append(
            {
                "name": f"hist_{f['name']}" if f["name"] != "item_id" else "hist_item_id",
                "active": True,
                "dtype": "str",
                "type": "sequence",
                "source": "user",
                "splitter": SEP,
                "max_len": max_len,
                "padding": "pre",
                "share_embedding": f["name"],
                "feature_encoder": None,
            }
        )
    for f in fields_of(feature_map, "context", "categorical"):
        cols.append({"name": f["name"], "active": True, "dtype": "str", "type": "categorical", "source": "context"})
    for f in fields_of(feature_map, "context", "numeric"):
        cols.append({"name": f["name"], "active": True, "dtype": "float", "type": "numeric", "source": "context"})
    cols.append({"name": "uid", "active": True, "dtype": "int", "type": "meta", "remap": False})
    cols.append({"name": "row_id", "active": True, "dtype": "int", "type": "meta", "remap": False})
    return cols, {"name": "label", "dtype": "float"}


def din_fields(feature_map: dict) -> tuple[list[str], list[str]]:
    """DIN target fields (the candidate's id + categorical attributes) and the matching history fields."""
    names = [f["name"] for f in fields_of(feature_map, "item", "categorical")]
    return names, ["hist_item_id" if n == "item_id" else f"hist_{n}" for n in names]


# --------------------------------------------------------------------------- files


def run_info(prepared_dir: Path) -> dict:
    """The run.json of the training run that wrote ``prepared_dir`` (``<run>/prepared``); {} without one."""
    from training.launch import RUN_INFO

    path = prepared_dir.parent / RUN_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def dataset_name(prepared_dir: Path) -> str:
    """A readable dataset name: the data directory named in the run's run.json, else the run name."""
    info = run_info(prepared_dir)
    if info:
        data_dir = Path(info.get("data_dir") or info.get("config", {}).get("data", {}).get("path", ""))
        meta = data_dir / "dataset.json"
        if meta.is_file():
            generator = json.loads(meta.read_text()).get("generator", "")
            if generator.startswith("recsys.data.synthetic"):
                return "builtin-" + json.loads(meta.read_text()).get("size", "small")
        if data_dir.name:
            return data_dir.name if data_dir.name not in ("data",) else data_dir.parent.name + "-" + data_dir.name
    return prepared_dir.parent.name


def our_hyperparameters(prepared_dir: Path) -> dict:
    """Model/training sizes of the run that wrote ``prepared_dir`` (from run.json), for comparable peers."""
    cfg = run_info(prepared_dir).get("config", {})
    model, train = cfg.get("model", {}), cfg.get("train", {})
    return {
        k: v
        for k, v in {
            "our_model": model.get("name"),
            "embedding_dim": model.get("embedding_dim"),
            "mlp_hidden": model.get("mlp_hidden"),
            "dropout": model.get("dropout"),
            "batch_size": train.get("batch_size"),
            "learning_rate": train.get("learning_rate"),
            "epochs": train.get("epochs"),
            "early_stopping_patience": train.get("early_stopping_patience"),
        }.items()
        if v is not None
    }


def convert_prepared(prepared_dir: Path, out_dir: Path, dataset_id: str | None = None) -> dict:
    """Write <out>/raw/{train,valid,test}.parquet, <out>/config/dataset_config.yaml and <out>/peer.json."""
    import yaml

    from recsys.features.prepared import PreparedDir

    prepared_dir, out_dir = Path(prepared_dir).resolve(), Path(out_dir).resolve()
    prepared = PreparedDir(prepared_dir)
    feature_map = json.loads(prepared.load_feature_map().to_json())  # the payload the pure core reads
    table = prepared.load_item_table()
    name = dataset_name(prepared_dir)
    dataset_id = dataset_id or "recsys_" + "".join(c if c.isalnum() else "_" for c in name)
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)
    counts = {}
    frames = {
        split: fuxictr_frame(prepared.read_split(split), feature_map, table.id_index, table.categorical, table.lists)
        for split in SPLITS
    }
    empty_history = (frames["train"]["hist_item_id"] == "").all()
    for split, frame in frames.items():
        if empty_history:
            frame = placeholder_history(frame)
        frame.write_parquet(out_dir / "raw" / f"{split}.parquet")
        counts[split] = frame.height
    cols, label = feature_cols(feature_map)
    target, sequence = din_fields(feature_map)
    dataset_cfg = {
        dataset_id: {
            "data_root": str(out_dir / "fuxictr_data"),
            "data_format": "parquet",
            "train_data": str(out_dir / "raw" / "train.parquet"),
            "valid_data": str(out_dir / "raw" / "valid.parquet"),
            "test_data": str(out_dir / "raw" / "test.parquet"),
            "min_categr_count": 1,  # our feature map already applied features.min_count (<oov> tokens)
            "feature_cols": cols,
            "label_col": label,
        }
    }
    (out_dir / "config").mkdir(exist_ok=True)
    (out_dir / "config" / "dataset_config.yaml").write_text(
        "# Written by benchmarks/peers/to_fuxictr.py from "
        + str(prepared_dir)
        + "\n"
        + yaml.safe_dump(dataset_cfg, sort_keys=False, default_flow_style=None, width=120)
    )
    peer = {
        "dataset": name,
        "dataset_id": dataset_id,
        "prepared_dir": str(prepared_dir),
        "rows": counts,
        "placeholder_history": bool(empty_history),
        "din_target_field": target,
        "din_sequence_field": sequence,
        "max_history": feature_map["max_history"],
        "ours": our_hyperparameters(prepared_dir),
    }
    (out_dir / "peer.json").write_text(json.dumps(peer, indent=1))
    return peer


def prepare_raw(data_dir: Path, config_path: Path, out_dir: Path) -> Path:
    """Run OUR prepare step on a raw dataset directory (no encoders needed: DIN uses ids only).

    Same split, feature map and behaviour sequences as a training run on this config; the item
    table is built without content vectors. Needs the recsys venv.
    """
    from recsys.config import load_config
    from recsys.data.dataset import dataset_paths
    from recsys.data.validate import validate_dataset
    from recsys.features.examples import build_examples
    from recsys.features.feature_map import fit_feature_map
    from recsys.features.item_table import build_item_table
    from recsys.features.prepare import PreparedData, read_interactions
    from recsys.features.prepared import PreparedDir
    from training.launch import RUN_INFO

    config = load_config(config_path)
    validate_dataset(data_dir, config).raise_for_errors()
    paths = dataset_paths(data_dir)
    items = pl.read_parquet(paths.items)
    users = pl.read_parquet(paths.users) if paths.users.is_file() else None
    interactions = read_interactions(data_dir, config)
    train = interactions.filter(pl.col("split") == "train")
    fmap = fit_feature_map(train, items, users, config.features)
    table = build_item_table(items, fmap, {})
    examples = build_examples(interactions, users, fmap, table)
    prepared = PreparedDir.of_run(out_dir)  # out_dir laid out as a training run, which run_info reads
    prepared.write(PreparedData(config, fmap, table, examples, users))
    (out_dir / RUN_INFO).write_text(
        json.dumps(
            {
                "run_name": "to_fuxictr",
                "config": config.model_dump(mode="json"),
                "data_dir": str(Path(data_dir).resolve()),
            },
            indent=1,
        )
    )
    return prepared.path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prepared", nargs="?", type=Path, help="a prepared directory (<storage>/<run>/prepared)")
    ap.add_argument("--data", type=Path, help="a raw dataset directory instead (runs our prepare step; our venv)")
    ap.add_argument("--config", type=Path, help="experiment config for --data")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--dataset-id", help="FuxiCTR dataset_id (default: recsys_<dataset name>)")
    args = ap.parse_args(argv)
    if (args.prepared is None) == (args.data is None):
        ap.error("give either a prepared directory or --data DIR --config FILE")
    prepared = args.prepared
    if args.data is not None:
        if args.config is None:
            ap.error("--data needs --config")
        args.out.mkdir(parents=True, exist_ok=True)
        prepared = prepare_raw(args.data, args.config, args.out)
    peer = convert_prepared(prepared, args.out, args.dataset_id)
    print(
        f"[to_fuxictr] {peer['dataset']}: {peer['rows']} rows -> {args.out}/raw, "
        f"config {args.out}/config/dataset_config.yaml (dataset_id {peer['dataset_id']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
