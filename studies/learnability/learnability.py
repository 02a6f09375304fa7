"""How much of the built-in dataset's oracle AUC can any model learn from its training data?

The oracle scores each impression with ``true_prob``: it knows every user's hidden preference
weights. A model has to estimate them from the user's past impressions. This script scores the
test split with reference predictors that read the HIDDEN item attributes and item quality
directly (perfect encoders: ``truth/items.parquet``), so what separates them from the oracle is
the user side alone. They are reference points, not bounds (a model could, for instance, learn
users' individual deviations, which ``bayes_persona`` ignores):

- ``oracle``: ``true_prob``.
- ``bayes_persona``: the generator's 8 persona preference tables known; each user's persona
  inferred from their train+valid impressions (clicks and non-clicks) by Bayes' rule; the score
  is the posterior mix. The best a model can do without the users' individual deviations.
- ``bayes_persona_clicks``: the same from the user's last 30 pre-test clicks only, which is what
  a behaviour sequence (``features.max_history: 30``) shows a model.
- ``lr_true_persona``: logistic regression on (true persona x attribute value), hour and
  device x department one-hots and item quality, fitted on train+valid (C = 1, not tuned): the
  persona handed over, weights learned.
- ``lr_user_x_attribute``: the same with the user id in place of the persona: one free weight per
  user and attribute value, each estimated from that user's own ~90 impressions.
- ``mf_rank_k``: a rank-k factorisation, logit = u_user . sum_a v_(a, value) + per-value, hour and
  device x department biases + w * quality, Adam with L2, fitted on train with the epoch chosen
  on validation: users share structure through the low rank, as a learned model's user vector can.

With ``--neural`` it also trains this project's models (``recsys train``'s code path: a local Ray,
one worker, the other settings of ``configs/default.yaml``, user tower included), side by side in
one run, on variants of the dataset whose items carry the hidden attributes as categorical
columns and/or whose users carry their hidden persona:

- ``din_hidden_attributes``: the neural CTR stack with perfect item attributes;
- ``din_hidden_attributes_persona``: the same with each user's persona handed over as well;
- ``din_hidden_attributes_persona_no_ids``: the same with ``model.id_embeddings: []`` (no user or
  item id embedding to memorise): the neural stack's own ceiling on this data;
- ``marn``: MARN as configured (content vectors, click histories, ids);
- ``marn_no_ids``: MARN without id embeddings;
- ``marn_persona_no_ids``: MARN without id embeddings, the persona handed over: what reading the
  attributes from frozen content vectors costs, next to the DIN row with perfect attributes.

They separate what the data allows (the rows above) from what this model family learns from it.

No model in this project sees the hidden attributes; their content vectors recover each one
(``benchmarks/encoder_probe.py``). What it found: docs/results/README.md (see README.md here).

    .venv/bin/python studies/learnability/learnability.py --data data/default [--neural [--rows NAME ...] [--seed N]]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from recsys.data.synthetic import attributes as A  # noqa: E402

ATTRIBUTES = tuple(A.ATTRIBUTE_VALUES)


def load(data: Path) -> tuple[pl.DataFrame, dict]:
    """Interactions joined with the hidden item attributes and the users' personas."""
    meta = json.loads((data / "dataset.json").read_text())
    truth_items = pl.read_parquet(data / "truth" / "items.parquet")
    truth_users = pl.read_parquet(data / "truth" / "users.parquet").select("user_id", "persona")
    frame = (
        pl.read_parquet(data / "interactions.parquet")
        .with_row_index("row")
        .join(truth_items, on="item_id")
        .join(truth_users, on="user_id")
        .sort("row")
    )
    return frame, meta


def codes(frame: pl.DataFrame, name: str) -> np.ndarray:
    """Value index of a hidden attribute, in the generator's vocabulary order."""
    lookup = {v: i for i, v in enumerate(A.ATTRIBUTE_VALUES[name])}
    return np.array([lookup[v] for v in frame[name]], dtype=np.int64)


