"""Where the output of Ray's worker processes goes: the command's log file, progress events aside.

Ray streams every line its worker processes (training workers, the Train controller, Ray Data
tasks, ...) print to the driver (``ray.init(log_to_driver=True)``), where Ray's own handler on its
stdout/stderr dispatcher (``ray._private.ray_logging.global_worker_stdstream_dispatcher``,
registered as ``ray_print_logs`` by ``ray.init`` in Ray 2.60) prints them on the console.
:func:`route_worker_output` replaces that handler with ours: each line is logged to the
``ray.workers`` logger, i.e. to the command's log file (:mod:`recsys.console`; the console too with
``--verbose``), except the training loop's progress events (:mod:`training.progress`), which go to
the driver's progress display. This keeps Ray's transport (it works the same on a cluster: lines
travel from every node through the GCS), only the last hop changes.

Inside the workers (:data:`WORKER_RUNTIME_ENV`, the job's runtime environment):

* ``RAY_TRAIN_ENABLE_PRINT_PATCH=0``: Ray Train V2 replaces ``print`` in its workers by a call to the
  root logger whose console handler writes the line, and also calls the original ``print`` when
  ``sys.stdout`` is not ``sys.__stdout__`` -- which is always the case in a Ray worker (Ray rebinds
  it to its log file): every line printed by the training loop reached the driver twice.
* :func:`quiet_worker` (the ``worker_process_setup_hook``) drops one warning, see :class:`_CleanerStateApiWarning`.
* :func:`quiet_worker` also points the worker's State API client at its own Ray (:func:`own_state_api`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from recsys import console

#: Ray Train's placement-group cleaner (a detached actor of every run) and the warning it logs.
CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_STATE_API_WARNING = "Failed to query Ray Train Controller actor state"
#: The name of Ray's own handler on the dispatcher (ray/_private/worker.py, ``connect``).
RAY_PRINT_HANDLER = "ray_print_logs"
OUR_HANDLER = "recsys_worker_output"
WORKERS_LOGGER = "ray.workers"

#: The runtime environment of the job's worker processes (see the module docstring).
WORKER_RUNTIME_ENV: dict[str, Any] = {
    "env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"},
    "worker_process_setup_hook": "training.ray_output.quiet_worker",
}


#: Where a worker's State API client goes when its Ray has no dashboard address: a port nothing listens on.
NO_STATE_API = "http://127.0.0.1:1"


class _CleanerStateApiWarning(logging.Filter):
    """Drops the placement-group cleaner's "Failed to query Ray Train Controller actor state" warning.

    Why: Ray Train starts a detached ``PlacementGroupCleaner`` actor per run that asks the State
    API once a second whether the Train controller is still alive, to remove the run's placement
    group if the controller died. The State API is served by the dashboard, which this project's
    local Ray does not start (``include_dashboard=False``; the dashboard's HTTP server needs the
    ``ray[default]`` extras) and which clusters may run without: every query fails, and the cleaner
    logs this warning and keeps polling, once a second for the whole run (hundreds of lines per
    run; Ray issues #61689, #61756). Nothing is lost by dropping it: the cleaner cannot do its
    job without the State API anyway, and Ray removes a job's placement groups when the job ends.
    Only this message of only this logger is dropped: its other warnings (e.g. that it is cleaning
    up a placement group) still come through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return CLEANER_STATE_API_WARNING not in record.getMessage()


def quiet_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for this project's jobs: runs once in every worker process."""
    logger = logging.getLogger(CLEANER_LOGGER)
    if not any(isinstance(f, _CleanerStateApiWarning) for f in logger.filters):
        logger.addFilter(_CleanerStateApiWarning())
    if "RAY_API_SERVER_ADDRESS" not in os.environ and (address := own_state_api()):
        os.environ["RAY_API_SERVER_ADDRESS"] = address


def own_state_api() -> str | None:
    """The State API server (the dashboard) of this worker's own Ray, from its GCS; :data:`NO_STATE_API` when the
    GCS names none; None when unknown (no Ray connection, a Ray without these internals).

    Why: without ``RAY_API_SERVER_ADDRESS`` a worker's State API client does not ask its own Ray: it finds "the"
    Ray of the host in ``ray_current_cluster`` in Ray's temp directory, the last one started there, which may be
    another or one that is gone; then it waits for that GCS (~10-40 s). Ray Train's placement-group cleaner
    (below) polls the State API once a second, its thread is inside that wait when the run ends, and the
    controller waits up to 12 s for the thread before it reports the result: every run ended ~14 s late
    (recsys.log: "Monitor thread did not exit within 12.00 seconds"). Asking its own Ray's dashboard is right on
    a cluster, and fails in ~1 s (refused) on a Ray started without one, which the cleaner already handles as
    "State API unavailable".
    """
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return None
        address = _internal_kv_get(ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    except Exception:  # a Ray without these internals: leave the client as it is
        return None
    return f"http://{address.decode()}" if address else NO_STATE_API


def _prefix(data: dict[str, Any]) -> str:
    """Ray's own prefix of a worker line: ``(ActorName pid=123, ip=...)``."""
    who = data.get("actor_name") or data.get("task_name") or ""
    where = f"pid={data.get('pid')}" + (f", ip={data['ip']}" if data.get("ip") != data.get("localhost") else "")
    return f"({who + ' ' if who else ''}{where})"


def route_worker_output(on_event: Callable[[str], bool]) -> bool:
    """Send Ray's worker output to the ``ray.workers`` logger instead of the console.

    ``on_event(line)`` sees every line first and returns True for a line it has consumed (a
    progress event), which is then not logged. Call after ``ray.init(log_to_driver=True)``.
    Returns False (and changes nothing) when this Ray has no such dispatcher.
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    if not all(hasattr(dispatcher, name) for name in ("add_handler", "remove_handler")):
        return False
    console.adopt_library_loggers()  # "ray" prints on its own handler until adopted
    logger = logging.getLogger(WORKERS_LOGGER)

    def handle(data: dict[str, Any]) -> None:
        prefix = _prefix(data)
        for line in data.get("lines", []):
            if not on_event(line):
                logger.info("%s %s", prefix, line)

    dispatcher.remove_handler(RAY_PRINT_HANDLER)
    dispatcher.remove_handler(OUR_HANDLER)
    dispatcher.add_handler(OUR_HANDLER, handle)
    return True
