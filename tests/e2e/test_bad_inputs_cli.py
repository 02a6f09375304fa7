"""A catalogue of bad inputs: each one must be refused with a message naming the option, field, file or id,
the documented exit code and never a traceback.

Most cases run the real `recsys` command in a subprocess (as a user would); config and dataset mistakes whose
public interface is a function (:func:`recsys.config.load_config`, :func:`recsys.data.validate.validate_dataset`)
are checked in-process, grouped, because each subprocess costs seconds of imports.

Exit codes: 2 for bad input (``error: ...``), and 1 for `recsys data check` on an unusable dataset (or, with
``--strict``, one with warnings such as an undecodable media file): that command's documented contract.

Everything runs on the tiny dataset of tests/support (precomputed vectors, a few real media files) and a
checkpoint trained on it without Ray in seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile
from conftest import run_cli
from PIL import Image

from recsys.config import load_config
from recsys.data.validate import validate_dataset
from recsys.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class Tiny:
    """The tiny dataset (with media), its config and a checkpoint trained on it."""

    data: Path
    config: Path
    checkpoint: Path


def _noise_image(size: tuple[int, int], seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from support.tiny_dataset import train_without_ray, write_tiny_dataset

    root = tmp_path_factory.mktemp("bad-inputs")
    config_path = write_tiny_dataset(root)
    data = root / "data"
    (data / "images").mkdir()
    (data / "audio").mkdir()
    _noise_image((32, 32), 0).save(data / "images" / "1.png")
    _noise_image((64, 48), 1).save(data / "images" / "2.jpg", quality=90)
    soundfile.write(data / "audio" / "1.wav", np.sin(np.arange(4000) / 5.0).astype(np.float32) * 0.3, 8000)
    items = pl.read_parquet(data / "items.parquet")
    ids = items["item_id"].to_list()
    items.with_columns(
        pl.Series(
            "image_path", ["images/1.png" if i == ids[0] else "images/2.jpg" if i == ids[1] else None for i in ids]
        ),
        pl.Series("audio_path", ["audio/1.wav" if i == ids[0] else None for i in ids]),
    ).write_parquet(data / "items.parquet")
    report = validate_dataset(data, load_config(config_path))
    assert report.ok and not report.problems, report.format()  # the unbroken dataset is clean
    config = load_config(config_path)
    run = train_without_ray(config, data, root / "runs" / "tiny", steps=2)
    return Tiny(data, config_path, run.best_checkpoint)


# --------------------------------------------------------------------------- ways to break a dataset copy


def _rewrite(name: str, change: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    def breaker(data: Path) -> None:
        path = data / name
        change(pl.read_parquet(path)).write_parquet(path)

    return breaker


def _at_row(
    column: str, row: int, value: object, dtype: pl.DataType | None = None
) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """``column`` with ``value`` at ``row`` (cast to ``dtype`` first, e.g. to hold a NaN)."""

    def change(df: pl.DataFrame) -> pl.DataFrame:
        values = df[column].cast(dtype or df[column].dtype).to_list()
        values[row] = value
        return df.with_columns(pl.Series(column, values, dtype=dtype or df[column].dtype))

    return change


def _write(relative: str, make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """Replace the dataset file ``relative`` by ``make(its bytes)``."""

    def breaker(data: Path) -> None:
        path = data / relative
        path.write_bytes(make(path.read_bytes()))

    return breaker


def _corrupt_middle(raw: bytes) -> bytes:
    middle = len(raw) // 2
    return raw[:middle] + b"\xff" * 64 + raw[middle + 64 :]


NAN_LABEL = _rewrite("interactions.parquet", _at_row("label", 3, float("nan"), pl.Float64))
CORRUPT_PNG = _write("images/1.png", _corrupt_middle)
TRUNCATED_JPEG = _write("images/2.jpg", lambda raw: raw[: len(raw) // 2])
CORRUPT_AUDIO = _write("audio/1.wav", lambda raw: b"RIFF" + bytes(range(256)) * 4)
NO_DEPT_COLUMN = _rewrite("items.parquet", lambda df: df.drop("dept"))
UNKNOWN_ITEM = _rewrite("interactions.parquet", _at_row("item_id", 5, 987654))


# --------------------------------------------------------------------------- the CLI catalogue


@dataclass(frozen=True)
class CliCase:
    """``recsys <args>`` (placeholders: {checkpoint} {data} {config} {tiny_config} {tmp}) must exit ``code`` with
    ``fragment`` in its output. ``config``: YAML text written to {config}; ``breaks``: applied to {data}, a copy
    of the tiny dataset."""

    args: str
    fragment: str
    code: int = 2
    config: str | None = None
    breaks: Callable[[Path], None] | None = None
    one_line: bool = True  # the error is one line


#: Should a case ever pass validation, the server would start: on port 1 (the port cases override it), never 8000.
SERVE = "serve --checkpoint {checkpoint} --state-dir {tmp}/state --port 1 "

CLI_CASES = {
    # recsys serve: every option is validated like the same key of the config's serve section
    "serve-port-too-large": CliCase(SERVE + "--port 99999", "serve.port: Input should be less than or equal to 65535"),
    "serve-port-negative": CliCase(SERVE + "--port -1", "serve.port: Input should be greater than or equal to 1"),
    "serve-workers-0": CliCase(SERVE + "--workers 0", "serve.workers: Input should be greater than or equal to 1"),
    "serve-max-candidates-negative": CliCase(SERVE + "--max-candidates -5", "serve.max_candidates: Input should be"),
    "serve-max-candidates-0": CliCase(SERVE + "--max-candidates 0", "serve.max_candidates: Input should be"),
    "serve-max-body-tiny": CliCase(SERVE + "--max-body-mb 0.0001", "serve.max_body_mb: Input should be greater"),
    "serve-max-body-0": CliCase(SERVE + "--max-body-mb 0", "serve.max_body_mb: Input should be greater"),
    "serve-max-body-nan": CliCase(SERVE + "--max-body-mb nan", "serve.max_body_mb: Input should be a finite number"),
    "serve-max-body-inf": CliCase(SERVE + "--max-body-mb inf", "serve.max_body_mb: Input should be a finite number"),
    "serve-data-without-interactions": CliCase(SERVE + "--data {tmp}", "--data: {tmp} has no interactions"),
    "serve-state-url-unreachable": CliCase(  # nothing listens on port 1: the service does not start
        SERVE + "--state-url redis://127.0.0.1:1/0",
        "serve.state_url: cannot reach the state store redis://127.0.0.1:1/0: unreachable",
    ),
    # recsys config show: the config file itself
    "config-empty": CliCase("config show {config}", "{config}: empty config file", config=""),
    "config-comments-only": CliCase("config show {config}", "{config}: empty config file", config="# all\n\n# gone\n"),
    "config-list-top-level": CliCase(
        "config show {config}", "top level must be a mapping", config="- train\n- model\n"
    ),
    "config-scalar-top-level": CliCase("config show {config}", "top level must be a mapping", config="marn\n"),
    "config-truncated": CliCase(
        "config show {config}", "{config}: invalid YAML: line 3", config="train:\n  epochs: [1, 2\n"
    ),
    "config-is-a-directory": CliCase("config show {tmp}", "{tmp}: cannot read config file"),
    # recsys train / evaluate / encode / compare / data make-default: bad arguments and missing files
    "train-workers-0": CliCase("train --config {tiny_config} --workers 0", "train.workers: must be >= 1, got 0"),
    "evaluate-missing-checkpoint": CliCase("evaluate --checkpoint {tmp}/nope", "{tmp}/nope: checkpoint directory"),
    "evaluate-unknown-split": CliCase(
        "evaluate --checkpoint {checkpoint} --split tset", "argument --split: invalid choice: 'tset'", one_line=False
    ),
    "encode-missing-config": CliCase(
        "encode {data} --config {tmp}/missing.yaml", "missing.yaml: config file not found"
    ),
    "encode-dataset-missing-column": CliCase(
        "encode {data} --config {tiny_config}",
        "items.parquet[dept]: missing column (needed by features.item_categorical)",
        breaks=NO_DEPT_COLUMN,
        one_line=False,  # the dataset report: one line per problem
    ),
    "compare-epochs-0": CliCase(
        "compare --config {tiny_config} --models marn --epochs 0 --out {tmp}/cmp",
        "--epochs: Input should be greater than or equal to 1 (got 0)",
    ),
    "demo-workers-0": CliCase(
        "demo --workers 0 --out {tmp}/demo --no-progress",
        "--workers: Input should be greater than or equal to 1 (got 0)",  # was silently the config's value
    ),
    "make-default-negative-seed": CliCase(
        "data make-default --out {tmp}/d --seed -1", "argument --seed: must be >= 0, got -1", one_line=False
    ),
    # recsys data check: exit 1 on an unusable dataset, or with --strict on warnings (undecodable media)
    "data-check-bad-config": CliCase(
        "data check {data} --config {config}",
        "line 2: features.max_history: Input should be a valid integer",
        config="features:\n  max_history: lots\n",
        one_line=False,  # "N problem(s) in the config:" then one line per problem
    ),
    "data-check-nan-label": CliCase(
        "data check {data}",
        "interactions.parquet[label]: wrong dtype Float64, expected an integer",
        code=1,
        breaks=NAN_LABEL,
        one_line=False,
    ),
    "data-check-corrupt-png": CliCase(
        "data check {data} --strict",
        "items.parquet[image_path]: 1 image file(s) cannot be decoded (first: images/1.png: ",
        code=1,
        breaks=CORRUPT_PNG,
        one_line=False,
    ),
    "data-check-corrupt-audio": CliCase(
        "data check {data} --strict",
        "items.parquet[audio_path]: 1 audio file(s) cannot be decoded (first: audio/1.wav: ",
        code=1,
        breaks=CORRUPT_AUDIO,
        one_line=False,
    ),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_refuses_bad_input(name: str, tiny: Tiny, tmp_path: Path) -> None:
    case = CLI_CASES[name]
    data = tmp_path / "data"
    shutil.copytree(tiny.data, data)
    if case.breaks is not None:
        case.breaks(data)
    config = tmp_path / "bad.yaml"
    if case.config is not None:
        config.write_text(case.config)
    values = {
        "checkpoint": str(tiny.checkpoint),
        "data": str(data),
        "config": str(config),
        "tiny_config": str(tiny.config),
        "tmp": str(tmp_path),
    }
    args = [part.format(**values) for part in case.args.split()]
    proc = run_cli(*args, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    fragment = case.fragment.format(**values)
    assert proc.returncode == case.code, f"exit {proc.returncode}, expected {case.code}\n{output[-3000:]}"
    assert fragment in output, f"{fragment!r} not in:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    if case.code == 2 and case.one_line:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and fragment in errors[0], proc.stderr[-3000:]


# --------------------------------------------------------------------------- configs, in-process

CONFIG_CASES = {
    "unknown-key": ("model:\n  embeding_dim: 16\n", "line 2: unknown key 'model.embeding_dim'; did you mean"),
    "wrong-type": ("train:\n  epochs: five\n", "line 2: train.epochs: Input should be a valid integer"),
    "out-of-range": ("model:\n  dropout: 1.5\n", "line 2: model.dropout: Input should be less than 1"),
    "duplicate-key": ("train:\n  epochs: 3\n  epochs: 4\n", "invalid YAML: line 3, column 3: duplicate key 'epochs'"),
    "nan-learning-rate": ("train:\n  learning_rate: .nan\n", "train.learning_rate: Input should be a finite number"),
    "inf-weight-decay": ("train:\n  weight_decay: .inf\n", "train.weight_decay: Input should be a finite number"),
    "null-section": ("train:\n", "line 1: train: Input should be a valid dictionary"),
    "unknown-model-name": ("model:\n  name: transformer\n", "line 2: model.name: Input should be 'marn'"),
    "not-utf8": (b"model:\n  name: \xff\xfe\n", "cannot read config file: 'utf-8' codec can't decode"),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_load_config_refuses_bad_config(name: str, tmp_path: Path) -> None:
    text, fragment = CONFIG_CASES[name]
    path = tmp_path / f"{name}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:  # the CLI prints it as "error: ..." and exits 2
        load_config(path)
    assert str(err.value).startswith(f"{path}: "), err.value
    assert fragment in str(err.value), err.value


# --------------------------------------------------------------------------- datasets, in-process

DATASET_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "truncated-jpeg": (TRUNCATED_JPEG, "warning", "items.parquet[image_path]: 1 image file(s) cannot be decoded"),
    "audio-without-samples": (
        _write("audio/1.wav", lambda raw: raw[:44]),
        "warning",
        "(first: audio/1.wav: holds no audio samples)",
    ),
    "missing-items-file": (lambda data: (data / "items.parquet").unlink(), "error", "items.parquet: missing file"),
    "corrupt-interactions-parquet": (
        _write("interactions.parquet", lambda raw: raw[: len(raw) // 3]),
        "error",
        "interactions.parquet: cannot read as Parquet",
    ),
    "unknown-item-id": (UNKNOWN_ITEM, "error", "interactions.parquet[item_id]: 1 interaction(s) with 1 item id(s) not"),
    "unknown-user-id": (
        _rewrite("interactions.parquet", _at_row("user_id", 2, 424242)),
        "error",
        "interactions.parquet[user_id]: 1 interaction(s) with 1 user id(s) not in users.parquet: 424242",
    ),
    "duplicate-item-id": (
        _rewrite("items.parquet", lambda df: pl.concat([df, df.head(1)])),
        "error",
        "items.parquet[item_id]: 1 duplicate id(s)",
    ),
    "nan-context-number": (
        _rewrite("interactions.parquet", _at_row("price", 7, float("nan"))),
        "error",
        "interactions.parquet[price]: 1 NaN/inf/null value(s) at rows: 7",
    ),
    "nan-in-vector": (
        _rewrite(
            "item_features/image.parquet", lambda df: _at_row("vector", 0, [float("nan")] * len(df["vector"][0]))(df)
        ),
        "error",
        "item_features/image.parquet[vector]: 1 vector(s) with NaN/inf at item_id",
    ),
}


@pytest.mark.parametrize("name", list(DATASET_CASES))
def test_validate_dataset_reports_bad_dataset(name: str, tiny: Tiny, tmp_path: Path) -> None:
    breaks, severity, fragment = DATASET_CASES[name]
    data = tmp_path / "data"
    shutil.copytree(tiny.data, data)
    breaks(data)
    report = validate_dataset(data, load_config(tiny.config))
    text = report.format()
    assert any(p.severity == severity and fragment in str(p) for p in report.problems), text
    if severity == "error":  # `recsys encode`/`train`/`evaluate` stop with exit 2 on these
        with pytest.raises(DatasetError):
            report.raise_for_errors()
    else:  # a masked modality, like a missing media file: usable, reported
        assert report.ok and "BytesIO" not in text


def test_the_catalogue_is_mostly_cli() -> None:
    n_cli, n_total = len(CLI_CASES), len(CLI_CASES) + len(CONFIG_CASES) + len(DATASET_CASES)
    assert n_total >= 30 and 2 * n_cli >= n_total, (n_cli, n_total)