def device_department(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Device and department value indices, in the generator's vocabulary order."""
    return (
        np.array([A.DEVICES.index(v) for v in frame["device"]]),
        np.array([A.DEPARTMENTS.index(v) for v in frame["department"]]),
    )


def context_logit(frame: pl.DataFrame) -> np.ndarray:
    """The generator's hour and device x department terms."""
    device, department = device_department(frame)
    return A.HOUR_EFFECT[frame["hour"].to_numpy()] + A.DEVICE_DEPARTMENT_EFFECT[device, department]


def persona_click_probs(frame: pl.DataFrame, meta: dict) -> np.ndarray:
    """(N, personas) click probability of every impression under each persona's preference table."""
    prefs = A.persona_preferences(np.random.default_rng([meta["seed"], 0]))
    logit = np.zeros((frame.height, A.N_PERSONAS))
    for name, w in prefs.items():
        logit += w[:, codes(frame, name)].T
    logit += (context_logit(frame) + A.QUALITY_SCALE * frame["quality"].to_numpy() + meta["click_bias"])[:, None]
    return 1.0 / (1.0 + np.exp(-logit))


def posterior_mix(frame: pl.DataFrame, p: np.ndarray, loglik: np.ndarray) -> tuple[np.ndarray, float]:
    """Scores = posterior-weighted persona probabilities, from per-impression log-likelihoods summed per
    user; plus the share of users whose most likely persona is their true one."""
    users, inverse = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
    total = np.zeros((len(users), A.N_PERSONAS))
    np.add.at(total, inverse, loglik)
    post = np.exp(total - total.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    persona = frame.group_by("user_id").agg(pl.col("persona").first()).sort("user_id")["persona"].to_numpy()
    return (post[inverse] * p).sum(axis=1), float((post.argmax(axis=1) == persona).mean())


def bayes_persona(frame: pl.DataFrame, p: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
    """Persona posterior from every pre-test impression, clicked or not; ``p`` from :func:`persona_click_probs`
    (see :func:`posterior_mix`)."""
    y = frame["label"].to_numpy()
    loglik = np.where(y[:, None] == 1, np.log(p), np.log1p(-p))
    loglik[test] = 0.0  # only impressions before the test period inform the posterior
    return posterior_mix(frame, p, loglik)


def bayes_persona_clicks(
    frame: pl.DataFrame, p: np.ndarray, test: np.ndarray, max_clicks: int
) -> tuple[np.ndarray, float]:
    """Persona posterior from the user's last ``max_clicks`` pre-test CLICKS only: what a behaviour sequence holds.

    A click on item i is evidence p_k(i) / E[p_k] for persona k (which item was clicked, given a click;
    the expectation over all impressions): the impressions that were not clicked are not seen.
    """
    clicked = (frame["label"].to_numpy() == 1) & ~test
    recent = (
        frame.with_row_index("_i")
        .filter(pl.Series(clicked))
        .sort("timestamp", descending=True)
        .group_by("user_id")
        .head(max_clicks)["_i"]
        .to_numpy()
    )
    loglik = np.zeros_like(p)
    loglik[recent] = np.log(p[recent]) - np.log(p.mean(axis=0, keepdims=True))
    return posterior_mix(frame, p, loglik)


def one_hot_lr(frame: pl.DataFrame, who: str, fit: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Logistic regression on (who x attribute value) + hour + device x department one-hots + quality."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    owner = frame[who].cast(pl.String).to_numpy()
    columns = [np.char.add(np.char.add(owner.astype(str), "|"), frame[a].to_numpy().astype(str)) for a in ATTRIBUTES]
    columns += [
        frame["hour"].cast(pl.String).to_numpy(),
        np.char.add(frame["device"].to_numpy().astype(str), frame["department"].to_numpy().astype(str)),
    ]
    x = np.stack(columns, axis=1)
    encoder = OneHotEncoder(handle_unknown="ignore").fit(x[fit])
    features = hstack([encoder.transform(x), csr_matrix(frame["quality"].to_numpy()[:, None])]).tocsr()
    model = LogisticRegression(max_iter=3000, C=c).fit(features[fit], frame["label"].to_numpy()[fit])
    return model.predict_proba(features)[:, 1]


def factorised(
    frame: pl.DataFrame,
    train: np.ndarray,
    valid: np.ndarray,
    rank: int,
    weight_decay: float,
    epochs: int,
    seed: int = 0,
) -> np.ndarray:
    """Rank-k user x attribute-value factorisation; the scores of the epoch with the best validation AUC."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(seed)
    sizes = [len(A.ATTRIBUTE_VALUES[a]) for a in ATTRIBUTES]
    offsets = np.cumsum([0, *sizes[:-1]])
    values = torch.from_numpy(np.stack([codes(frame, a) + o for a, o in zip(ATTRIBUTES, offsets)], axis=1))
    device, department = device_department(frame)
    ctx = torch.from_numpy(np.stack([frame["hour"].to_numpy().astype(np.int64), 24 + device * 4 + department], axis=1))
    user = torch.from_numpy(np.unique(frame["user_id"].to_numpy(), return_inverse=True)[1])
    y = torch.from_numpy(frame["label"].to_numpy().astype(np.float32))
    quality = torch.from_numpy(frame["quality"].to_numpy().astype(np.float32))
    quality_weight = torch.nn.Parameter(torch.zeros(1))
    user_emb, value_emb = torch.nn.Embedding(int(user.max()) + 1, rank), torch.nn.Embedding(sum(sizes), rank)
    value_bias, ctx_bias = torch.nn.Embedding(sum(sizes), 1), torch.nn.Embedding(24 + 12, 1)
    bias = torch.nn.Parameter(torch.zeros(1))
    for e in (user_emb, value_emb):
        torch.nn.init.normal_(e.weight, std=0.1)
    for e in (value_bias, ctx_bias):
        torch.nn.init.zeros_(e.weight)
    params = [
        *user_emb.parameters(),
        *value_emb.parameters(),
        *value_bias.parameters(),
        *ctx_bias.parameters(),
        bias,
        quality_weight,
    ]
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=weight_decay)

    def logits(rows: torch.Tensor) -> torch.Tensor:
        return (
            (user_emb(user[rows]) * value_emb(values[rows]).sum(1)).sum(1)
            + value_bias(values[rows]).sum((1, 2))
            + ctx_bias(ctx[rows]).sum((1, 2))
            + quality_weight * quality[rows]
            + bias
        )

    rows_train = torch.from_numpy(np.flatnonzero(train))
    best, best_scores = -1.0, None
    for _ in range(epochs):
        for rows in rows_train[torch.randperm(len(rows_train))].split(512):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(rows), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scores = torch.sigmoid(logits(torch.arange(len(y)))).numpy()
        auc = roc_auc_score(y.numpy()[valid], scores[valid])
        if auc > best:
            best, best_scores = auc, scores
    return best_scores


def write_variant(data: Path, out: Path, attributes: bool, persona: bool) -> tuple[list[str], list[str]]:
    """A variant of the dataset with the hidden attributes as item columns and/or the persona as a user column.

    Media, interactions and the encode cache are linked, not copied. Returns the new item and user
    column names.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name not in ("items.parquet", "users.parquet"):
            (out / entry.name).symlink_to(entry.resolve())
    items = pl.read_parquet(data / "items.parquet")
    if attributes:
        truth = pl.read_parquet(data / "truth" / "items.parquet").select(
            "item_id", *[pl.col(a).cast(pl.String).alias(f"hidden_{a}") for a in ATTRIBUTES]
        )
        items = items.join(truth, on="item_id", how="left")
    items.write_parquet(out / "items.parquet")
    users = pl.read_parquet(data / "users.parquet")
    if persona:
        personas = pl.read_parquet(data / "truth" / "users.parquet").select(
            "user_id", pl.col("persona").cast(pl.String).alias("hidden_persona")
        )
        users = users.join(personas, on="user_id", how="left")
    users.write_parquet(out / "users.parquet")
    return [f"hidden_{a}" for a in ATTRIBUTES] if attributes else [], ["hidden_persona"] if persona else []


@dataclass(frozen=True)
class NeuralRow:
    """One ``--neural`` run: which model, what it is handed, whether it has id embeddings."""

    name: str
    what: str
    model: str
    attributes: bool
    persona: bool
    ids: bool = True


NEURAL_ROWS: tuple[NeuralRow, ...] = (
    NeuralRow("din_hidden_attributes", "this project's DIN, hidden attributes as item fields", "din", True, False),
    NeuralRow("din_hidden_attributes_persona", "the same + persona as a user field", "din", True, True),
    NeuralRow("din_hidden_attributes_persona_no_ids", "the same without id embeddings", "din", True, True, ids=False),
    NeuralRow("marn", "MARN as configured: content vectors, click histories, ids", "marn", False, False),
    NeuralRow("marn_no_ids", "MARN without id embeddings", "marn", False, False, ids=False),
    NeuralRow(
        "marn_persona_no_ids", "MARN without id embeddings, persona as a user field", "marn", False, True, ids=False
    ),
)


def neural(
    frame: pl.DataFrame, data: Path, work: Path, row: NeuralRow, config_path: Path, seed: int | None = None
) -> np.ndarray:
    """Scores of every impression by one of this project's models, trained (Ray, 1 worker, the config's
    other settings) on a dataset variant of :func:`write_variant`; the best validation epoch's checkpoint."""
    from recsys.checkpoint import load_checkpoint
    from recsys.config import load_config
    from recsys.evaluation import predict_frame
    from recsys.features.prepare import prepare_with
    from recsys.features.prepared import examples_frame
    from training.launch import run_training

    variant = work / row.name / "data"
    item_columns, user_columns = write_variant(data, variant, row.attributes, row.persona)
    config = load_config(config_path)
    features = config.features.model_copy(
        update={
            "item_categorical": [*config.features.item_categorical, *item_columns],
            "user_categorical": [*config.features.user_categorical, *user_columns],
        }
    )
    model = {"name": row.model} | ({} if row.ids else {"id_embeddings": []})
    config = config.model_copy(
        update={
            "features": features,
            "model": config.model.model_copy(update=model),
            "train": config.train.model_copy(
                update={"workers": 1, "storage_path": str(work / row.name / "runs")}
                | ({} if seed is None else {"seed": seed})
            ),
        }
    )
    shutil.rmtree(work / row.name / "runs", ignore_errors=True)
    # the encode cache: the config's, or the linked one
    result = run_training(config, data_dir=variant, run_name=row.name)
    checkpoint = load_checkpoint(result.best_checkpoint)
    examples = prepare_with(checkpoint, variant)
    if not (examples.meta["user_id"].to_numpy() == frame["user_id"].to_numpy()).all():
        raise RuntimeError("prepared examples are not in the interactions' row order")
    return predict_frame(checkpoint, examples_frame(examples)).probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/default", help="a built-in dataset directory (has truth/)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8], help="ranks of the factorised predictor")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the factorised predictor")
    parser.add_argument(
        "--neural",
        action="store_true",
        help=f"also train this project's models on dataset variants: {len(NEURAL_ROWS)} runs of 1-3 min",
    )
    parser.add_argument(
        "--config", default=str(ROOT / "configs" / "default.yaml"), help="training settings of the --neural runs"
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=[r.name for r in NEURAL_ROWS],
        metavar="NAME",
        help="only these --neural rows (default: all)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="train.seed of the --neural runs (default: the config's)"
    )
    parser.add_argument(
        "--work",
        default=str(ROOT / "runs" / "learnability"),
        help="where the --neural runs write their dataset variants and checkpoints",
    )
    args = parser.parse_args()
    if not args.neural and (args.rows is not None or args.seed is not None):
        parser.error("--rows and --seed select --neural runs: add --neural")

    from sklearn.metrics import roc_auc_score

    started = time.perf_counter()
    frame, meta = load(Path(args.data))
    split = frame["split"].to_numpy()
    train, valid, test = split == "train", split == "valid", split == "test"
    y, cold = frame["label"].to_numpy(), frame["is_cold"].to_numpy()
    rows: list[tuple[str, str, np.ndarray]] = [("oracle", "true_prob", frame["true_prob"].to_numpy())]
    persona_probs = persona_click_probs(frame, meta)
    scores, accuracy = bayes_persona(frame, persona_probs, test)
    rows.append(
        ("bayes_persona", f"persona inferred from pre-test impressions (top-1 accuracy {accuracy:.3f})", scores)
    )
    scores, accuracy = bayes_persona_clicks(frame, persona_probs, test, max_clicks=30)
    rows.append(
        (
            "bayes_persona_clicks",
            f"the same from the last 30 pre-test clicks only, a behaviour sequence (top-1 accuracy {accuracy:.3f})",
            scores,
        )
    )
    pre_test = train | valid
    rows.append(
        ("lr_true_persona", "logistic regression, true persona x attribute", one_hot_lr(frame, "persona", pre_test))
    )
    rows.append(
        ("lr_user_x_attribute", "logistic regression, user id x attribute", one_hot_lr(frame, "user_id", pre_test))
    )
    for rank in args.ranks:
        rows.append(
            (
                f"mf_rank_{rank}",
                f"rank-{rank} user x attribute factorisation, L2 1e-4, best of {args.epochs} epochs on valid",
                factorised(frame, train, valid, rank, 1e-4, args.epochs),
            )
        )
    if args.neural:
        for row in NEURAL_ROWS:
            if args.rows is None or row.name in args.rows:
                rows.append(
                    (
                        row.name,
                        row.what,
                        neural(frame, Path(args.data), Path(args.work), row, Path(args.config), args.seed),
                    )
                )
        import ray

        ray.shutdown()
    oracle = roc_auc_score(y[test], rows[0][2][test])
    print(
        f"{args.data} (seed {meta['seed']}, size {meta.get('size')}): {int(train.sum()):,} train / "
        f"{int(test.sum()):,} test impressions, {frame['user_id'].n_unique()} users; "
        f"{time.perf_counter() - started:.0f} s"
        + (f"; --neural train.seed {args.seed}" if args.neural and args.seed is not None else "")
        + "\n"
    )
    print("| predictor | what it knows | test AUC | of the oracle | cold-item AUC |")
    print("|---|---|---:|---:|---:|")
    for name, what, s in rows:
        auc = roc_auc_score(y[test], s[test])
        print(
            f"| {name} | {what} | {auc:.4f} | {auc / oracle:.1%} | "
            f"{roc_auc_score(y[test & cold], s[test & cold]):.4f} |"
        )


if __name__ == "__main__":
    main()
