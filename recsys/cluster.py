"""Starting or joining Ray the same way for every job that runs on it (`recsys encode`, training).

:func:`connect` joins a cluster by address, or starts a new local Ray sized for the job;
:func:`configure_data_context` is the driver's Ray Data settings, which the datasets created
afterwards carry to the executors.
"""

from __future__ import annotations

import os
from typing import Any

#: Object-store memory of a local Ray (a laptop's; a cluster sizes its own).
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2


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

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.raise_original_map_exception = True  # what a map function raised (a RecsysError: one line), not a wrapper
    ctx.execution_options.preserve_order = True
    if "RAY_DATA_USE_DATASOURCE_V2" not in os.environ:  # an explicit choice in the environment wins
        ctx.use_datasource_v2 = False
