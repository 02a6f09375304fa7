"""Train and test FuxiCTR's DIN or DNN on the rows that ``to_fuxictr.py`` converted; write the peer results JSON.

Run with the FuxiCTR venv's python (``bash benchmarks/peers/setup_fuxictr.sh`` makes it):

    benchmarks/peers/.venv-fuxictr/bin/python benchmarks/peers/run_fuxictr.py --model din \\
        benchmarks/_work/fuxictr/builtin --seeds 0,1,2      # -> benchmarks/_work/fuxictr/builtin/fuxictr_din.json
    benchmarks/peers/.venv-fuxictr/bin/python benchmarks/peers/run_fuxictr.py --model dnn \\
        benchmarks/_work/fuxictr/builtin --seeds 0,1,2      # -> .../fuxictr_dnn.json

The PyPI package ``fuxictr`` ships the library (feature processing, data loaders, layers, the
``BaseModel`` training loop with early stopping) but not the model zoo, so the networks are
assembled here from the package's own parts, as the FuxiCTR model zoo's DIN and DNN do: one
``FeatureEmbeddingDict`` over every field (history fields share the candidate's tables) and an
``MLP_Block`` over all field embeddings; the behaviour sequence is pooled by ``DIN_Attention``
against the candidate's (item_id, attributes) (DIN) or by ``MaskedAveragePooling``, FuxiCTR's
default sequence encoder (DNN). Training, early stopping on validation AUC (and FuxiCTR's
learning-rate reduction on plateau) and checkpointing are FuxiCTR's ``BaseModel.fit``.

Sizes default to the run that wrote the prepared data (``peer.json`` -> ``ours``): embedding 32,
MLP [200, 80], batch 512, learning rate, dropout and patience; attention MLP [80, 40] as our DIN.

Metrics on the test split: AUC (scikit-learn), GAUC (impression-weighted mean of per-user AUC
over users with both classes; the same definition and formula as ``recsys.metrics.gauc``) and
logloss (probabilities clipped to [1e-7, 1-1e-7], as ``recsys.metrics.logloss``), overall and for
warm/cold items (from our prepared test rows' ``meta_is_cold``, matched by row). Training
samples/s = training rows x epochs run / wall time of the training epochs without the per-epoch
validation pass (FuxiCTR's Ray Data loader included, as a user of FuxiCTR would see it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- metrics (copied definitions)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")


def gauc(user_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users with both classes (recsys.metrics.gauc).

    One lexsort by (user, score); per-user Mann-Whitney U from average ranks, ties within a user
    sharing the mean rank exactly as roc_auc_score does. NaN when no user qualifies.
    """
    u = np.asarray(user_ids, dtype=np.int64)
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n = len(y)
    if n == 0:
        return float("nan")
    order = np.lexsort((s, u))
    c, sv, yv = u[order], s[order], y[order]
    idx = np.arange(n)
    user_start = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    user_len = np.diff(np.r_[user_start, n])
    rank = idx - np.repeat(user_start, user_len) + 1
    run_start = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (sv[1:] != sv[:-1])])
    run_len = np.diff(np.r_[run_start, n])
    avg_rank = np.repeat(rank[run_start] + (run_len - 1) / 2.0, run_len)
    user_of_row = np.repeat(np.arange(len(user_start)), user_len)
    n_pos = np.bincount(user_of_row, weights=yv, minlength=len(user_start))
    n_neg = user_len - n_pos
    rank_sum_pos = np.bincount(user_of_row, weights=avg_rank * yv, minlength=len(user_start))
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    user_auc = (rank_sum_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    weight = user_len[ok].astype(np.float64)
    return float(np.sum(user_auc * weight) / np.sum(weight))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if len(y) else float("nan")


def metrics(user_ids, labels, probs) -> dict:
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(user_ids, labels, probs),
        "logloss": logloss(labels, probs),
        "mean_pred": float(np.mean(probs)),
        "mean_label": float(np.mean(labels)),
        "n": int(len(labels)),
    }


# --------------------------------------------------------------------------- the model


