"""Validate a dataset directory against the contract before any heavy work.

:func:`validate_dataset` collects EVERY problem it can find in one pass (it never stops at the
first) and returns a :class:`ValidationReport`. Each problem names the file, the column and a
few offending ids. Errors make the dataset unusable; warnings (e.g. a missing or undecodable media
file, whose item is then encoded without that modality) are reported but do not stop training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from recsys.config import ExperimentConfig, FeaturesConfig
from recsys.data.dataset import MEDIA_COLUMNS, SPLITS, DatasetPaths, dataset_paths
from recsys.errors import DatasetError

Severity = Literal["error", "warning"]
MAX_IDS_SHOWN = 5


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the dataset, precise enough to fix without reading code."""

    severity: Severity
    file: str
    column: str | None
    message: str
    ids: tuple[object, ...] = ()
    n_ids: int = 0

    def __str__(self) -> str:
        where = f"{self.file}[{self.column}]" if self.column else self.file
        text = f"{self.severity}: {where}: {self.message}"
        if self.ids:
            shown = ", ".join(str(i) for i in self.ids)
            more = f" (showing {len(self.ids)} of {self.n_ids})" if self.n_ids > len(self.ids) else ""
            text += f": {shown}{more}"
        return text


@dataclass
class ValidationReport:
    """All problems found in one dataset directory."""

    root: Path
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def format(self) -> str:
        """A human-readable report, errors first."""
        head = (
            f"dataset {self.root}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
            if self.problems
            else f"dataset {self.root}: OK"
        )
        body = [f"  - {p}" for p in self.errors + self.warnings]
        return "\n".join([head, *body])

    def raise_for_errors(self) -> None:
        """Raise one DatasetError listing every error (and warning) when there is any error."""
        if not self.ok:
            raise DatasetError(self.format())


class _Collector:
    """Accumulates problems for one file."""

    def __init__(self, report: ValidationReport, file: str) -> None:
        self.report, self.file = report, file

    def add(self, severity: Severity, column: str | None, message: str, ids: Iterable[object] = ()) -> None:
        ids = list(ids)
        self.report.problems.append(Problem(severity, self.file, column, message, tuple(ids[:MAX_IDS_SHOWN]), len(ids)))

    def error(self, column: str | None, message: str, ids: Iterable[object] = ()) -> None:
        self.add("error", column, message, ids)

    def error_counted(self, column: str | None, message: str, first_ids: list[object], n_ids: int) -> None:
        """An error with the first of ``n_ids`` offending ids (found without listing them all)."""
        shown = tuple(first_ids[:MAX_IDS_SHOWN])
        self.report.problems.append(Problem("error", self.file, column, message, shown, max(n_ids, len(shown))))

    def warning(self, column: str | None, message: str, ids: Iterable[object] = ()) -> None:
        self.add("warning", column, message, ids)


# --------------------------------------------------------------------------- dtype rules

DtypeRule = tuple[str, Callable[[pl.DataType], bool]]
INTEGER: DtypeRule = ("an integer (int64)", lambda d: d.is_integer())
LABEL: DtypeRule = ("an integer or boolean (int8 0/1)", lambda d: d.is_integer() or d == pl.Boolean)
STRING: DtypeRule = ("a string", lambda d: d == pl.String or d == pl.Categorical or d == pl.Null)
NUMERIC: DtypeRule = ("numeric", lambda d: d.is_numeric() or d == pl.Boolean)
CATEGORICAL: DtypeRule = (
    "a string or integer",
    lambda d: d in (pl.String, pl.Categorical, pl.Boolean) or d.is_integer(),
)
LIST: DtypeRule = ("a list (e.g. list<string>)", lambda d: isinstance(d, (pl.List, pl.Array)))
VECTOR: DtypeRule = (
    "a list of floats (list<float32>)",
    lambda d: isinstance(d, (pl.List, pl.Array)) and (d.inner.is_float() or d.inner.is_integer()),
)


