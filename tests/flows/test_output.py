"""What a run shows: quiet by default, everything with --verbose; progress as a live line on a terminal."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings

import pytest

from flows import output
from flows.output import LiveLine, configure_output, early_tensorflow_line, filtered_stderr, run_log_sink
from tasks import progress
from tasks.progress import Step

pytestmark = pytest.mark.unit


@pytest.fixture
def restored():
    """configure_output changes process-wide state: logger levels, warnings, the import system."""
    levels = {name: logging.getLogger(name).level for name in output.QUIET_LOGGERS}
    meta_path = list(sys.meta_path)
    sink = progress._sink.get()
    with warnings.catch_warnings():      # restores the filters and showwarning
        yield
    progress.report_to(sink)
    sys.meta_path[:] = meta_path
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_a_normal_run_turns_the_libraries_down(restored):
    env: dict[str, str] = {}
    configure_output(False, env)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3" and env["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert env["DASK_LOGGING__DISTRIBUTED"] == "error"
    assert "ignore::DeprecationWarning" in env["PYTHONWARNINGS"] and "ignore::UserWarning" in env["PYTHONWARNINGS"]
    assert logging.getLogger("alembic").level == logging.WARNING
    assert logging.getLogger("absl").level == logging.ERROR


def test_verbose_leaves_everything_on(restored):
    env = {"PATH": "/bin"}
    sink_before = progress._sink.get()
    before = (list(warnings.filters), warnings.showwarning, list(sys.meta_path),
              logging.getLogger("alembic").level)
    configure_output(True, env)
    assert env == {"PATH": "/bin"}                     # TF_CPP_MIN_LOG_LEVEL not forced
    assert progress._sink.get() is not sink_before     # progress shows either way
    assert (list(warnings.filters), warnings.showwarning, list(sys.meta_path),
            logging.getLogger("alembic").level) == before


def test_what_the_user_set_is_kept(restored):
    env = {"TF_CPP_MIN_LOG_LEVEL": "0", "PYTHONWARNINGS": "error"}
    configure_output(False, env)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0" and env["PYTHONWARNINGS"] == "error"


def test_library_warnings_are_dropped_and_the_pipelines_own_shown(restored, tmp_path):
    configure_output(False, {})
    assert isinstance(warnings.showwarning, output._OwnWarningsOnly)   # even where MLflow turns them back on
    shown: list[str] = []
    show = output._OwnWarningsOnly(lambda message, *_args: shown.append(str(message)))
    library = str(tmp_path / "site-packages" / "mlflow" / "utils.py")
    own = str(output.ROOT / "tasks" / "registry" / "runs.py")
    show(UserWarning("add type hints"), UserWarning, library, 1)
    show(UserWarning("our own"), UserWarning, own, 1)
    show(RuntimeWarning("overflow"), RuntimeWarning, library, 1)
    assert shown == ["our own", "overflow"]


@pytest.mark.parametrize(("line", "level", "dropped"), [
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n", 3, True),
    ("I0000 00:00:1796645263.651101   11041 port.cc:153] oneDNN custom operations are on.\n", 3, True),
    ("I0000 00:00:1796645263.651101   11041 port.cc:153] oneDNN custom operations are on.\n", 1, True),
    ("I0000 00:00:1796645263.651101   11041 port.cc:153] oneDNN custom operations are on.\n", 0, False),
    ("W0000 00:00:1796645263.651101   11041 x.cc:1] a warning\n", 1, False),
    ("E0000 00:00:1796645263.651101   11041 x.cc:1] an error\n", 2, False),
    ("E0000 00:00:1796645263.651101   11041 x.cc:1] an error\n", 3, True),
    ("Illegal instruction\n", 3, False),
    ("Traceback (most recent call last):\n", 3, False),
])
def test_tensorflows_early_lines_are_judged_by_the_level_asked_for(line, level, dropped):
    assert early_tensorflow_line(level)(line) is dropped


def test_filtered_stderr_drops_lines_written_to_the_descriptor_and_keeps_the_rest(capfd):
    with filtered_stderr(lambda line: "noise" in line):
        os.write(2, b"noise from C++\nsomething real\n")
        print("a Python line", file=sys.stderr)
    err = capfd.readouterr().err
    assert "noise" not in err and "something real" in err and "a Python line" in err


def test_the_tensorflow_import_hook_installs_once_and_only_when_asked(restored):
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, output._QuietTensorFlowImport)]
    had_tf = sys.modules.pop("tensorflow", None)
    try:
        output.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "0"})
        output.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "not a number"})
        assert not any(isinstance(f, output._QuietTensorFlowImport) for f in sys.meta_path)
        output.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "3"})
        output.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "3"})
        assert sum(isinstance(f, output._QuietTensorFlowImport) for f in sys.meta_path) == 1
    finally:
        if had_tf is not None:
            sys.modules["tensorflow"] = had_tf


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(message: str, progress: bool) -> logging.LogRecord:
    record = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, None, None)
    if progress:
        setattr(record, output.PROGRESS, True)
    return record


def test_on_a_terminal_progress_is_one_live_line_left_in_place_by_the_next_line():
    screen = Terminal()
    live = LiveLine(screen)
    assert live.filter(_record("fold 1/3 · 0:10 elapsed · ~0:20 left", progress=True)) is False
    assert live.filter(_record("fold 2/3 · 0:20 elapsed · ~0:10 left", progress=True)) is False
    assert live.filter(_record("trained TabularANN", progress=False)) is True     # printed by Prefect
    shown = screen.getvalue()
    # One line rewritten in place (carriage return, erase line), then left on screen with its newline.
    assert shown.count("\n") == 1 and "\r\x1b[2Kfold 2/3 · 0:20 elapsed · ~0:10 left" in shown
    assert "fold 2/3 · 0:20 elapsed · ~0:10 left\n" in shown
    assert live.filter(_record("calibrated", progress=False)) is True and screen.getvalue() == shown


def test_on_a_pipe_the_live_line_stays_off():
    assert not LiveLine(io.StringIO()).enabled()


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_run_log_sink_writes_the_line_outside_a_run_and_never_raises():
    logger = logging.getLogger("tests.progress")
    recorded = Recorded()
    logger.addHandler(recorded)
    logger.setLevel(logging.INFO)
    try:
        run_log_sink(logger)(Step("fold 1/3", 1, 3, 10.0, 20.0))
    finally:
        logger.removeHandler(recorded)
    assert [r.getMessage() for r in recorded.records] == ["fold 1/3 · 0:10 elapsed · ~0:20 left"]
    assert getattr(recorded.records[0], output.PROGRESS) is True

    class Broken(logging.LoggerAdapter):
        def info(self, *args, **kwargs):
            raise OSError("disk full")

    run_log_sink(Broken(logger, {}))(Step("fold 2/3", 2, 3, 20.0, 10.0))   # no exception