def finish(model, feature_map, hidden, activations, dropout, batch_norm, learning_rate, kwargs) -> None:
    """The part every FuxiCTR network here ends with: the ``MLP_Block`` over all field embeddings
    (``model.dnn``), then FuxiCTR's compile (optimizer, loss), initialisation and device placement."""
    from fuxictr.pytorch.layers import MLP_Block

    model.dnn = MLP_Block(
        input_dim=feature_map.sum_emb_out_dim(),
        output_dim=1,
        hidden_units=list(hidden),
        hidden_activations=activations,
        output_activation=model.output_activation,
        dropout_rates=dropout,
        batch_norm=batch_norm,
    )
    model.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
    model.reset_parameters()
    model.model_to_device()


def din_class():
    """FuxiCTR's DIN built from the package's layers (the PyPI package has no model zoo)."""
    import torch
    from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict
    from fuxictr.pytorch.models import BaseModel

    class DIN(BaseModel):
        def __init__(
            self,
            feature_map,
            model_id="DIN",
            gpu=-1,
            dnn_hidden_units=(200, 80),
            dnn_activations="ReLU",
            attention_hidden_units=(80, 40),
            attention_hidden_activations="Dice",
            attention_output_activation=None,
            attention_dropout=0.0,
            learning_rate=1e-3,
            embedding_dim=32,
            net_dropout=0.0,
            batch_norm=False,
            din_target_field=("item_id",),
            din_sequence_field=("hist_item_id",),
            din_use_softmax=False,
            embedding_regularizer=None,
            net_regularizer=None,
            **kwargs,
        ):
            super().__init__(
                feature_map,
                model_id=model_id,
                gpu=gpu,
                embedding_regularizer=embedding_regularizer,
                net_regularizer=net_regularizer,
                **kwargs,
            )
            # One attention over the concatenated (item_id, attribute...) embeddings, as the model
            # zoo's DIN does for a tuple target field.
            self.target_fields = list(din_target_field)
            self.sequence_fields = list(din_sequence_field)
            assert len(self.target_fields) == len(self.sequence_fields)
            self.embedding_dim = embedding_dim
            self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
            self.attention = DIN_Attention(
                embedding_dim * len(self.target_fields),
                attention_units=list(attention_hidden_units),
                hidden_activations=attention_hidden_activations,
                output_activation=attention_output_activation,
                dropout_rate=attention_dropout,
                use_softmax=din_use_softmax,
            )
            finish(self, feature_map, dnn_hidden_units, dnn_activations, net_dropout, batch_norm, learning_rate, kwargs)

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X)
            target = torch.cat([emb[f] for f in self.target_fields], dim=-1)  # (B, T*E)
            sequence = torch.cat([emb[f] for f in self.sequence_fields], dim=-1)  # (B, L, T*E)
            mask = X[self.sequence_fields[0]].long() != 0  # FuxiCTR pads with index 0
            pooled = self.attention(target, sequence, mask)
            for field, part in zip(self.sequence_fields, pooled.split(self.embedding_dim, dim=-1)):
                emb[field] = part
            return {"y_pred": self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}

    return DIN


def dnn_class():
    """FuxiCTR's DNN built from the package's layers: every field's embedding, the behaviour sequence
    mean-pooled over its non-padding items (``MaskedAveragePooling``, FuxiCTR's default sequence
    encoder), one ``MLP_Block`` over all of them."""
    from fuxictr.pytorch.layers import FeatureEmbeddingDict, MaskedAveragePooling
    from fuxictr.pytorch.models import BaseModel

    class DNN(BaseModel):
        def __init__(
            self,
            feature_map,
            model_id="DNN",
            gpu=-1,
            dnn_hidden_units=(200, 80),
            dnn_activations="ReLU",
            learning_rate=1e-3,
            embedding_dim=32,
            net_dropout=0.0,
            batch_norm=False,
            din_sequence_field=("hist_item_id",),
            embedding_regularizer=None,
            net_regularizer=None,
            **kwargs,
        ):
            super().__init__(
                feature_map,
                model_id=model_id,
                gpu=gpu,
                embedding_regularizer=embedding_regularizer,
                net_regularizer=net_regularizer,
                **kwargs,
            )
            self.sequence_fields = list(din_sequence_field)
            self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
            self.pooling = MaskedAveragePooling()
            finish(self, feature_map, dnn_hidden_units, dnn_activations, net_dropout, batch_norm, learning_rate, kwargs)

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X)
            mask = X[self.sequence_fields[0]].long() != 0  # FuxiCTR pads with index 0
            for field in self.sequence_fields:
                emb[field] = self.pooling(emb[field], mask)
            return {"y_pred": self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}

    return DNN


