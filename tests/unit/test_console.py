"""The console and the log file (recsys/console.py), Ray's worker output (training/ray_output.py) and
the training progress display (training/progress.py), without starting Ray."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import pytest

from recsys import console
from training import progress
from training.ray_output import CLEANER_LOGGER, CLEANER_STATE_API_WARNING, quiet_worker, route_worker_output


@pytest.fixture
def routed(tmp_path: Path):
    """console.setup() on a captured console stream, undone afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, warnings.showwarning)
    stream = io.StringIO()
    console.setup(verbose=False, stream=stream)
    yield stream, tmp_path / "logs" / "run.log"
    console.reset()
    assert (list(root.handlers), root.level, warnings.showwarning) == saved


def test_library_records_go_to_the_log_file_ours_to_the_console(routed) -> None:
    stream, path = routed
    logging.getLogger("ray.data.some_module").info("Starting execution of Dataset x")  # before the file is known
    logging.getLogger("recsys.encoders").warning("one of ours")
    assert console.attach_log_file(path) == path
    assert console.attach_log_file(path.with_name("other.log")) == path  # one file per command
    logging.getLogger("ray").info("kept until the directory exists")
    assert not path.parent.exists()  # attaching creates no directory
    path.parent.mkdir()
    library = logging.getLogger("transformers")
    library.addHandler(logging.StreamHandler(stream))  # as transformers does on import: its own console handler
    library.propagate = False
    console.adopt_library_loggers()
    library.warning("a library speaks")
    text = path.read_text()
    assert "Starting execution of Dataset x" in text and "a library speaks" in text and "one of ours" in text
    assert "kept until the directory exists" in text
    shown = stream.getvalue()
    assert "one of ours" in shown and "Starting execution" not in shown and "a library speaks" not in shown


def test_library_warnings_go_to_the_file_and_ours_to_the_console(routed, capsys) -> None:
    _, path = routed
    path.parent.mkdir()
    console.attach_log_file(path)
    warnings.showwarning("deprecated thing", DeprecationWarning, "/x/site-packages/ray/data/y.py", 3)
    warnings.showwarning("2 image file(s) not found", UserWarning, str(Path(console.__file__)), 10)
    assert "deprecated thing" in path.read_text()
    err = capsys.readouterr().err
    assert "warning: 2 image file(s) not found" in err and "deprecated thing" not in err


def test_plain_progress_prints_lines_not_carriage_return_frames() -> None:
    out = io.StringIO()
    bar = console.PlainProgress(total=10, desc="encode image", unit="item", file=out, interval=0.0)
    for _ in range(10):
        bar.update(1)
    bar.set_postfix_str("done")
    bar.close()
    bar.close()  # once
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 10  # 9 periodic (interval 0) + one final line; none at 100% before close
    assert lines[-1].startswith("encode image: 100% 10/10 item [") and lines[-1].endswith("done")
    looped = io.StringIO()
    assert list(console.PlainProgress(range(3), desc="media", unit="item", file=looped, interval=3600)) == [0, 1, 2]
    assert looped.getvalue().startswith("media: 100% 3/3 item [")  # the iterable's end closes it
    quiet = io.StringIO()
    with console.PlainProgress(total=10, desc="x", file=quiet, interval=3600) as slow:
        slow.update(5)
    assert quiet.getvalue().splitlines() == [quiet.getvalue().strip()]  # only the final line


def test_worker_output_goes_to_the_log_and_progress_events_to_the_display(routed, capsys) -> None:
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    _, path = routed
    path.parent.mkdir()
    console.attach_log_file(path)
    saved = list(dispatcher.handlers)
    try:
        assert route_worker_output(progress.consume)
        event = {"epoch": 1, "epochs": 2, "train_loss": 0.5, "val_auc": 0.7, "val_gauc": 0.6}
        event |= {"val_logloss": 0.55, "samples_per_s": 1234.0, "best": True}
        with progress.TrainProgress(steps=4, enabled=False) as display:
            dispatcher.emit(
                {
                    "pid": 7,
                    "actor_name": "RayTrainWorker",
                    "is_err": False,
                    "lines": [
                        "Moving model to device: cpu",
                        progress.PREFIX + '{"event": "epoch", "epoch": 1, "epochs": 2}',
                        progress.PREFIX + '{"event": "step", "epoch": 1, "done": 2, "samples_per_s": 9.0, "loss": 0.6}',
                        progress.PREFIX + json.dumps({"event": "validated", **event}),
                        progress.PREFIX + json.dumps({"event": "validated", **event}),  # from a second node
                    ],
                }
            )
    finally:
        dispatcher.handlers = saved
    text = path.read_text()
    assert "(RayTrainWorker pid=7) Moving model to device: cpu" in text and progress.PREFIX not in text
    expected = "epoch 1/2: loss 0.5000, val AUC 0.7000 GAUC 0.6000 logloss 0.5500, 1,234 samples/s (best)"
    assert display.lines == [expected]
    assert capsys.readouterr().out.splitlines() == [expected]  # once


def test_the_cleaner_state_api_warning_is_dropped_and_its_other_warnings_kept() -> None:
    logger = logging.getLogger(CLEANER_LOGGER)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        quiet_worker()
        quiet_worker()  # once per process, however often called
        logger.warning(CLEANER_STATE_API_WARNING + ". State API may be temporarily unavailable. Continuing.")
        logger.warning("Detected that the Ray Train controller actor (x) is dead. Cleaning up placement group")
        logging.getLogger("ray.train.other").warning(CLEANER_STATE_API_WARNING)  # another logger: not filtered
        assert len(logger.filters) == 1
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
    assert seen == ["Detected that the Ray Train controller actor (x) is dead. Cleaning up placement group"]


def test_steps_per_epoch_counts_rank_zeros_batches() -> None:
    assert progress.steps_per_epoch(48_014, workers=2, batch_size=512) == 94
    assert progress.steps_per_epoch(10, workers=1, batch_size=512) == 1
    assert progress.parse("(pid=1) " + progress.PREFIX + '{"event": "epoch"}') == {"event": "epoch"}
    assert progress.parse("[recsys] epoch 1 done") is None
