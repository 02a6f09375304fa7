"""Training progress: events from rank 0 of the workers, shown by the driver as one bar per epoch.

Rank 0 prints each event as one line, :data:`PREFIX` + JSON (:func:`emit`), which Ray streams to
the driver like any worker output; there :func:`consume` (called for every worker line by
:func:`training.ray_output.route_worker_output`) hands it to the active :class:`TrainProgress`,
which draws a progress bar per epoch (steps, samples/s, loss; :func:`recsys.console.progress`:
plain lines outside a terminal) and prints one line when the epoch is validated::

    epoch 1/5: loss 0.5312, val AUC 0.7012 GAUC 0.6810 logloss 0.5523, 2,345 samples/s (best)

Events: ``epoch`` (starts; ``epoch``, ``epochs``), ``step`` (``epoch``, ``done`` steps of the epoch,
``samples_per_s``, ``loss``), ``validated`` (the epoch's report: ``val_*``, ``train_loss``,
``samples_per_s``, ``best``), ``early_stop`` (``epochs_without_improvement``), ``resumed``
(``path``, ``epoch``, ``step``).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from recsys.console import progress

PREFIX = "[recsys:progress] "

_active: TrainProgress | None = None


def emit(event: str, **fields: Any) -> None:
    """Print one progress event (on rank 0 of the workers) for the driver's display."""
    sys.stdout.write(PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def parse(line: str) -> dict[str, Any] | None:
    """The event a worker line carries, or None for any other line."""
    start = line.find(PREFIX)
    if start < 0:
        return None
    try:
        event = json.loads(line[start + len(PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def consume(line: str) -> bool:
    """Show the event ``line`` carries on the active display; True when the line was an event."""
    event = parse(line)
    if event is None:
        return False
    if _active is not None:
        _active.handle(event)
    return True


def steps_per_epoch(train_rows: int, workers: int, batch_size: int) -> int:
    """Rank 0's optimizer steps in one epoch: its shard of the rows in batches of its share."""
    per_worker = max(1, batch_size // workers)
    return max(1, math.ceil(train_rows / workers / per_worker))


def epoch_line(report: dict[str, Any], epochs: int) -> str:
    """The one line an epoch leaves on the console."""
    return (
        f"epoch {report['epoch']}/{epochs}: loss {report['train_loss']:.4f}, val AUC {report['val_auc']:.4f} "
        f"GAUC {report['val_gauc']:.4f} logloss {report['val_logloss']:.4f}, "
        f"{report['samples_per_s']:,.0f} samples/s" + (" (best)" if report.get("best") else "")
    )


class TrainProgress:
    """The driver's display of one training run (a context manager: active while it is open)."""

    def __init__(self, steps: int, enabled: bool = True) -> None:
        self.steps, self.enabled = steps, enabled
        self.bar: Any = None
        self.lines: list[str] = []  # the epoch lines shown, in order
        self._seen: set[tuple[str, object]] = set()

    def __enter__(self) -> TrainProgress:
        global _active
        _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        self._close_bar()
        if _active is self:
            _active = None

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _say(self, text: str) -> None:
        self._close_bar()
        self.lines.append(text)
        print(text, flush=True)

    def handle(self, event: dict[str, Any]) -> None:
        """Update the display with one event; an event seen before is ignored.

        Several Ray nodes on one machine share a log directory and each streams every worker line:
        the driver then receives each line once per node.
        """
        kind = event["event"]
        if kind != "step":
            key = (kind, event.get("epoch"))
            if key in self._seen:
                return
            self._seen.add(key)
        if kind == "epoch":
            self._close_bar()
            self.bar = progress(
                total=self.steps,
                desc=f"epoch {event['epoch']}/{event['epochs']}",
                unit="step",
                leave=False,
                disable=not self.enabled,
            )
        elif kind == "step" and self.bar is not None:
            done = min(int(event["done"]), self.steps)
            self.bar.update(max(0, done - self.bar.n))
            self.bar.set_postfix_str(f"{event['samples_per_s']:,.0f} samples/s, loss {event['loss']:.4f}")
        elif kind == "validated":
            self._say(epoch_line(event, event["epochs"]))
        elif kind == "early_stop":
            self._say(f"early stop: no val AUC gain for {event['epochs_without_improvement']} epoch(s)")
        elif kind == "resumed":
            self._say(f"resumed from {event['path']}: epoch {event['epoch']}, step {event['step']}")
