"""What a run shows a person: the pipeline's own lines and its progress; third-party noise only with ``--verbose``.

``configure_output`` is called by ``flows.cli`` before anything imports TensorFlow, Prefect or MLflow.
Quiet (the default) hides what a user cannot act on, each where it comes from:

- TensorFlow's C++ logging: ``TF_CPP_MIN_LOG_LEVEL`` (inherited by the Dask workers and the model server
  the run starts); the few lines TensorFlow logs while it loads, before it reads that variable (oneDNN,
  "All log messages before absl::InitializeLog()"), are dropped from stderr while it imports
  (``quiet_tensorflow_import``); its Python loggers (``tensorflow``, ``absl``) show errors only.
- alembic's migration lines (MLflow's and Prefect's SQLite databases) and MLflow's own INFO lines
  ("Creating initial MLflow database tables", ``MLFLOW_LOGGING_LEVEL``: MLflow sets its loggers on import).
- Dask's scheduler, nanny and worker lines (``training.parallel.runner: dask``): errors only, set through
  ``DASK_LOGGING__DISTRIBUTED`` since distributed configures its loggers when it loads; its closing
  "Worker process still alive … killing" warnings are not a user's concern.
- Python warnings of the libraries (deprecations, MLflow's hints), here and in child processes; MLflow
  turns some back on inside its functions (``filter_user_warnings_once``), so the ones a library file
  raises are also dropped where they would be shown (``warnings.showwarning``).

Progress (``tasks.progress``) goes to Prefect's run log (``run_log_sink``); Prefect's console handler
prints run-log lines, so on a pipe (tests, CI) each step is one plain line. When stderr is a terminal
those records update one live line (Rich) instead, which stays on screen when the next other line comes.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tasks.progress import Step, report_to, reporting

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LEVEL = "3"      # errors too: TF 2.21 logs harmless tf.data attribute errors
# Third-party loggers and the level they show on a quiet run.
QUIET_LOGGERS = {"tensorflow": logging.ERROR, "absl": logging.ERROR, "alembic": logging.WARNING,
                 "mlflow": logging.WARNING, "distributed": logging.ERROR}
QUIET_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning)
OWN_DIRS = ("flows", "tasks", "serving")
OWN_PACKAGES = r"(flows|tasks|serving)(\..*)?$"
ROOT = Path(__file__).resolve().parent.parent
# Child processes (Dask workers, the model server, pip) read warnings filters from the environment.
QUIET_PYTHONWARNINGS = ",".join(f"ignore::{w.__name__}" for w in QUIET_WARNINGS)
PROGRESS = "progress_step"      # the attribute that marks a progress record for the console


def configure_output(verbose: bool, env: dict[str, str]) -> None:
    """Set the environment and loggers so a normal run shows only the pipeline's own lines.

    ``verbose`` leaves everything as the libraries set it. A ``TF_CPP_MIN_LOG_LEVEL`` or ``PYTHONWARNINGS``
    the user set is kept. Either way, long work in this process reports its progress to the run log.
    """
    report_to(run_log_sink())
    if verbose:
        return
    env.setdefault(TF_LOG_LEVEL, QUIET_TF_LEVEL)
    env.setdefault("PYTHONWARNINGS", QUIET_PYTHONWARNINGS)
    env.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    env.setdefault("DASK_LOGGING__DISTRIBUTED", "error")    # read by distributed on import, in every process
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", module=OWN_PACKAGES)    # the pipeline's own warnings still show
    if not isinstance(warnings.showwarning, _OwnWarningsOnly):
        warnings.showwarning = _OwnWarningsOnly(warnings.showwarning)
    quiet_tensorflow_import(env)


def own_file(filename: str) -> bool:
    """Whether a warning was raised in the pipeline's own code (flows/, tasks/, serving/ of this checkout)."""
    path = Path(filename).resolve()
    return any(path.is_relative_to(ROOT / package) for package in OWN_DIRS)


class _OwnWarningsOnly:
    """``warnings.showwarning`` that drops the libraries' warnings of the quiet categories."""

    def __init__(self, show: Callable) -> None:
        self.show = show

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, QUIET_WARNINGS) and not own_file(filename):
            return
        self.show(message, category, filename, lineno, file, line)