def _read_schema(path: Path, out: _Collector) -> pl.Schema | None:
    try:
        return pl.scan_parquet(path).collect_schema()
    except Exception as exc:  # corrupt or non-Parquet file: polars raises several types
        out.error(None, f"cannot read as Parquet ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        return None


def _declared(
    required: dict[str, DtypeRule], features: FeaturesConfig, groups: dict[str, DtypeRule]
) -> tuple[dict[str, DtypeRule], dict[str, str]]:
    """``required`` plus the columns each ``features.<group>`` lists, and why each of those is needed."""
    required = dict(required)
    why: dict[str, str] = {}
    for group, rule in groups.items():
        for name in getattr(features, group):
            required[name], why[name] = rule, f"features.{group}"
    return required, why


def _check_columns(
    schema: pl.Schema,
    out: _Collector,
    required: dict[str, DtypeRule],
    optional: dict[str, DtypeRule],
    why: dict[str, str] | None = None,
) -> set[str]:
    """Check presence and dtype; returns the columns that are present with a usable dtype."""
    usable: set[str] = set()
    for column, (expected, ok) in {**optional, **required}.items():
        reason = f" (needed by {why[column]})" if why and column in why else ""
        if column not in schema:
            if column in required:
                out.error(column, f"missing column{reason}; columns present: {', '.join(schema.names())}")
            continue
        if not ok(schema[column]):
            out.error(column, f"wrong dtype {schema[column]}, expected {expected}{reason}")
            continue
        usable.add(column)
    return usable


def _null_rows(df: pl.DataFrame, column: str, id_column: str | None, out: _Collector) -> None:
    nulls = df.filter(pl.col(column).is_null())
    if nulls.height:
        ids = nulls[id_column].to_list() if id_column and id_column != column else []
        msg = f"{nulls.height} null value(s)" + (f" at {id_column}" if ids else "")
        out.error(column, msg, ids)


def _duplicates(df: pl.DataFrame, column: str, out: _Collector) -> None:
    dup = df.group_by(column).len().filter(pl.col("len") > 1).sort(column)
    if dup.height:
        out.error(column, f"{dup.height} duplicate id(s)", dup[column].to_list())


# --------------------------------------------------------------------------- per file


def _validate_items(paths: DatasetPaths, config: ExperimentConfig, report: ValidationReport) -> pl.DataFrame | None:
    out = _Collector(report, paths.items.name)
    if not paths.items.is_file():
        out.error(None, "missing file (the item catalogue is required)")
        return None
    schema = _read_schema(paths.items, out)
    if schema is None:
        return None
    required, why = _declared(
        {"item_id": INTEGER}, config.features, {"item_categorical": CATEGORICAL, "item_list": LIST}
    )
    optional = {column: STRING for column in MEDIA_COLUMNS.values()}
    usable = _check_columns(schema, out, required, optional, why)
    if "item_id" not in usable:
        return None
    items = pl.read_parquet(paths.items, columns=sorted(usable))
    _null_rows(items, "item_id", None, out)
    items = items.filter(pl.col("item_id").is_not_null())
    _duplicates(items, "item_id", out)
    for modality, column in MEDIA_COLUMNS.items():
        if column == "title" or column not in usable:
            continue
        rows = items.filter(pl.col(column).is_not_null())
        missing, unreadable = [], []
        first_reason = ""
        reasons: dict[Path, str | None] = {}  # one check per file, however many items share it
        for iid, rel in zip(rows["item_id"], rows[column]):
            path = paths.media(rel)
            if not path.is_file():
                missing.append(iid)
                continue
            if path not in reasons:
                reasons[path] = media_problem(modality, path)
            if reasons[path] is not None:
                first_reason = first_reason or f"{rel}: {reasons[path]}"
                unreadable.append(iid)
        if missing:
            out.warning(
                column,
                f"{len(missing)} {modality} file(s) not found; those items get no {modality} vector (masked)",
                missing,
            )
        if unreadable:
            out.warning(
                column,
                f"{len(unreadable)} {modality} file(s) cannot be decoded (first: {first_reason}); "
                f"those items get no {modality} vector (masked)",
                unreadable,
            )
    return items


def media_problem(modality: str, path: Path) -> str | None:
    """Why the ``modality`` ("image" or "audio") file at ``path`` cannot be decoded; None when it can.

    Cheap, and by the same libraries as ``recsys.encoders.media`` (imported here without torch): an image is
    decoded for real (a JPEG at reduced scale, PIL's draft mode, which still reads every byte, so a truncated
    file fails), an audio file's header is read by libsndfile (format, sample rate, frame count).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if modality == "image":
            with Image.open(path) as image:
                image.draft(None, (1, 1))  # JPEG: decode at 1/8 scale; other formats: a no-op
                image.load()
        else:
            import soundfile

            if soundfile.info(str(path)).frames == 0:
                return "holds no audio samples"
    except UnidentifiedImageError:
        return "not a recognised image format"
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, LibsndfileError, ...)
        text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
        return " ".join(str(text).split())[:200]
    return None


def _validate_users(paths: DatasetPaths, config: ExperimentConfig, report: ValidationReport) -> pl.DataFrame | None:
    out = _Collector(report, paths.users.name)
    if not paths.users.is_file():
        if config.features.user_categorical:
            out.error(
                None,
                f"missing file, needed by features.user_categorical ({', '.join(config.features.user_categorical)})",
            )
        return None
    schema = _read_schema(paths.users, out)
    if schema is None:
        return None
    required, why = _declared({"user_id": INTEGER}, config.features, {"user_categorical": CATEGORICAL})
    usable = _check_columns(schema, out, required, {}, why)
    if "user_id" not in usable:
        return None
    users = pl.read_parquet(paths.users, columns=["user_id"])
    _null_rows(users, "user_id", None, out)
    _duplicates(users.filter(pl.col("user_id").is_not_null()), "user_id", out)
    return users


def _validate_interactions(
    paths: DatasetPaths,
    config: ExperimentConfig,
    items: pl.DataFrame | None,
    users: pl.DataFrame | None,
    report: ValidationReport,
) -> None:
    out = _Collector(report, paths.interactions.name)
    if not paths.interactions.is_file():
        out.error(None, "missing file (impressions with outcomes are required)")
        return
    schema = _read_schema(paths.interactions, out)
    if schema is None:
        return
    required, why = _declared(
        {"user_id": INTEGER, "item_id": INTEGER, "timestamp": INTEGER, "label": LABEL},
        config.features,
        {"context_categorical": CATEGORICAL, "context_numeric": NUMERIC},
    )
    usable = _check_columns(schema, out, required, {"split": STRING}, why)
    if config.data.split.method == "column" and "split" not in schema:
        out.error("split", "missing column, needed by data.split.method: column")
    # Streamed (polars' streaming engine): one pass counts every problem, in memory bounded by a row
    # group, not by the table; only a check that fails reads its first offending rows or values again.
    lf = pl.scan_parquet(paths.interactions).select(sorted(usable)).with_row_index("row")
    bad: dict[str, pl.Expr] = {}  # check -> whether a row fails it
    for column in ("user_id", "item_id", "timestamp", "label"):
        if column in usable:
            bad[f"null {column}"] = pl.col(column).is_null()
    if "label" in usable:
        bad["label"] = pl.col("label").is_not_null() & ~pl.col("label").cast(pl.Int64).is_in([0, 1])
    for column, known in (("item_id", items), ("user_id", users)):
        if column in usable and known is not None:
            bad[column] = pl.col(column).is_not_null() & ~pl.col(column).is_in(known[column].implode())
    if "split" in usable:
        bad["split"] = pl.col("split").is_null() | ~pl.col("split").is_in(list(SPLITS))
    numeric = [c for c in config.features.context_numeric if c in usable and schema[c].is_float()]
    for column in numeric:
        bad[f"finite {column}"] = ~pl.col(column).is_finite() | pl.col(column).is_null()
    totals = [pl.len().alias("rows"), *(expr.sum().alias(name) for name, expr in bad.items())]
    if "label" in usable:
        totals += [
            pl.col("label").cast(pl.Int64).min().alias("label min"),
            pl.col("label").cast(pl.Int64).max().alias("label max"),
        ]
    if "split" in usable:
        totals.append((pl.col("split") == "train").sum().alias("train rows"))
    counts = lf.select(totals).collect(engine="streaming").row(0, named=True)

    def first(check: str, column: str = "row", distinct: bool = False) -> list[Any]:
        rows = lf.filter(bad[check]).select(column)
        if distinct:
            return rows.unique().sort(column).collect(engine="streaming")[column].to_list()
        return rows.head(MAX_IDS_SHOWN).collect(engine="streaming")[column].to_list()

    for column in ("user_id", "item_id", "timestamp", "label"):
        n = counts.get(f"null {column}") or 0
        if n:
            out.error_counted(column, f"{n} null value(s) at row", first(f"null {column}"), n)

    def odd_values(column: str, what: str, kind: Callable[[Any], Any]) -> bool:
        """The rows whose ``column`` is not one of the allowed values (an error); False when there are none."""
        n = counts.get(column) or 0
        if n:
            values = sorted({kind(v) for v in first(column, column, distinct=True)})[:MAX_IDS_SHOWN]
            out.error_counted(column, f"{n} {what} (values {values}) at rows", first(column), n)
        return bool(n)

    labels = "label" in usable and counts["rows"]
    if (
        not odd_values("label", "label(s) other than 0/1", int)
        and labels
        and counts["label min"] == counts["label max"]
    ):
        out.warning("label", "every label has the same value: AUC is undefined")
    for column, other in (("item_id", "items.parquet"), ("user_id", "users.parquet")):
        if counts.get(column):
            ids = first(column, column, distinct=True)
            noun = column.removesuffix("_id")
            out.error(column, f"{counts[column]} interaction(s) with {len(ids)} {noun} id(s) not in {other}", ids)
    splits = "split" in usable and counts["rows"]
    if not odd_values("split", "value(s) other than train/valid/test", str) and splits and counts["train rows"] == 0:
        out.error("split", "no 'train' rows")
    for column in numeric:
        n = counts[f"finite {column}"]
        if n:
            out.error_counted(column, f"{n} NaN/inf/null value(s) at rows", first(f"finite {column}"), n)


def _validate_item_features(
    paths: DatasetPaths, config: ExperimentConfig, items: pl.DataFrame | None, report: ValidationReport
) -> None:
    files = paths.item_feature_files()
    wanted = config.encoders.precomputed
    if wanted is not None:
        for name in wanted:
            if name not in files:
                _Collector(report, f"item_features/{name}.parquet").error(
                    None, f"missing file, named in encoders.precomputed; present: {sorted(files) or 'none'}"
                )
        files = {k: v for k, v in files.items() if k in wanted}
    for path in files.values():
        out = _Collector(report, f"item_features/{path.name}")
        schema = _read_schema(path, out)
        if schema is None:
            continue
        usable = _check_columns(schema, out, {"item_id": INTEGER, "vector": VECTOR}, {})
        if usable != {"item_id", "vector"}:
            continue
        df = pl.read_parquet(path, columns=["item_id", "vector"])
        _null_rows(df, "item_id", None, out)
        df = df.filter(pl.col("item_id").is_not_null())
        _duplicates(df, "item_id", out)
        _null_rows(df, "vector", "item_id", out)
        df = df.filter(pl.col("vector").is_not_null())
        vector_type = schema["vector"]
        lengths = (
            df.select(pl.col("item_id"), pl.lit(vector_type.size).alias("n"))
            if isinstance(vector_type, pl.Array)
            else df.select(pl.col("item_id"), pl.col("vector").list.len().alias("n"))
        )
        if df.height:
            expected = lengths["n"].mode().sort()[-1]
            wrong = lengths.filter(pl.col("n") != expected)
            if wrong.height:
                got = sorted(set(wrong["n"].to_list()))[:MAX_IDS_SHOWN]
                out.error(
                    "vector",
                    f"{wrong.height} vector(s) of the wrong length (expected {expected}, got {got}) at item_id",
                    wrong["item_id"].to_list(),
                )
            flat = df.select(
                pl.col("item_id"),
                pl.col("vector")
                .cast(pl.List(pl.Float64))
                .list.eval(pl.element().is_finite().all())
                .list.first()
                .alias("finite"),
            )
            bad = flat.filter(~pl.col("finite").fill_null(True))
            if bad.height:
                out.error("vector", f"{bad.height} vector(s) with NaN/inf at item_id", bad["item_id"].to_list())
        if items is not None:
            unknown = df.filter(~pl.col("item_id").is_in(items["item_id"].implode()))
            if unknown.height:
                out.warning(
                    "item_id",
                    f"{unknown.height} vector(s) for items not in items.parquet (ignored)",
                    unknown["item_id"].to_list(),
                )


def validate_dataset(root: str | Path, config: ExperimentConfig | None = None) -> ValidationReport:
    """Check a dataset directory against the contract and the experiment's declared features.

    Reports all problems at once; call ``.raise_for_errors()`` to stop on errors.
    """
    config = config or ExperimentConfig()
    paths = dataset_paths(root)
    report = ValidationReport(paths.root)
    if not paths.root.is_dir():
        _Collector(report, str(paths.root)).error(None, "dataset directory not found")
        return report
    items = _validate_items(paths, config, report)
    users = _validate_users(paths, config, report)
    _validate_interactions(paths, config, items, users, report)
    _validate_item_features(paths, config, items, report)
    return report
