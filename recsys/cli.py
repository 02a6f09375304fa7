"""The `recsys` command: one entry point, one subcommand per job.

Heavy libraries (torch, transformers, ray) are imported inside the handlers so that
``recsys --help`` and config/data checks answer quickly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from recsys import __version__, console
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from recsys.evaluation import Evaluation
    from recsys.tracking import TrackedRun

#: Rows of the modal-attention-by-category table the demo prints (all of them are in test_metrics.json).
DEMO_ATTENTION_ROWS = 5

log = logging.getLogger("recsys")

EPILOG = """\
examples:
  recsys data make-default --out data/default          # built-in multimodal dataset
  recsys data check data/default --config configs/default.yaml
  recsys encode data/default --config configs/default.yaml
  recsys config show configs/default.yaml
  recsys train --config configs/default.yaml --workers 2
  recsys serve --checkpoint runs/<run>/best --port 8000
"""


# --------------------------------------------------------------------------- handlers


def _cmd_config_show(args: argparse.Namespace) -> int:
    from recsys.config import dump_config, load_config

    print(dump_config(load_config(args.file)), end="")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from recsys.config import ExperimentConfig, load_config
    from recsys.data.validate import validate_dataset

    config = load_config(args.config) if args.config else ExperimentConfig()
    report = validate_dataset(args.dir, config)
    print(report.format())
    if not report.ok or (args.strict and report.warnings):
        return 1
    return 0


def _cmd_data_make_default(args: argparse.Namespace) -> int:
    from recsys.data.synthetic import make_default_dataset

    summary = make_default_dataset(Path(args.out), seed=args.seed, size=args.size, progress=not args.no_progress)
    print(
        f"wrote {summary.path}: {summary.n_items} items ({summary.n_cold_items} cold, "
        f"{summary.n_missing_image} without image, {summary.n_missing_audio} without audio), "
        f"{summary.n_users} users, {summary.n_interactions} interactions; "
        f"oracle test AUC {summary.oracle_auc_test:.4f}"
    )
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from recsys.config import load_config
    from recsys.data.validate import validate_dataset
    from recsys.encoders.pipeline import encode_items, pool_cpus
    from training.launch import init_ray

    config = load_config(args.config)
    report = validate_dataset(args.data_dir, config)
    report.raise_for_errors()
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    if config.encoders.actors:  # the Ray that training uses too (Ray's output to the log file); the pool must fit
        init_ray(args.address or config.train.address, pool_cpus(config.encoders))
    result = encode_items(
        Path(args.data_dir), config.encoders, cache_dir=cache_dir, progress=not args.no_progress, address=args.address
    )
    console.attach_log_file(result.cache_dir / "encode.log")  # Ray's and the libraries' output, kept until now
    print(result.format())
    return 0


def _test_summary(model: str, evaluation: Evaluation) -> str:
    """One line: the test metrics of a checkpoint (and the oracle's AUC when the data knows it)."""
    m, o = evaluation.segments["all"], evaluation.oracle.get("all")
    return f"{model} test AUC {m['auc']:.4f}, GAUC {m['gauc']:.4f}, logloss {m['logloss']:.4f}" + (
        f" (oracle AUC {o['auc']:.4f})" if o else ""
    )


def _tracked_line(run: TrackedRun | None) -> str | None:
    return f"mlflow run {run.run_id} in {run.tracker.uri} (experiment {run.tracker.experiment})" if run else None


def _cmd_train(args: argparse.Namespace) -> int:
    from recsys.config import load_config
    from recsys.tracking import Tracker
    from training.tracked import train_and_test

    config = load_config(args.config)
    if args.storage:
        config.train.storage_path = args.storage
    tested = train_and_test(
        config,
        Tracker.from_config(config, args.tracking_uri),
        run_name=args.run_name,
        resume=args.resume,
        **_run_options(args),
    )
    result, best = tested.train, tested.train.best_metrics
    print(
        f"best checkpoint: {result.best_checkpoint} (epoch {best['epoch']}, val AUC {best['val_auc']:.4f}, "
        f"GAUC {best['val_gauc']:.4f}, logloss {best['val_logloss']:.4f})"
    )
    print(f"latest checkpoint: {result.latest_checkpoint}")
    print(f"test: {_test_summary(config.model.name, tested.test)} -> {result.run_dir / 'test_metrics.json'}")
    for line in (_tracked_line(tested.tracked), f"log: {console.log_file()}" if console.log_file() else None):
        if line:
            print(line)
    return 0


class _RefuseApiKeyOnCommandLine(argparse.Action):
    """``--api-key KEY`` would show the key to every user of the machine (``ps``): refused, naming the safe ways."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parser.error("--api-key shows the key in the process list: set RECSYS_API_KEY or use --api-key-file FILE")


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import serve

    # Overrides of the checkpoint config's serve section, by ServeConfig field name (None: not given).
    fields = (
        "host",
        "port",
        "workers",
        "state_dir",
        "state_url",
        "api_key_file",
        "max_candidates",
        "max_body_mb",
        "scorer",
        "backend",
        "min_replicas",
        "max_replicas",
        "replica_cpus",
        "max_replicas_per_node",
        "proxy_location",
        "ingress",
    )
    overrides = {name: getattr(args, name) for name in fields}
    return serve(args.checkpoint, overrides, data_dir=args.data, address=args.address)


def _cmd_export(args: argparse.Namespace) -> int:
    from serving.model import export_scorer

    path, worst = export_scorer(args.checkpoint)
    print(f"wrote {path} (ONNX; checked against the eager model: largest difference {worst:.1e})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the built-in data: dataset -> validate -> encode -> train (Ray) -> evaluate."""
    import time

    from recsys.config import load_config, override
    from recsys.data.synthetic import make_default_dataset
    from recsys.data.validate import validate_dataset
    from recsys.encoders.pipeline import encode_items, pool_cpus
    from recsys.evaluation import format_evaluation
    from recsys.tracking import Tracker
    from training.launch import init_ray
    from training.tracked import train_and_test

    started = time.perf_counter()
    out = Path(args.out)
    config = load_config(args.config)
    data_dir, cache_dir = out / "data", out / "cache"
    config.train.storage_path = str(out / "runs")
    if args.workers is not None:  # 0 is an error, never "the config's value"
        override(config.train, "workers", args.workers, "--workers")
    tracker = Tracker.from_config(config, args.tracking_uri)
    log = console.attach_log_file(out / "demo.log")
    if log:
        print(f"log: {log} (Ray's and the libraries' output; --verbose shows it here)", flush=True)
    print(f"[1/5] dataset -> {data_dir}", flush=True)
    summary = make_default_dataset(data_dir, seed=args.seed, size=args.size, progress=not args.no_progress)
    print(
        f"      {summary.n_items} items ({summary.n_cold_items} cold), {summary.n_users} users, "
        f"{summary.n_interactions} interactions",
        flush=True,
    )
    print("[2/5] validate", flush=True)
    report = validate_dataset(data_dir, config)
    print("      " + report.format().replace("\n", "\n      "), flush=True)
    report.raise_for_errors()
    print("[3/5] encode items with the frozen encoders", flush=True)
    init_ray(config.train.address, max(config.train.workers, pool_cpus(config.encoders)))  # encoding and training
    print(
        encode_items(data_dir, config.encoders, cache_dir=cache_dir, progress=not args.no_progress).format(), flush=True
    )
    run_name = f"{config.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"[4/5] train {config.model.name} with {config.train.workers} Ray workers (run {run_name})", flush=True)
    tested = train_and_test(
        config,
        tracker,
        data_dir=data_dir,
        cache_dir=cache_dir,
        run_name=run_name,
        show_progress=not args.no_progress,
    )
    print("[5/5] the best checkpoint on the test split", flush=True)
    print(format_evaluation(tested.test, attention_rows=DEMO_ATTENTION_ROWS))
    print(f"summary: {_test_summary(config.model.name, tested.test)}")
    print(f"checkpoint: {tested.train.best_checkpoint}")
    tracked = _tracked_line(tested.tracked)
    if tracked:
        print(f"tracked: {tracked}")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from recsys.evaluation import evaluate_checkpoint, format_evaluation
    from recsys.tracking import log_checkpoint_evaluation

    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / f"eval-{args.split}"
    overrides = {"ray_min_rows": args.ray_min_rows, "actors": args.actors}
    evaluation = evaluate_checkpoint(
        args.checkpoint,
        data_dir=args.data,
        split=args.split,
        overrides={k: v for k, v in overrides.items() if v is not None},
        address=args.address,
    )
    path = evaluation.write(out)
    console.attach_log_file(out / "recsys.log")  # once the directory is there (what was logged so far, too)
    print(format_evaluation(evaluation))
    if evaluation.rows_per_node is not None:
        nodes = evaluation.rows_per_node
        print(
            f"\nscored on Ray Data on {len(nodes)} node(s): "
            + ", ".join(f"{node[:8]} {rows} rows" for node, rows in sorted(nodes.items()))
        )
    print(f"\nwrote {path}")
    tracked = log_checkpoint_evaluation(Path(args.checkpoint), evaluation.to_json(), path, args.tracking_uri)
    print(
        f"logged to {_tracked_line(tracked)}"
        if tracked
        else "not logged to MLflow: the run of this checkpoint was not tracked"
    )
    return 0


def _seed_list(text: str, base: int) -> list[int]:
    """``3`` -> three seeds from ``base`` on; ``0,5,9`` -> those seeds."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        return list(range(base, base + int(text)))
    except ValueError:
        raise RecsysError(f"--seeds: expected a count (3) or a comma list (0,5,9), got {text!r}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    import shlex

    from recsys.config import load_config
    from recsys.tracking import Tracker
    from training.compare import CompareSpec, run_compare

    config = load_config(args.config)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{Path(args.config).stem}"
    spec = CompareSpec(
        config,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        seeds=_seed_list(args.seeds, config.train.seed),
        out_dir=out,
        data_dir=Path(args.data) if args.data else None,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        workers=args.workers,
        address=args.address,
        epochs=args.epochs,
        peer_files=[Path(f) for f in args.peer_results],
        n_boot=args.bootstrap,
        command="recsys " + shlex.join(sys.argv[1:]),
        reevaluate=args.reevaluate,
        min_rows=args.min_rows,
    )
    console.attach_log_file(out / "compare.log")
    result = run_compare(spec, progress=not args.no_progress, tracker=Tracker.from_config(config, args.tracking_uri))
    failed = [r.name for r in result.records if r.status != "ok"]
    print(f"report: {result.report_md} and {result.report_html}; every run: {result.results_json}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (see the report's run table)")
    return 1 if failed else 0


# --------------------------------------------------------------------------- parser

Handler = Callable[[argparse.Namespace], int]

#: Sub-command -> (summary in the command list, description in its own --help; None: the summary).
ABOUT: dict[str, tuple[str, str | None]] = {
    "show": ("print the fully resolved config (defaults filled in)", None),
    "check": (
        "validate a dataset directory; reports every problem at once",
        "Validate a dataset directory against the contract (docs/dataset-format.md) and the "
        "features the config declares. Exit 0 when usable, 1 on errors (or warnings with --strict).",
    ),
    "make-default": (
        "write the built-in multimodal dataset (real PNG/WAV/text media)",
        "Write a synthetic dataset with planted shared (all-modality) and private (one-modality) "
        "signal, cold items and missing modalities; deterministic by seed.",
    ),
    "encode": (
        "encode every item with the frozen encoders (cached; re-runs encode only changes)",
        "Run the configured frozen encoders over every item's title, image and audio on Ray Data (per "
        "modality a pool of encoders.actors actors, each loading its encoder once) and cache the vectors as "
        "Parquet keyed by item id and content hash. Local Ray, or a cluster via --address.",
    ),
    "train": (
        "train a model with Ray Train (local Ray, or a cluster via --address)",
        "Train with Ray Train + Ray Data: DDP over gloo on CPU, validation every epoch, best and "
        "latest checkpoints under <train.storage_path>/<run name>/, early stopping, resume.",
    ),
    "demo": (
        "the main job on the built-in dataset: make data, validate, encode, train, evaluate",
        "Run the main job end to end on the built-in dataset, writing everything under --out.",
    ),
    "export": (
        "compile a checkpoint's scorer to ONNX (scorer.onnx in the checkpoint; serve.scorer onnx uses it)",
        "Export the per-request part of the checkpoint's model (user side, attention, head; history padded to "
        "features.max_history) to ONNX, write scorer.onnx and scorer.json (hashes) into the checkpoint "
        "directory and check that ONNX Runtime scores canary requests as the eager model does (within 1e-5).",
    ),
    "evaluate": (
        "evaluate a checkpoint: AUC/GAUC/logloss/calibration per segment, oracle, modal attention",
        "Evaluate a checkpoint on a split: overall, warm/cold items, users by history length, items "
        "missing a modality; the oracle when the data has true_prob; modal attention per modality and item "
        "category for models that have it. Prints a table and writes metrics.json.",
    ),
    "compare": (
        "train models x seeds with Ray, evaluate on test, write a report with tables and plots",
        "Train every listed model with every seed (Ray, as `recsys train`), evaluate each best checkpoint "
        "on the same test split and write report.md/report.html/results.json/plots into --out. Re-running the "
        "same command resumes: finished runs are reused. Exit 1 when a run failed (the report says which).",
    ),
}


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler
) -> argparse.ArgumentParser:
    """The sub-command ``name``, run by ``handler``, described as :data:`ABOUT` says."""
    summary, description = ABOUT[name]
    parser = commands.add_parser(name, help=summary, description=description)
    parser.set_defaults(func=handler)
    return parser


def _add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0 (argparse names the option in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """How the built-in dataset is drawn: ``--seed``, ``--size`` (and ``--no-progress``)."""
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="dataset random seed (default 0)")
    parser.add_argument(
        "--size",
        choices=["small", "medium", "large"],
        default="small",
        help="small: the demo (~60k impressions); medium: benchmarks (>=1M impressions); large: scaling "
        "benchmarks (12M impressions, medium's catalogue and media)",
    )
    _add_no_progress(parser)


def _add_tracking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (overrides tracking.uri; default: MLFLOW_TRACKING_URI, else ./mlruns)",
    )


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    """Where the dataset and its encoder cache are, overriding the config."""
    parser.add_argument("--data", help="dataset directory (overrides data.path)")
    parser.add_argument("--cache-dir", help="encoder cache (overrides encoders.cache_dir)")


def _add_ray_options(parser: argparse.ArgumentParser, per_run: bool) -> None:
    """The Ray cluster and the Ray Train workers of a training run (``per_run``: of each of several)."""
    each = " per run" if per_run else ""
    local = "one local Ray for all runs" if per_run else "local Ray"
    parser.add_argument("--address", help=f"Ray cluster address (e.g. ray://head:10001 or head:6379); default: {local}")
    parser.add_argument("--workers", type=int, help=f"Ray Train workers{each} (overrides train.workers)")


class RunOptions(TypedDict):
    """What :func:`_add_inputs` and :func:`_add_ray_options` parse, as ``run_training`` keywords."""

    data_dir: str | None
    cache_dir: str | None
    address: str | None
    workers: int | None


def _run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(data_dir=args.data, cache_dir=args.cache_dir, address=args.address, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Adversarial multimodal CTR prediction (MARN): data, encoders, training, evaluation, serving.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"recsys {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="stream Ray's and the libraries' logs on the console too (they always go to the run's log file)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = sub.add_parser("config", help="inspect experiment configs")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = _command(config_sub, "show", _cmd_config_show)
    show.add_argument("file", help="experiment YAML file")

    data = sub.add_parser("data", help="dataset directories: check, make the built-in one")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = _command(data_sub, "check", _cmd_data_check)
    check.add_argument("dir", help="dataset directory")
    check.add_argument("--config", help="experiment YAML whose declared features are checked too")
    check.add_argument(
        "--strict", action="store_true", help="treat warnings (e.g. missing or undecodable media files) as errors"
    )

    make = _command(data_sub, "make-default", _cmd_data_make_default)
    make.add_argument("--out", required=True, help="output directory")
    _add_dataset_options(make)

    encode = _command(sub, "encode", _cmd_encode)
    encode.add_argument("data_dir", help="dataset directory")
    encode.add_argument("--config", required=True, help="experiment YAML (its encoders section)")
    encode.add_argument("--cache-dir", help="override encoders.cache_dir")
    encode.add_argument(
        "--address", help="Ray cluster address (e.g. head:6379); default: train.address, else a local Ray"
    )
    _add_no_progress(encode)

    train = _command(sub, "train", _cmd_train)
    train.add_argument("--config", required=True, help="experiment YAML")
    _add_ray_options(train, per_run=False)
    train.add_argument("--run-name", help="run name (default: <model>-<time>); reuse it with --resume")
    train.add_argument("--resume", action="store_true", help="continue the run --run-name from its latest checkpoint")
    _add_inputs(train)
    train.add_argument("--storage", help="checkpoint storage path (overrides train.storage_path)")
    _add_tracking(train)

    serve = sub.add_parser(
        "serve",
        help="score candidates over HTTP (FastAPI + uvicorn) from a checkpoint",
        description="Run the scoring service: POST /v1/score, item registration (POST /v1/items), user state, "
        "hot model swap (POST /v1/admin/reload), /healthz, /readyz, /metrics and OpenAPI docs at /docs. "
        "Defaults come from the checkpoint config's serve section.",
    )
    serve.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. runs/<run>/best)")
    serve.add_argument("--host", help="interface to listen on (default serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default serve.port, 8000)")
    serve.add_argument("--workers", type=int, help="uvicorn worker processes (default serve.workers)")
    serve.add_argument(
        "--state-dir", help="registered items, user state and the active model (default serve.state_dir)"
    )
    serve.add_argument(
        "--state-url",
        help="where that state lives: sqlite:///PATH, or redis://HOST:PORT/DB shared by several hosts "
        "(default serve.state_url: SQLite in the state directory; a password in it would show in the process list)",
    )
    serve.add_argument("--data", help="dataset directory whose clicks seed the user state (default data.path)")
    serve.add_argument(
        "--api-key-file",
        help="file holding the API key that write and admin routes need (default serve.api_key_file; "
        "the RECSYS_API_KEY environment variable wins over both)",
    )
    serve.add_argument("--api-key", action=_RefuseApiKeyOnCommandLine, help=argparse.SUPPRESS)
    serve.add_argument("--max-candidates", type=int, help="largest candidate list (default serve.max_candidates)")
    serve.add_argument("--max-body-mb", type=float, help="largest request body in MiB (default serve.max_body_mb)")
    serve.add_argument(
        "--scorer", help="eager (the PyTorch model) or onnx (compiled, ONNX Runtime); default serve.scorer"
    )
    serve.add_argument(
        "--backend",
        help="local (uvicorn workers on this host) or ray (the same app as a Ray Serve deployment); "
        "default serve.backend, local",
    )
    serve.add_argument(
        "--address", help="with --backend ray: the Ray cluster (e.g. head:6379); default: a local Ray started here"
    )
    serve.add_argument("--min-replicas", type=int, help="ray backend: fewest replicas (default serve.min_replicas)")
    serve.add_argument("--max-replicas", type=int, help="ray backend: most replicas (default serve.max_replicas)")
    serve.add_argument("--replica-cpus", type=float, help="ray backend: CPUs per replica (default serve.replica_cpus)")
    serve.add_argument(
        "--max-replicas-per-node",
        type=int,
        help="ray backend: at most this many replicas on one node (default serve.max_replicas_per_node, no limit)",
    )
    serve.add_argument(
        "--proxy-location",
        help="ray backend: every_node (a proxy on each node) or head_only; default serve.proxy_location",
    )
    serve.add_argument(
        "--ingress",
        help="ray backend: haproxy (Ray Serve's HAProxy ingress) or proxy (its Python proxy); default serve.ingress",
    )
    serve.set_defaults(func=_cmd_serve)

    export = _command(sub, "export", _cmd_export)
    export.add_argument("checkpoint", help="checkpoint directory (e.g. runs/<run>/best)")

    demo = _command(sub, "demo", _cmd_demo)
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    demo.add_argument("--config", default="configs/default.yaml", help="experiment YAML (default configs/default.yaml)")
    demo.add_argument("--workers", type=int, help="Ray Train workers (default: train.workers of the config)")
    _add_dataset_options(demo)
    _add_tracking(demo)

    evaluate = _command(sub, "evaluate", _cmd_evaluate)
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. <run>/best)")
    evaluate.add_argument(
        "--data",
        help="dataset directory, featurised with the checkpoint's feature map and item "
        "table (default: the run's prepared split beside the checkpoint)",
    )
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test", help="split (default test)")
    evaluate.add_argument(
        "--ray-min-rows",
        type=_non_negative_int,
        help="score the prepared split on Ray Data when it has at least this many rows (default: the checkpoint "
        "config's evaluation.ray_min_rows; 0 = always on Ray)",
    )
    evaluate.add_argument(
        "--actors", type=_positive_int, help="scoring actors on Ray Data (default: evaluation.actors)"
    )
    evaluate.add_argument(
        "--address", help="Ray cluster address for scoring on Ray Data (default: train.address, else a local Ray)"
    )
    evaluate.add_argument("--out", help="output directory for metrics.json (default <checkpoint>/../eval-<split>)")
    evaluate.add_argument(
        "--tracking-uri", help="MLflow store of the checkpoint's run (default: the one recorded in <run>/mlflow.json)"
    )

    compare = _command(sub, "compare", _cmd_compare)
    compare.add_argument("--config", required=True, help="experiment YAML (model.name and train.seed are set per run)")
    compare.add_argument(
        "--models", required=True, help="comma list, e.g. lr,dnn,din,concat,man,man_d1,marn,marn_paper"
    )
    compare.add_argument(
        "--seeds", default="3", help="a count N (seeds train.seed .. train.seed+N-1) or a comma list (default 3)"
    )
    compare.add_argument("--out", help="report directory (default runs/compare-<config name>)")
    _add_inputs(compare)
    _add_ray_options(compare, per_run=True)
    compare.add_argument("--epochs", type=int, help="override train.epochs")
    compare.add_argument(
        "--peer-results",
        action="append",
        default=[],
        metavar="FILE",
        help="JSON results of an external model to add as a row (repeatable; format in recsys/reports/peers.py)",
    )
    compare.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples of the paired test (default 1000)"
    )
    compare.add_argument(
        "--min-rows",
        type=int,
        default=30,
        help="segments with fewer test rows show their count but no metrics in the report (default 30)",
    )
    _add_no_progress(compare)
    _add_tracking(compare)
    compare.add_argument(
        "--reevaluate",
        action="store_true",
        help="evaluate finished runs again from their best checkpoints (after a change to the "
        "evaluation); nothing is retrained",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `recsys` console command. Returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console.setup(verbose=args.verbose)
    try:
        return args.func(args)
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        console.reset()


if __name__ == "__main__":
    sys.exit(main())