# -- TensorFlow's lines before it reads TF_CPP_MIN_LOG_LEVEL --------------------------------------------

_ABSL_LEVELS = "IWEF"     # absl's line prefixes: info, warning, error, fatal


def early_tensorflow_line(min_level: int) -> Callable[[str], bool]:
    """Whether a line TensorFlow wrote while loading is below ``min_level`` (0 info … 3 fatal only)."""
    def below(line: str) -> bool:
        if line.startswith("WARNING: All log messages before absl::InitializeLog()"):
            return min_level > 0
        head = line[:5]
        return len(head) == 5 and head[0] in _ABSL_LEVELS and head[1:].isdigit() \
            and _ABSL_LEVELS.index(head[0]) < min_level
    return below


@contextmanager
def filtered_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes to it directly) and write back the lines ``drop`` keeps.

    Without a usable descriptor 2 (a daemon's closed stderr) the block runs unfiltered."""
    _flush(sys.stderr)
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            _flush(sys.stderr)
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not drop(line)]
            if kept and sys.stderr is not None:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _flush(stream: TextIO | None) -> None:
    if stream is not None:
        stream.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, drop: Callable[[str], bool]) -> None:
        self.loader, self.drop = loader, drop

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        with filtered_stderr(self.drop):
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Loads ``tensorflow`` (whoever imports it first: Keras, the export, the serving code) with its early
    lines filtered; once."""

    def __init__(self, drop: Callable[[str], bool]) -> None:
        self.drop = drop

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self.drop)
        return spec


def quiet_tensorflow_import(env: dict[str, str]) -> None:
    """When ``TF_CPP_MIN_LOG_LEVEL`` hides info lines, hide the ones TensorFlow logs before it reads it too."""
    try:
        min_level = int(env.get(TF_LOG_LEVEL, "0"))
    except ValueError:
        return
    if min_level <= 0 or "tensorflow" in sys.modules \
            or any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport(early_tensorflow_line(min_level)))


# -- progress ---------------------------------------------------------------------------------------------

@contextmanager
def progress_to_run_log() -> Iterator[None]:
    """Within the block (or the function it decorates), ``tasks.progress.Progress()`` reports to the run log;
    called inside a flow."""
    from prefect import get_run_logger

    with reporting(run_log_sink(get_run_logger())):
        yield


def run_log_sink(fallback: logging.Logger | logging.LoggerAdapter | None = None) -> Callable[[Step], None]:
    """A progress sink that writes each step to the Prefect run log of whatever reports it (a task, the
    flow), else to ``fallback`` (threads outside a run: boto3's transfer threads). Never raises."""
    def sink(step: Step) -> None:
        try:
            try:
                from prefect import get_run_logger

                logger = get_run_logger()
            except Exception:     # no run context in this thread
                logger = fallback or logging.getLogger("flows.progress")
            _live.attach()
            logger.info("%s", step.line(), extra={PROGRESS: True})
        except Exception:        # progress never breaks the work it reports
            logging.getLogger(__name__).debug("progress line lost", exc_info=True)
    return sink


class LiveLine(logging.Filter):
    """On Prefect's console handlers: progress records update one live line on a terminal instead of
    printing; any other record first leaves the live line on screen as it was."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self._live = None
        self._attached: set[int] = set()
        self._exit_hooked = False

    def enabled(self) -> bool:
        stream = self.stream or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())

    def attach(self) -> None:
        """Put the filter on the root logger's console handlers (once each), when stderr is a terminal."""
        if not self.enabled():
            return
        for handler in logging.getLogger().handlers:
            if type(handler).__name__ == "PrefectConsoleHandler" and id(handler) not in self._attached:
                handler.addFilter(self)
                self._attached.add(id(handler))

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, PROGRESS, False):
            self.show(record.getMessage())
            return False
        self.stop()
        return True

    def show(self, line: str) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        if self._live is None:
            self._live = Live(console=Console(file=self.stream or sys.stderr), auto_refresh=False, transient=False)
            self._live.start()
            if not self._exit_hooked:    # an interrupted run still gets its cursor back
                atexit.register(self.stop)
                self._exit_hooked = True
        self._live.update(Text(line, no_wrap=True, overflow="ellipsis"), refresh=True)

    def stop(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()


_live = LiveLine()
