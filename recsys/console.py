"""What a `recsys` command shows on its console, and what it keeps in its log file.

The console carries our own lines: what the command prints, our loggers (``recsys``, ``training``,
``serving``) and our warnings (``warning: ...``), and one progress bar per long step. Everything
else that is logged in the process (Ray, Ray Data, transformers, ...), and libraries' warnings, go
to the command's log file (:func:`attach_log_file`; records logged before the file is known are
kept and written when it is). ``--verbose`` (:func:`setup` with ``verbose=True``) streams them on
the console as well.

Progress (:func:`progress`): a tqdm bar on a terminal; anywhere else (a pipe, a log file) a plain
line at most every ``RECSYS_PROGRESS_SECONDS`` seconds (default 30) and one when the step ends,
instead of the carriage-return frames a bar would write there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TextIO, TypeVar

T = TypeVar("T")

#: Loggers whose records are ours: shown on the console at INFO.
OWN_LOGGERS = ("recsys", "training", "serving")
#: Libraries that install console handlers of their own on import; :func:`adopt_library_loggers`
#: sends their records through the root logger instead (to the log file).
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "transformers", "mlflow", "alembic")
PROGRESS_SECONDS_ENV = "RECSYS_PROGRESS_SECONDS"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Records kept before a log file is attached (the oldest are dropped beyond this).
PENDING_LIMIT = 10_000


def _is_own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


class _OwnRecords(logging.Filter):
    """Passes records of :data:`OWN_LOGGERS` only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _is_own(record.name)


class _LogFile(logging.Handler):
    """Every record of the process, to a file once one is attached; kept in memory until then."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.path: Path | None = None
        self._file: IO[str] | None = None
        self._pending: list[logging.LogRecord] = []

    def attach(self, path: Path) -> Path:
        """Write to ``path`` (appending) from now on, beginning with the records kept so far.

        The file is opened once its directory exists: attaching creates no directory (a command
        refused before it writes anything leaves nothing behind).
        """
        if self.path is None:
            self.path = path
            self._open()
        return self.path

    def _open(self) -> bool:
        if self._file is None and self.path is not None and self.path.parent.is_dir():
            self._file = self.path.open("a", encoding="utf-8")
            pending, self._pending = self._pending, []
            for record in pending:
                self.emit(record)
        return self._file is not None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None and not self._open():
            self._pending.append(record)
            del self._pending[:-PENDING_LIMIT]
            return
        assert self._file is not None
        try:
            self._file.write(self.format(record) + "\n")
            self._file.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


_log_file: _LogFile | None = None
_console: logging.Handler | None = None
_verbose = False
_saved: tuple[int, Any] | None = None  # the root level and warnings.showwarning before setup()


def setup(verbose: bool = False, stream: TextIO | None = None) -> None:
    """Route the process's logging and warnings: ours to the console, everything to the log file.

    ``verbose``: every record (DEBUG and up) and every warning on the console too.
    """
    global _log_file, _console, _verbose, _saved
    import warnings

    reset()
    root = logging.getLogger()
    _saved = (root.level, warnings.showwarning)
    _verbose = verbose
    _console = logging.StreamHandler(stream or sys.stderr)
    _console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    if not verbose:
        _console.addFilter(_OwnRecords())
    _log_file = _LogFile()
    root.addHandler(_console)
    root.addHandler(_log_file)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    warnings.showwarning = _show_warning
    adopt_library_loggers()


def reset() -> None:
    """Undo :func:`setup`: our handlers removed, the log file closed, the root level and
    ``warnings.showwarning`` restored (for callers of ``recsys.cli.main`` in a longer-lived process)."""
    global _log_file, _console, _saved
    import warnings

    root = logging.getLogger()
    for handler in (_console, _log_file):
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
    _log_file = _console = None
    if _saved is not None:
        root.setLevel(_saved[0])
        warnings.showwarning = _saved[1]
        _saved = None


def adopt_library_loggers(names: Iterable[str] = LIBRARY_LOGGERS) -> None:
    """Send the records of libraries that print on their own (Ray's loggers) through the root logger.

    Their console handlers are removed (file handlers, e.g. Ray Data's log in the Ray session
    directory, stay) and their records propagate to our handlers: the log file, and the console
    with ``--verbose``. Call again after a library (re)configures its loggers.
    """
    if _log_file is None:
        return
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True


def attach_log_file(path: str | Path) -> Path | None:
    """Keep this command's log in ``path`` (a first call wins: one file per command; written once its
    directory exists).

    Returns the log file in use, or None when :func:`setup` was not called (e.g. a library user
    who configures logging themselves).
    """
    if _log_file is None:
        return None
    return _log_file.attach(Path(path))


def log_file() -> Path | None:
    """The log file in use, if any."""
    return _log_file.path if _log_file is not None else None


def verbose() -> bool:
    """Whether library output streams on the console too (``--verbose``)."""
    return _verbose


def _own_source(filename: str) -> bool:
    """Whether a warning was raised from this project's code (not from an installed library)."""
    root = Path(__file__).resolve().parents[1]
    path = Path(filename)
    try:
        inside = path.resolve().is_relative_to(root)
    except OSError:
        return False
    return inside and "site-packages" not in path.parts


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning``: ours as ``warning: <message>`` on the console, libraries' to the log file."""
    if _own_source(filename):
        print(f"warning: {message}", file=sys.stderr)
        return
    logging.getLogger("py.warnings").warning(
        "%s:%s: %s: %s", filename, lineno, category.__name__, message, stacklevel=2
    )