MODELS = {"din": din_class, "dnn": dnn_class}


def timed(model_cls):
    """Subclass that records wall time of training epochs, validation passes and train steps."""

    class Timed(model_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.timing = {"epoch_s": [], "eval_s": [], "step_s": 0.0, "steps": 0, "val_auc": []}

        def train_epoch(self, data_generator):
            t0 = time.perf_counter()
            n_eval = len(self.timing["eval_s"])
            super().train_epoch(data_generator)
            total = time.perf_counter() - t0
            self.timing["epoch_s"].append(total - sum(self.timing["eval_s"][n_eval:]))

        def eval_step(self):
            t0 = time.perf_counter()
            super().eval_step()
            self.timing["eval_s"].append(time.perf_counter() - t0)

        def evaluate(self, data_generator, metrics=None):
            logs = super().evaluate(data_generator, metrics)
            self.timing["val_auc"].append(float(logs.get("AUC", float("nan"))))
            return logs

        def train_step(self, batch_data):
            t0 = time.perf_counter()
            loss = super().train_step(batch_data)
            self.timing["step_s"] += time.perf_counter() - t0
            self.timing["steps"] += 1
            return loss

    return Timed


# --------------------------------------------------------------------------- one run


def predict(model, generator) -> dict[str, np.ndarray]:
    """Predictions with their labels and meta columns, batch by batch (order-independent)."""
    import torch

    model.eval()
    out = {"pred": [], "label": [], "uid": [], "row_id": []}
    with torch.no_grad():
        for batch in generator:
            out["pred"].append(model.forward(batch)["y_pred"].reshape(-1).cpu().numpy())
            out["label"].append(batch["label"].reshape(-1).cpu().numpy())
            out["uid"].append(batch["uid"].reshape(-1).cpu().numpy())
            out["row_id"].append(batch["row_id"].reshape(-1).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def build_fuxictr_data(params: dict) -> tuple[str, str, str]:
    """FuxiCTR's own preprocessing: fit vocabularies on train, transform every split to parquet (cached)."""
    from fuxictr.preprocess import FeatureProcessor, build_dataset

    processor = FeatureProcessor(**params)
    return build_dataset(processor, **params)


def run_seed(model_name: str, seed: int, params: dict, data_paths: tuple[str, str, str], test_meta) -> dict:
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    seed_everything(seed)
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    train_path, valid_path, test_path = data_paths
    loader_args = {k: v for k, v in params.items() if k not in ("train_data", "valid_data", "test_data")}
    train_gen, valid_gen = RankDataLoader(
        feature_map, stage="train", train_data=train_path, valid_data=valid_path, **loader_args
    )
    model = timed(MODELS[model_name]())(feature_map, **{**params, "model_id": f"{model_name.upper()}_seed{seed}"})
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logging.info("%s parameters: %d", model_name.upper(), n_params)
    model.fit(train_gen, validation_data=valid_gen, epochs=params["epochs"], verbose=params["verbose"])
    epochs_run = len(model.timing["epoch_s"])
    train_rows = train_gen.num_samples
    train_s = sum(model.timing["epoch_s"])
    test_gen = RankDataLoader(feature_map, stage="test", test_data=test_path, **loader_args)
    pred = predict(model, test_gen)
    val_aucs = model.timing["val_auc"]
    result = {
        "seed": seed,
        "test": metrics(pred["uid"], pred["label"], pred["pred"]),
        "train_samples_per_s": train_rows * epochs_run / train_s,
        "epochs": epochs_run,
        "best_epoch": int(np.nanargmax(val_aucs)) + 1 if val_aucs else None,
        "best_val_auc": float(np.nanmax(val_aucs)) if val_aucs else None,
        "val_auc_per_epoch": val_aucs[:epochs_run],
        "train_step_samples_per_s": train_rows * epochs_run / model.timing["step_s"],
        "train_seconds": train_s,
        "parameters": int(n_params),
    }
    if test_meta is not None:
        cold = test_meta[pred["row_id"]]
        for name, sel in (("warm_items", ~cold), ("cold_items", cold)):
            if sel.any():
                result[name] = metrics(pred["uid"][sel], pred["label"][sel], pred["pred"][sel])
    result["_pred"] = pred
    return result


# --------------------------------------------------------------------------- main


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("converted", type=Path, help="output directory of to_fuxictr.py")
    ap.add_argument("--model", choices=sorted(MODELS), default="din", help="FuxiCTR network to train (default din)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ap.add_argument("--out", type=Path, help="results JSON (default <converted>/fuxictr_<model>.json)")
    ap.add_argument("--epochs", type=int, default=20, help="max epochs; early stopping usually ends sooner")
    ap.add_argument("--patience", type=int, help="early stopping patience (default: ours)")
    ap.add_argument("--batch-size", type=int, help="default: ours")
    ap.add_argument("--learning-rate", type=float, help="default: ours")
    ap.add_argument("--embedding-dim", type=int, help="default: ours")
    ap.add_argument("--dnn-hidden", help="comma-separated widths (default: our mlp_hidden)")
    ap.add_argument("--attention-hidden", default="80,40", help="DIN attention MLP widths (default: ours, 80,40)")
    ap.add_argument("--attention-activation", default="Dice", help="Dice (FuxiCTR's DIN default) or ReLU/Sigmoid")
    ap.add_argument("--net-dropout", type=float, help="default: our model dropout")
    ap.add_argument("--no-lr-decay", action="store_true", help="turn off FuxiCTR's lr x0.1 on plateau")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on the shared 2-core machine 2 threads ran 2-3x slower)",
    )
    ap.add_argument(
        "--save-predictions",
        action="store_true",
        help="also write <out stem>.seed<k>.predictions.parquet (row_id = row of our test split)",
    )
    ap.add_argument("--verbose", type=int, default=0, help="FuxiCTR progress bars (1) or not (0)")
    args = ap.parse_args(argv)

    import fuxictr
    import polars as pl
    import torch
    import yaml

    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    conv = args.converted.resolve()
    peer = json.loads((conv / "peer.json").read_text())
    ours = peer.get("ours", {})
    dataset_id = peer["dataset_id"]
    data_cfg = yaml.safe_load((conv / "config" / "dataset_config.yaml").read_text())[dataset_id]
    params = {
        **data_cfg,
        "dataset_id": dataset_id,
        "model_root": str(conv / "checkpoints"),
        "task": "binary_classification",
        "loss": "binary_crossentropy",
        "optimizer": "adam",
        "metrics": ["logloss", "AUC"],
        "monitor": "AUC",
        "monitor_mode": "max",
        "embedding_regularizer": 0,
        "net_regularizer": 0,
        "batch_size": args.batch_size or ours.get("batch_size", 512),
        "learning_rate": args.learning_rate or ours.get("learning_rate", 1e-3),
        "embedding_dim": args.embedding_dim or ours.get("embedding_dim", 32),
        "dnn_hidden_units": parse_ints(args.dnn_hidden) if args.dnn_hidden else ours.get("mlp_hidden", [200, 80]),
        "dnn_activations": "ReLU",
        "attention_hidden_units": parse_ints(args.attention_hidden),
        "attention_hidden_activations": args.attention_activation,
        "attention_dropout": 0.0,
        "net_dropout": args.net_dropout if args.net_dropout is not None else ours.get("dropout", 0.0),
        "batch_norm": False,
        "din_target_field": peer["din_target_field"],
        "din_sequence_field": peer["din_sequence_field"],
        "din_use_softmax": False,
        "epochs": args.epochs,
        "early_stop_patience": args.patience or ours.get("early_stopping_patience", 2),
        "reduce_lr_on_plateau": not args.no_lr_decay,
        "save_best_only": True,
        "eval_steps": None,
        "shuffle": True,
        "verbose": args.verbose,
        "num_workers": 1,
        "group_id": None,
        "gpu": -1,
    }
    seeds = parse_ints(args.seeds)
    name = f"fuxictr_{args.model}"
    out = (args.out or conv / f"{name}.json").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    os.makedirs(os.path.join(params["model_root"], dataset_id), exist_ok=True)  # FuxiCTR's set_logger would make it

    start_local_ray(max(2, args.threads))
    t0 = time.perf_counter()
    data_paths = build_fuxictr_data(params)
    logging.info("FuxiCTR data ready in %.1fs: %s", time.perf_counter() - t0, data_paths)
    test_meta = None
    prepared_test = Path(peer["prepared_dir"]) / "test"
    if prepared_test.is_dir():
        meta = pl.read_parquet(sorted(prepared_test.glob("part-*.parquet")), columns=["meta_is_cold"])
        test_meta = meta["meta_is_cold"].to_numpy()

    runs = []
    for seed in seeds:
        logging.info("==== seed %d ====", seed)
        result = run_seed(args.model, seed, params, data_paths, test_meta)
        pred = result.pop("_pred")
        if args.save_predictions:
            path = out.with_name(f"{out.stem}.seed{seed}.predictions.parquet")
            pl.DataFrame(
                {"row_id": pred["row_id"], "user_id": pred["uid"], "label": pred["label"], "pred": pred["pred"]}
            ).sort("row_id").write_parquet(path)
            result["predictions"] = path.name  # relative to the results JSON, as recsys.reports.peers reads it
        runs.append(result)
        t = result["test"]
        print(
            f"[{name}] seed {seed}: test AUC {t['auc']:.4f} GAUC {t['gauc']:.4f} logloss {t['logloss']:.4f} "
            f"| {result['epochs']} epochs, {result['train_samples_per_s']:.0f} train samples/s",
            flush=True,
        )

    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv])
    report = {
        "model": name,
        "source": f"FuxiCTR {fuxictr.__version__} {args.model.upper()} (PyPI fuxictr)",
        "dataset": peer["dataset"],
        "runs": runs,
        "command": command,
        "fuxictr_version": fuxictr.__version__,
        "torch_version": torch.__version__,
        "threads": args.threads,
        "rows": peer["rows"],
        "prepared_dir": peer["prepared_dir"],
        "hyperparameters": {
            k: params[k]
            for k in (
                "embedding_dim",
                "dnn_hidden_units",
                "dnn_activations",
                "attention_hidden_units",
                "attention_hidden_activations",
                "net_dropout",
                "batch_size",
                "learning_rate",
                "epochs",
                "early_stop_patience",
                "reduce_lr_on_plateau",
                "din_target_field",
                "din_sequence_field",
            )
        },
        "summary": summarise(runs),
    }
    out.write_text(json.dumps(report, indent=1))
    s = report["summary"]
    print(
        f"[{name}] {peer['dataset']}: test AUC {s['auc']['mean']:.4f}±{s['auc']['std']:.4f} "
        f"over {len(runs)} seed(s) -> {out}",
        flush=True,
    )
    try:
        import ray

        ray.shutdown()
    except Exception:
        pass
    return 0


