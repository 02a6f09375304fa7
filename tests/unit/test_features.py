"""The feature pipeline: leak-free sequences, splits, a feature map fitted on train only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from support.tiny import make_tiny

from recsys.config import SplitConfig
from recsys.features.feature_map import OOV, FeatureMap
from recsys.features.sequences import build_behaviour_sequences, latest_clicks
from recsys.features.splits import SPLIT_RANK, assign_splits

rows = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.integers(1, 9),
        st.integers(0, 20),
        st.integers(0, 1),
        st.sampled_from(["train", "valid", "test"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, max_len=st.integers(1, 6))
def test_sequences_never_see_the_present_or_future(rows, max_len: int) -> None:
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "label", "split"], orient="row")
    history, mask = build_behaviour_sequences(frame, max_len)
    for i, (user, _, ts, _, split) in enumerate(rows):
        # Brute force: this user's clicks strictly earlier, from this split or an earlier one, newest last.
        clicks = sorted(
            (
                (t, j, item)
                for j, (u, item, t, label, s) in enumerate(rows)
                if u == user and label == 1 and t < ts and SPLIT_RANK[s] <= SPLIT_RANK[split]
            ),
        )
        expected = [item for _, _, item in clicks][-max_len:]
        got = history[i][mask[i]].tolist()
        assert sorted(got) == sorted(expected) and len(got) == len(expected)
        assert mask[i].tolist() == [False] * (max_len - len(got)) + [True] * len(got)  # left-padded, newest last
        times = [t for t, _, _ in clicks][-max_len:]
        assert all(t < ts for t in times)


def test_sequence_order_is_newest_last() -> None:
    frame = pl.DataFrame(
        {
            "user_id": [1] * 4,
            "item_id": [10, 11, 12, 13],
            "timestamp": [1, 2, 3, 4],
            "label": [1, 1, 1, 0],
            "split": ["train"] * 4,
        }
    )
    history, mask = build_behaviour_sequences(frame, 2)
    assert history[3].tolist() == [11, 12] and mask[3].all()
    assert mask[0].sum() == 0


def test_time_split_per_user() -> None:
    frame = pl.DataFrame(
        {"user_id": [1] * 10 + [2] * 2, "item_id": list(range(12)), "timestamp": list(range(10, 0, -1)) + [1, 2]}
    )
    out = assign_splits(frame, SplitConfig(method="time", valid_fraction=0.2, test_fraction=0.2))
    user1 = out.filter(pl.col("user_id") == 1).sort("timestamp")["split"].to_list()
    assert user1 == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    assert out.filter(pl.col("user_id") == 2)["split"].to_list() == ["train", "train"]  # too few rows to split


def test_feature_map_is_fitted_on_train_only_and_round_trips(tmp_path: Path) -> None:
    tiny = make_tiny()
    fm = tiny.feature_map
    train_items = set(tiny.interactions.filter(pl.col("split") == "train")["item_id"].to_list())
    assert set(fm.fields["item_id"].vocab) == {str(i) for i in train_items}
    unseen = pl.Series("device", ["tv"])  # never in train
    assert fm.encode_categorical("device", unseen).tolist() == [OOV]
    cold_rows = tiny.table.rows([i for i in tiny.items["item_id"].to_list() if i not in train_items])
    assert (tiny.table.id_index[cold_rows] == OOV).all()
    fm.save(tmp_path / "fm.json")
    again = FeatureMap.load(tmp_path / "fm.json")
    assert again.to_json() == fm.to_json()
    price = fm.encode_numeric("price", tiny.interactions.filter(pl.col("split") == "train")["price"])
    assert abs(float(price.mean())) < 1e-5 and abs(float(price.std()) - 1) < 0.01


def test_examples_carry_rows_that_point_at_the_right_items() -> None:
    tiny = make_tiny()
    ex = tiny.examples
    assert np.array_equal(tiny.table.item_ids[ex.arrays["item"] - 1], tiny.interactions["item_id"].to_numpy())
    assert (ex.arrays["hist"][~ex.arrays["hist_mask"]] == 0).all()
    assert (ex.arrays["hist"][ex.arrays["hist_mask"]] > 0).all()


def test_encode_value_agrees_with_encode_categorical() -> None:
    """Serving encodes one value at a time; it must give the indices the training columns get."""
    from recsys.config import FeaturesConfig
    from recsys.features.feature_map import fit_feature_map

    train = pl.DataFrame(
        {
            "user_id": [1, 2, 3],
            "item_id": [1, 1, 2],
            "label": [1, 0, 1],
            "hour": [5, 17, 5],
            "device": ["mobile", "desktop", "mobile"],
            "flag": [True, False, True],
            "ratio": [0.5, 1.0, 2.5],
            "price": [1.0, 3.0, 5.0],
        }
    )
    items = pl.DataFrame({"item_id": [1, 2]})
    fm = fit_feature_map(
        train,
        items,
        None,
        FeaturesConfig(context_categorical=["hour", "device", "flag", "ratio"], context_numeric=["price"]),
    )
    probes = {
        "hour": [5, 17, 3, None],
        "device": ["mobile", "tablet", None],
        "flag": [True, False, None],
        "ratio": [0.5, 1.0, 2.5, 7.0, None],
        "user_id": [1, 2, 99, None],
    }
    for name, values in probes.items():
        column = fm.encode_categorical(name, pl.Series(name, values))
        assert [fm.encode_value(name, v) for v in values] == column.tolist(), name
    prices = [1.0, 4.0, None, float("nan")]
    assert [fm.standardise("price", v) for v in prices] == fm.encode_numeric("price", pl.Series(prices)).tolist()


def test_latest_clicks_are_each_users_newest_clicks_in_time_then_row_order() -> None:
    """What serving starts a user from: the behaviour-sequence rule at the end of the data (ties in time keep
    file order), capped at max_history, for every user with a click."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pl.DataFrame(
        {
            "user_id": rng.integers(0, 40, n),
            "item_id": rng.integers(1, 200, n),
            "timestamp": rng.integers(0, 30, n),  # many ties
            "label": rng.integers(0, 2, n).astype(np.int8),
        }
    )
    expected = (
        frame.with_row_index("row")
        .filter(pl.col("label") == 1)
        .sort(["user_id", "timestamp", "row"])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").tail(7))
    )
    got = latest_clicks(frame, 7)
    assert got == {int(u): [int(i) for i in items] for u, items in expected.iter_rows()}
    assert latest_clicks(frame.filter(pl.col("label") == 0), 7) == {}