# --------------------------------------------------------------------------- progress


def progress_seconds() -> float:
    """Seconds between two plain progress lines (``RECSYS_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_ENV, "30")))
    except ValueError:
        return 30.0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class PlainProgress:
    """A progress bar for a non-terminal: a plain line every so often and one at the end.

    The subset of tqdm's interface this project uses: iteration, ``update``, ``set_postfix_str``,
    ``write``, ``close`` and use as a context manager.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        leave: bool = True,
        file: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.disable, self.leave = total, desc, unit, disable, leave
        self.n = 0
        self.postfix = ""
        self.file = file
        self.interval = progress_seconds() if interval is None else interval
        self.start = self._last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()  # as tqdm: the bar ends with its iterable

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _out(self) -> TextIO:
        return self.file or sys.stderr

    def line(self) -> str:
        """The progress as one line: ``desc: 40% 480/1200 items [0:31, 15.3 items/s] postfix``."""
        elapsed = time.monotonic() - self.start
        rate = f", {self.n / elapsed:,.1f} {self.unit}/s" if elapsed > 0 and self.n else ""
        if self.total:
            done = f"{100 * self.n / self.total:.0f}% {self.n}/{self.total} {self.unit}"
        else:
            done = f"{self.n} {self.unit}"
        tail = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done} [{_duration(elapsed)}{rate}]{tail}"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; print a line when the interval has passed since the last one."""
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self._last >= self.interval and (not self.total or self.n < self.total):
            self._last = now
            print(self.line(), file=self._out(), flush=True)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        """Text shown after the counts (tqdm's postfix)."""
        self.postfix = text

    def write(self, text: str) -> None:
        """A line of the caller's, printed as it is (tqdm.write)."""
        print(text, file=self._out(), flush=True)

    def close(self) -> None:
        """End the step: one final line (unless ``leave=False`` or disabled)."""
        if self.closed:
            return
        self.closed = True
        if self.leave and not self.disable:
            print(self.line(), file=self._out(), flush=True)


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr, where progress goes) is a terminal."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
) -> Any:
    """A progress bar over ``iterable`` (or ``total`` steps): tqdm on a terminal, else :class:`PlainProgress`."""
    if is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