def start_local_ray(num_cpus: int) -> None:
    """Start a private local Ray before FuxiCTR's data code calls a bare ``ray.init()``.

    A bare ``ray.init()`` joins the cluster named in Ray's ``ray_current_cluster`` file in its temp
    directory (left by any earlier ``ray start`` on the machine, possibly dead) and then hangs
    retrying its GCS; FuxiCTR only calls ``ray.init`` when Ray is not initialised yet, so starting
    our own first avoids that.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=max(1, num_cpus),
            include_dashboard=False,
            logging_level=logging.ERROR,
            object_store_memory=512 * 1024**2,
            log_to_driver=True,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False


def summarise(runs: list[dict]) -> dict:
    """Mean and sample std (ddof=1; 0 for one run) per test metric and for samples/s."""
    out = {}
    for key, values in (
        ("auc", [r["test"]["auc"] for r in runs]),
        ("gauc", [r["test"]["gauc"] for r in runs]),
        ("logloss", [r["test"]["logloss"] for r in runs]),
        ("train_samples_per_s", [r["train_samples_per_s"] for r in runs]),
        ("epochs", [r["epochs"] for r in runs]),
    ):
        arr = np.asarray(values, dtype=np.float64)
        out[key] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}
    return out


if __name__ == "__main__":
    sys.exit(main())
