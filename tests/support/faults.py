"""Fault injection for the training tests, through the training loop's ``step_callback`` hook.

run_training(config, loop_options={"step_callback": crash_once(at_step=12, rank=1, marker=path)})
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def crash_once(at_step: int, rank: int, marker: Path) -> Callable[[int, int], None]:
    """A step callback that kills its worker process (``os._exit(1)``, no cleanup) at global step
    ``at_step`` on ``rank``, once: it writes ``marker`` (the worker's pid) first and does nothing
    while the marker exists, so the worker group Ray restarts goes on.

    A closure, so that Ray's cloudpickle ships it by value: the workers need not import this module.
    """
    path = str(marker)

    def callback(worker_rank: int, global_step: int) -> None:
        if global_step == at_step and worker_rank == rank and not os.path.exists(path):
            Path(path).write_text(str(os.getpid()))
            os._exit(1)  # a worker process dies mid-epoch

    return callback
