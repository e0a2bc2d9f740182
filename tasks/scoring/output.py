"""Where a batch scoring job writes: its scores and its rejects file, both or neither.

    --out scores.parquet | scores.pq   Parquet; the rejects beside it, scores.parquet.rejects.csv
    --out scores.csv                   CSV; the rejects beside it, scores.csv.rejects.csv
    --out DIR                          DIR/part-00000.parquet and DIR/_rejects.csv

Everything is written into a private staging directory next to the output (``.<name>.<pid>.<token>.part``),
flushed to disk, then renamed into place: the rejects first, the scores last, so a reader who sees the
scores sees their rejects. A failed job removes the staging directory and leaves nothing (and no parent
directory it had to create). An existing output is refused unless ``--overwrite``; local paths only for now.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ConfigError

OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
PART_FILE = "part-00000.parquet"
REJECTS_FILE = "_rejects.csv"   # "_": Parquet readers of the directory (pyarrow, Spark) skip it


@dataclass(frozen=True)
class OutputPlan:
    """The checked output: the scores' path, its format, whether it is a directory, and the rejects' path."""

    path: Path
    format: str          # parquet | csv
    directory: bool
    rejects: Path


def plan_output(location: str, overwrite: bool) -> OutputPlan:
    """Check ``--out`` before anything runs.

    Raises:
        ConfigError: an s3:// location (not yet), an unknown extension, an existing output without
            ``overwrite``, or a file where a directory is asked for (and the other way round).
    """
    if location.startswith("s3://"):
        raise ConfigError(f"--out {location}: batch scoring writes local files for now")
    path = Path(location).expanduser().absolute()
    suffix = path.suffix.lower()
    if suffix and suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"--out {location}: {suffix} is not an output format (.parquet, .pq, .csv, or a "
                          "directory without an extension)")
    if suffix:
        plan = OutputPlan(path, OUTPUT_FORMATS[suffix], False, path.with_name(f"{path.name}.rejects.csv"))
    else:
        plan = OutputPlan(path, "parquet", True, path / REJECTS_FILE)
    existing = [p for p in (plan.path, plan.rejects) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"--out {location}: {existing[0]} exists; pass --overwrite to replace it")
    if plan.path.exists() and plan.path.is_dir() != plan.directory:
        kind = "a directory" if plan.path.is_dir() else "a file"
        raise ConfigError(f"--out {location}: {plan.path} is {kind}; give " +
                          ("a path without an extension" if plan.directory else "a .parquet or .csv file"))
    return plan


class Staged:
    """The files being written: scores (one table writer) and rejects (a CSV writer), in the staging directory."""

    def __init__(self, plan: OutputPlan, stage: Path, scores_schema, rejects_schema) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self.plan, self.stage = plan, stage
        self.scores_path = stage / (PART_FILE if plan.directory else "scores" + plan.path.suffix)
        self.rejects_path = stage / REJECTS_FILE
        self.scores = (pq.ParquetWriter(self.scores_path, scores_schema) if plan.format == "parquet"
                       else pacsv.CSVWriter(self.scores_path, scores_schema))
        self.rejected = pacsv.CSVWriter(self.rejects_path, rejects_schema)

    def close(self) -> None:
        self.scores.close()
        self.rejected.close()
        for path in (self.scores_path, self.rejects_path):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def commit(self) -> None:
        """Move the staged files into place (the rejects first); an output replaced is removed after."""
        if self.plan.directory:
            old = None
            if self.plan.path.exists():
                old = self.plan.path.with_name(f".{self.plan.path.name}.{secrets.token_hex(4)}.old")
                self.plan.path.rename(old)
            self.stage.rename(self.plan.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return
        os.replace(self.rejects_path, self.plan.rejects)
        os.replace(self.scores_path, self.plan.path)
        self.stage.rmdir()


def _missing_parents(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if not p.exists()]


@contextlib.contextmanager
def staged_output(plan: OutputPlan, scores_schema, rejects_schema) -> Iterator[Staged]:
    """Write through ``Staged``; committed when the block ends without error, else nothing is left."""
    created = _missing_parents(plan.path)
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    stage = plan.path.with_name(f".{plan.path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    stage.mkdir()
    staged = None
    try:
        staged = Staged(plan, stage, scores_schema, rejects_schema)
        yield staged
        staged.close()
        staged.commit()
    except BaseException:
        if staged is not None:
            with contextlib.suppress(Exception):
                staged.close()
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