def test_prepared_dir_round_trips_and_links_a_scaled_copy(tmp_path: Path) -> None:
    """PreparedDir writes the features once (counts last: complete), reads them back, and makes a hard-linked
    copy with the training rows repeated (the benchmarks' data scaling) without copying data."""
    from support.tiny_dataset import write_tiny_dataset

    from recsys.config import load_config
    from recsys.features.prepare import prepare_data
    from recsys.features.prepared import PreparedDir

    config = load_config(write_tiny_dataset(tmp_path))
    prepared = PreparedDir.of_run(tmp_path / "run")
    assert not prepared.is_complete()
    counts = prepared.write(prepare_data(config, validate=False))
    assert prepared.is_complete() and prepared.counts() == counts
    assert prepared.read_split("train").height == counts["train"] > 0
    assert prepared.load_feature_map().max_history == config.features.max_history
    copy = prepared.link_copy(tmp_path / "3x", train_repeats=3)
    assert copy.counts() == {**counts, "train": 3 * counts["train"]}
    assert copy.read_split("train").height == 3 * counts["train"]
    assert copy.read_split("valid").height == counts["valid"]
    assert prepared.counts() == counts  # the original is untouched
    part = next(prepared.split_dir("train").glob("*.parquet"))
    assert (copy.split_dir("train") / part.name).stat().st_ino == part.stat().st_ino  # a link, not a copy


def test_content_projection_keeps_the_geometry_and_is_reapplied_to_new_items(tmp_path: Path) -> None:
    """features.content_dim: the item table's vectors are projected onto their leading principal
    components; cosine similarities of low-rank content survive, a table built later from the fitted one
    (serving's new items) gets the same rows, and the projection round-trips with the table."""
    import torch
    from support.tiny import Vectors

    from recsys.features.item_table import ItemTable, build_item_table

    tiny = make_tiny()
    rng = np.random.default_rng(3)
    ids = tiny.items["item_id"].to_numpy()
    raw = rng.normal(size=(len(ids), 4)) @ rng.normal(size=(4, 40)) + 1e-4 * rng.normal(size=(len(ids), 40))
    vectors = {"image": Vectors(ids, raw.astype(np.float32))}
    full = build_item_table(tiny.items, tiny.feature_map, vectors)
    projected = build_item_table(tiny.items, tiny.feature_map, vectors, content_dim=8)
    assert projected.dims() == {"image": 8} and projected.encoder_dims() == {"image": 40}

    def cosines(x: np.ndarray) -> np.ndarray:
        unit = x[1:] / np.linalg.norm(x[1:], axis=1, keepdims=True)
        return unit @ unit.T

    assert np.allclose(cosines(projected.vectors["image"]), cosines(full.vectors["image"]), atol=1e-3)
    assert abs(projected.vectors["image"][1:].var(axis=0).mean() - 1.0) < 0.05  # unit mean variance per dimension

    later = tiny.items.head(5)
    again = build_item_table(
        later, tiny.feature_map, {"image": Vectors(ids[:5], raw[:5].astype(np.float32))}, fitted=projected
    )
    assert np.allclose(again.vectors["image"][1:], projected.vectors["image"][1:6], atol=1e-5)

    projected.save(tmp_path / "table.pt")
    loaded = ItemTable.load(tmp_path / "table.pt")
    assert np.array_equal(loaded.projections["image"], projected.projections["image"])
    assert loaded.encoder_dims() == {"image": 40}
    assert torch.equal(loaded.tensors()["vector.image"], projected.tensors()["vector.image"])
