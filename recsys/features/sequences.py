"""Leak-free behaviour sequences.

For every impression: the items the same user clicked STRICTLY before the impression's
timestamp, newest last, capped at ``max_len``, and only from the impression's own split or
earlier ones (a train row never sees a valid/test click, even with ties or a random split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from recsys.features.splits import SPLIT_RANK

_SHIFT = np.int64(1) << np.int64(32)


def _composite_key(user_index: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """(user, time) as one sortable int64: users below 2**31, times offset into [0, 2**32)."""
    return user_index.astype(np.int64) * _SHIFT + ts


def build_behaviour_sequences(interactions: pl.DataFrame, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Behaviour sequences for every row of ``interactions`` (in row order).

    ``interactions`` needs user_id, item_id, timestamp, label and split. Returns
    ``(history, mask)``: ``history`` (N, max_len) int64 item ids, left-padded so the newest click
    sits at position max_len - 1; ``mask`` (N, max_len) bool, True where an item is present.
    """
    n = interactions.height
    history = np.zeros((n, max_len), dtype=np.int64)
    mask = np.zeros((n, max_len), dtype=bool)
    if n == 0:
        return history, mask
    users = interactions["user_id"].to_numpy()
    _, user_index = np.unique(users, return_inverse=True)
    ts = interactions["timestamp"].to_numpy().astype(np.int64)
    ts = ts - ts.min()
    if ts.max() >= _SHIFT:
        raise ValueError("timestamps span more than 2**32 seconds")
    items = interactions["item_id"].to_numpy().astype(np.int64)
    labels = interactions["label"].to_numpy().astype(np.int64)
    ranks = interactions["split"].replace_strict(SPLIT_RANK, return_dtype=pl.Int8).to_numpy()
    keys = _composite_key(user_index, ts)
    for rank in sorted(set(SPLIT_RANK.values())):
        rows = np.flatnonzero(ranks == rank)
        if rows.size == 0:
            continue
        eligible = np.flatnonzero((labels == 1) & (ranks <= rank))
        order = eligible[np.argsort(keys[eligible], kind="stable")]
        click_keys, click_items = keys[order], items[order]
        # End (exclusive) of this user's clicks strictly before the row's time; start of the user's clicks.
        end = np.searchsorted(click_keys, keys[rows], side="left")
        start = np.searchsorted(
            click_keys, _composite_key(user_index[rows], np.zeros(rows.size, np.int64)), side="left"
        )
        positions = end[:, None] - max_len + np.arange(max_len)[None, :]  # (R, L), newest last
        present = positions >= start[:, None]
        history[rows] = np.where(
            present, click_items[np.clip(positions, 0, max(len(click_items) - 1, 0))] if len(click_items) else 0, 0
        )
        mask[rows] = present
    return history, mask


def recent_history(history: Sequence[int], max_len: int) -> list[int]:
    """The newest ``max_len`` items of a history given oldest first (what a behaviour sequence keeps)."""
    return list(history[-max_len:]) if max_len > 0 else []


def latest_clicks(interactions: pl.DataFrame, max_len: int) -> dict[int, list[int]]:
    """Per user with clicks, the behaviour sequence at the end of the data: the newest ``max_len`` clicked
    items, oldest first. This is the history serving starts each user from.

    The very rule of :func:`build_behaviour_sequences` (it computes it): one probe row per user, after
    every timestamp and in the last split, whose behaviour sequence is the answer. ``interactions``
    needs user_id, item_id, timestamp and label; every click counts, whatever its split.
    """
    if interactions.height == 0 or max_len <= 0:
        return {}
    rows = interactions.select("user_id", "item_id", "timestamp", "label")
    users = rows["user_id"].unique().sort()
    last = max(SPLIT_RANK, key=SPLIT_RANK.__getitem__)
    after_all = int(rows["timestamp"].to_numpy().max()) + 1
    probes = pl.DataFrame(
        {
            "user_id": users,
            "item_id": pl.Series([0] * len(users), dtype=rows["item_id"].dtype),
            "timestamp": pl.Series([after_all] * len(users), dtype=rows["timestamp"].dtype),
            "label": pl.Series([0] * len(users), dtype=rows["label"].dtype),
        }
    )
    frame = pl.concat([rows, probes]).with_columns(pl.lit(last).alias("split"))
    history, mask = build_behaviour_sequences(frame, max_len)
    history, mask = history[rows.height :], mask[rows.height :]
    return {int(user): history[k][mask[k]].tolist() for k, user in enumerate(users.to_list()) if mask[k].any()}
