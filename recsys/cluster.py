"""Starting or joining Ray the same way for every job that runs on it (`recsys encode`, training, evaluation).

:func:`connect` joins a cluster by address, or starts a new local Ray sized for the job;
:func:`ray_session` does so for one block when the process is not connected yet;
:func:`configure_data_context` is the driver's Ray Data settings, which the datasets created
afterwards carry to the executors; :func:`check_actor_pool` refuses an actor pool the cluster cannot
hold; :func:`map_on_actor_pool` runs a callable class over an actor pool; :func:`with_node_column` and
:func:`rows_per_node` record which Ray node produced each output row; :func:`recsys_error` finds what
an actor raised inside Ray Data's wrappers.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from recsys.errors import ConfigError, RecsysError

#: Object-store memory of a local Ray (a laptop's; a cluster sizes its own).
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2
#: The column an actor adds to its output: the Ray node id that produced the row (dictionary-encoded).
NODE_COLUMN = "ray_node_id"


def connect(address: str | None, num_cpus: int, **options: Any) -> None:
    """``ray.init``: the cluster at ``address``, else a new local Ray with ``num_cpus`` logical CPUs.

    ``options`` go to ``ray.init`` either way (``log_to_driver``, ``runtime_env``, ...).
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        ray.init(address=address, **options)
    else:
        # address="local": always a new local instance, never a cluster someone else started here.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            **options,
        )


def configure_data_context() -> None:
    """The driver's Ray Data settings: no Ray Data progress bars (the commands show their own), rows in
    order (same seed + same data -> same batches), a map function's own exceptions, Parquet through
    the V1 datasource.

    Ray 2.60's default V2 Parquet datasource starts a pool of ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS``
    (32) footer-reader actors on every execution, which costs seconds before the first batch and CPU
    taken from the job on a small machine. ``RAY_DATA_USE_DATASOURCE_V2`` in the driver's environment
    overrides.
    """
    import ray.data

    from recsys import console

    console.adopt_library_loggers()  # importing Ray Data gave its logger a console handler: to the log file
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.raise_original_map_exception = True  # what a map function raised (a RecsysError: one line), not a wrapper
    ctx.execution_options.preserve_order = True
    if "RAY_DATA_USE_DATASOURCE_V2" not in os.environ:  # an explicit choice in the environment wins
        ctx.use_datasource_v2 = False


@contextmanager
def ray_session(address: str | None, cpus: int = 1, **options: Any) -> Iterator[None]:
    """The Ray this process is connected to; else one at ``address``, or a new local one, for the block only.

    A local Ray gets at least ``cpus`` logical CPUs (the job's actor pool must fit, even on a small machine).
    ``options`` go to :func:`connect`. Ray's driver-side log lines go to the command's log file.
    """
    import ray

    from recsys import console

    started = not ray.is_initialized()
    if started:
        console.adopt_library_loggers()
        connect(address, max(os.cpu_count() or 1, cpus), **options)
    configure_data_context()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_actor_pool(
    section: str, actors: int, cpus_per_actor: float, gpus_per_actor: float, spare_cpus: float = 0.0
) -> None:
    """Refuse (ConfigError naming ``section``'s field) a pool of ``actors`` the connected Ray cluster cannot
    hold, with ``spare_cpus`` left for the tasks that feed it (e.g. Parquet reads): Ray would wait forever."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpus_per_actor > cpus:
        raise ConfigError(f"{section}.cpus_per_actor: {cpus_per_actor:g} per actor, the Ray cluster has {cpus:g}")
    if gpus_per_actor > gpus:
        raise ConfigError(
            f"{section}.gpus_per_actor: {gpus_per_actor:g} GPU(s) per actor, the Ray cluster has {gpus:g}"
        )
    if actors * cpus_per_actor + spare_cpus > cpus or actors * gpus_per_actor > gpus:
        spare = f" and {spare_cpus:g} CPU for the tasks that feed them" if spare_cpus else ""
        raise ConfigError(
            f"{section}.actors: {actors} actors x ({cpus_per_actor:g} CPU, {gpus_per_actor:g} GPU){spare} "
            f"do not fit the Ray cluster ({cpus:g} CPU, {gpus:g} GPU)"
        )


def recsys_error(exc: BaseException) -> RecsysError | None:
    """The RecsysError a Ray actor raised, found in the exception Ray Data wrapped it in (None: there is none)."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RecsysError) and not isinstance(e, RayError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def map_on_actor_pool(
    ds: Any,
    actor_class: type,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    batch_size: int,
    **kwargs: Any,
) -> Any:
    """``ds.map_batches`` over a pool of ``actors`` instances of ``actor_class`` (the Ray Data batch-inference
    pattern): Arrow batches of ``batch_size`` rows in, as many rows out; each actor is built once with
    ``kwargs`` plus ``threads`` (its torch threads: ``cpus_per_actor``) and ``use_gpu``."""
    return ds.map_batches(
        actor_class,
        compute=one_block_per_actor(actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
        batch_size=batch_size,
        batch_format="pyarrow",
        udf_modifying_row_count=False,
        fn_constructor_kwargs={**kwargs, "threads": max(1, int(cpus_per_actor)), "use_gpu": gpus_per_actor > 0},
    )


def one_block_per_actor(actors: int) -> Any:
    """A fixed pool of ``actors`` actors, each handed one block at a time.

    Ray Data otherwise queues up to two blocks on each actor, preferring the actors of the node that holds
    the block: blocks made by the driver (from items or tables) then all go to the driver's node's actors
    while the other nodes' actors idle.
    One at a time, the next block goes to whichever actor is free, on any node, and an actor holds at
    most one block of inputs in memory.
    """
    import ray.data

    return ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)


def with_node_column(table: Any, node_id: str) -> Any:
    """``table`` (Arrow) plus :data:`NODE_COLUMN`: ``node_id`` on every row (one dictionary entry)."""
    import pyarrow as pa

    codes = pa.array([0] * table.num_rows, pa.int32())
    return table.append_column(NODE_COLUMN, pa.DictionaryArray.from_arrays(codes, pa.array([node_id])))


def rows_per_node(tables: Iterable[Any]) -> dict[str, int]:
    """Output rows per Ray node id, counted from the :data:`NODE_COLUMN` of Arrow ``tables``."""
    import pyarrow as pa

    nodes: Counter[str] = Counter()
    for table in tables:
        counts = table.column(NODE_COLUMN).cast(pa.string()).value_counts()
        for node, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
            nodes[node] += n
    return dict(nodes)


def iter_tables(ds: Any) -> Iterator[Any]:
    """The output blocks of ``ds`` as Arrow tables, as they come; a RecsysError an actor raised comes back as
    itself, in one line (Ray Data wraps it and appends lines of its own)."""
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
    except Exception as exc:
        cause = recsys_error(exc)
        if cause is None:
            raise
        raise type(cause)(str(cause).splitlines()[0]) from None
