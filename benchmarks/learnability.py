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
- ``lr_true_persona``: logistic regression on (true persona x attribute value), hour and
  device x department one-hots and item quality, fitted on train+valid (C = 1, not tuned): the
  persona handed over, weights learned.
- ``lr_user_x_attribute``: the same with the user id in place of the persona: one free weight per
  user and attribute value, each estimated from that user's own ~90 impressions.
- ``mf_rank_k``: a rank-k factorisation, logit = u_user . sum_a v_(a, value) + per-value, hour and
  device x department biases + w * quality, Adam with L2, fitted on train with the epoch chosen
  on validation: users share structure through the low rank, as a learned model's user vector can.

No model in this project sees the hidden attributes; their content vectors recover each one
(``benchmarks/encoder_probe.py``).

    .venv/bin/python benchmarks/learnability.py --data data/default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.synthetic import attributes as A  # noqa: E402

ATTRIBUTES = tuple(A.ATTRIBUTE_VALUES)


def load(data: Path) -> tuple[pl.DataFrame, dict]:
    """Interactions joined with the hidden item attributes and the users' personas."""
    meta = json.loads((data / "dataset.json").read_text())
    truth_items = pl.read_parquet(data / "truth" / "items.parquet")
    truth_users = pl.read_parquet(data / "truth" / "users.parquet").select("user_id", "persona")
    frame = (pl.read_parquet(data / "interactions.parquet").with_row_index("row")
             .join(truth_items, on="item_id").join(truth_users, on="user_id").sort("row"))
    return frame, meta


def codes(frame: pl.DataFrame, name: str) -> np.ndarray:
    """Value index of a hidden attribute, in the generator's vocabulary order."""
    lookup = {v: i for i, v in enumerate(A.ATTRIBUTE_VALUES[name])}
    return np.array([lookup[v] for v in frame[name]], dtype=np.int64)


def device_department(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Device and department value indices, in the generator's vocabulary order."""
    return (np.array([A.DEVICES.index(v) for v in frame["device"]]),
            np.array([A.DEPARTMENTS.index(v) for v in frame["department"]]))


def context_logit(frame: pl.DataFrame) -> np.ndarray:
    """The generator's hour and device x department terms."""
    device, department = device_department(frame)
    return A.HOUR_EFFECT[frame["hour"].to_numpy()] + A.DEVICE_DEPARTMENT_EFFECT[device, department]


def bayes_persona(frame: pl.DataFrame, meta: dict, test: np.ndarray) -> tuple[np.ndarray, float]:
    """Posterior-mix scores and the share of users whose most likely persona is their true one."""
    prefs = A.persona_preferences(np.random.default_rng([meta["seed"], 0]))
    logit = np.zeros((frame.height, A.N_PERSONAS))
    for name, w in prefs.items():
        logit += w[:, codes(frame, name)].T
    logit += (context_logit(frame) + A.QUALITY_SCALE * frame["quality"].to_numpy() + meta["click_bias"])[:, None]
    p = 1.0 / (1.0 + np.exp(-logit))  # (N, personas)
    y = frame["label"].to_numpy()
    loglik = np.where(y[:, None] == 1, np.log(p), np.log1p(-p))
    loglik[test] = 0.0  # only impressions before the test period inform the posterior
    users, inverse = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
    total = np.zeros((len(users), A.N_PERSONAS))
    np.add.at(total, inverse, loglik)
    post = np.exp(total - total.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    persona = frame.group_by("user_id").agg(pl.col("persona").first()).sort("user_id")["persona"].to_numpy()
    return (post[inverse] * p).sum(axis=1), float((post.argmax(axis=1) == persona).mean())


def one_hot_lr(frame: pl.DataFrame, who: str, fit: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Logistic regression on (who x attribute value) + hour + device x department one-hots + quality."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    owner = frame[who].cast(pl.String).to_numpy()
    columns = [np.char.add(np.char.add(owner.astype(str), "|"), frame[a].to_numpy().astype(str)) for a in ATTRIBUTES]
    columns += [frame["hour"].cast(pl.String).to_numpy(),
                np.char.add(frame["device"].to_numpy().astype(str), frame["department"].to_numpy().astype(str))]
    x = np.stack(columns, axis=1)
    encoder = OneHotEncoder(handle_unknown="ignore").fit(x[fit])
    features = hstack([encoder.transform(x), csr_matrix(frame["quality"].to_numpy()[:, None])]).tocsr()
    model = LogisticRegression(max_iter=3000, C=c).fit(features[fit], frame["label"].to_numpy()[fit])
    return model.predict_proba(features)[:, 1]


def factorised(frame: pl.DataFrame, train: np.ndarray, valid: np.ndarray, rank: int, weight_decay: float,
               epochs: int, seed: int = 0) -> np.ndarray:
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
    params = [*user_emb.parameters(), *value_emb.parameters(), *value_bias.parameters(), *ctx_bias.parameters(), bias,
              quality_weight]
    opt = torch.optim.Adam(params, lr=0.01, weight_decay=weight_decay)

    def logits(rows: torch.Tensor) -> torch.Tensor:
        return ((user_emb(user[rows]) * value_emb(values[rows]).sum(1)).sum(1) + value_bias(values[rows]).sum((1, 2))
                + ctx_bias(ctx[rows]).sum((1, 2)) + quality_weight * quality[rows] + bias)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/default", help="a built-in dataset directory (has truth/)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8], help="ranks of the factorised predictor")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the factorised predictor")
    args = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    started = time.perf_counter()
    frame, meta = load(Path(args.data))
    split = frame["split"].to_numpy()
    train, valid, test = split == "train", split == "valid", split == "test"
    y, cold = frame["label"].to_numpy(), frame["is_cold"].to_numpy()
    rows: list[tuple[str, str, np.ndarray]] = [("oracle", "true_prob", frame["true_prob"].to_numpy())]
    scores, accuracy = bayes_persona(frame, meta, test)
    rows.append(("bayes_persona", f"persona inferred from pre-test impressions (top-1 accuracy {accuracy:.3f})", scores))
    pre_test = train | valid
    rows.append(("lr_true_persona", "logistic regression, true persona x attribute",
                 one_hot_lr(frame, "persona", pre_test)))
    rows.append(("lr_user_x_attribute", "logistic regression, user id x attribute",
                 one_hot_lr(frame, "user_id", pre_test)))
    for rank in args.ranks:
        rows.append((f"mf_rank_{rank}", f"rank-{rank} user x attribute factorisation, L2 1e-4, best of "
                     f"{args.epochs} epochs on valid", factorised(frame, train, valid, rank, 1e-4, args.epochs)))
    oracle = roc_auc_score(y[test], rows[0][2][test])
    print(f"{args.data} (seed {meta['seed']}, size {meta.get('size')}): {int(train.sum()):,} train / "
          f"{int(test.sum()):,} test impressions, {frame['user_id'].n_unique()} users; "
          f"{time.perf_counter() - started:.0f} s\n")
    print("| predictor | what it knows | test AUC | of the oracle | cold-item AUC |")
    print("|---|---|---:|---:|---:|")
    for name, what, s in rows:
        auc = roc_auc_score(y[test], s[test])
        print(f"| {name} | {what} | {auc:.4f} | {auc / oracle:.1%} | {roc_auc_score(y[test & cold], s[test & cold]):.4f} |")


if __name__ == "__main__":
    main()
