"""Batch scoring, serially: a registered version scores an input file chunk by chunk into an output.

    resolve(registry, wanted)          a version number, or the version an alias (champion, challenger) names
    load_verified(registry, mv, cache) the export, SHA-256 checked (the deploy's check), loaded by the server's
                                       loader (metadata, files, calibrator) and golden-checked as a server does
    plan_job(...)                      every input checked before a row is read: one ConfigError line each
    run_job(job, model, observe)       chunks → contract → score → output + rejects, committed together

``observe(columns, probability)`` sees each chunk's scored rows (the drift counts are the monitoring's,
which this stage may not import; the flow passes them in).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.constants import CHALLENGER, CHAMPION, GOLDEN_TOLERANCE
from tasks.errors import ArtifactIntegrityError, Problem, RegistryError
from tasks.scoring.chunk import REJECT_COLUMNS, score_chunk
from tasks.scoring.errors import TooManyRejects
from tasks.scoring.output import OutputPlan, plan_output, staged_output
from tasks.scoring.source import Source, chunks, input_sha256, open_source, require_columns

log = logging.getLogger(__name__)

ALIASES = (CHAMPION, CHALLENGER)
ROW = "row"
SCORE_COLUMNS = ("probability", "raw_score", "version")
SHOWN_REASONS = 5


def resolve(registry, wanted: str):
    """The registered version ``wanted`` names: a number, or an alias (champion, challenger).

    Raises:
        RegistryError: no such version, or the alias is not set (naming the versions there are).
    """
    if wanted in ALIASES:
        mv = registry.alias_version(wanted)
        if mv is None:
            raise RegistryError(f"'{registry.name}' has no {wanted} yet; name a version with --version N")
        return mv
    return registry.get_version(wanted)


def load_verified(registry, mv, cache_dir: Path):
    """The version's model, verified as a server verifies it before serving (``LoadedModel.load``: metadata.json
    against the registry's hash, every file's SHA-256, the calibrator's pairing) and its golden rows scored
    within the smoke test's tolerance.

    Raises:
        ArtifactIntegrityError: a file or the golden rows do not match; nothing was scored.
    """
    from serving.contract.errors import IntegrityError
    from serving.contract.model import LoadedModel

    export = registry.export_dir(mv, cache_dir)
    try:
        model = LoadedModel.load(export, mv.tags.get("metadata_sha256"))
        error = model.golden_max_error()
    except IntegrityError as exc:
        raise ArtifactIntegrityError(f"version {mv.version} of '{registry.name}': {exc}; nothing was scored") from None
    if not error <= GOLDEN_TOLERANCE:
        raise ArtifactIntegrityError(f"version {mv.version} of '{registry.name}': predictions differ from its golden "
                                     f"rows by {error:.2e} (tolerance {GOLDEN_TOLERANCE:.0e}); nothing was scored")
    return model


@dataclass(frozen=True)
class ScoreJob:
    """A checked job: the input, the output, the columns carried over, and the settings it runs under."""

    source: Source
    output: OutputPlan
    inputs: tuple[str, ...]          # the model's input columns
    keys: tuple[str, ...]            # columns copied to the output beside the row number
    chunk_rows: int
    max_reject_fraction: float


def default_keys(schema: dict, inputs: list[str], columns: tuple[str, ...]) -> list[str]:
    """The schema's columns that are not model inputs (an id, the time column), where the input has them."""
    named = [c["name"] for c in schema.get("columns", [])]
    return [c for c in named if c not in inputs and c in columns]


def plan_job(data: str, out: str, metadata, keep: list[str], overwrite: bool, settings) -> ScoreJob:
    """Check everything a job needs before a row is read (``metadata``: the version's ModelMetadata).

    Raises:
        ConfigError: one line naming what is wrong (the input, a missing column, an existing output).
    """
    output = plan_output(out, overwrite)
    source = open_source(data)
    inputs = [i.name for i in metadata.inputs]
    require_columns(source, inputs, f"an input of version {metadata.version}")
    require_columns(source, list(keep), "named by --keep")
    keys = list(dict.fromkeys([*default_keys(metadata.schema_, inputs, source.columns), *keep]))
    return ScoreJob(source, output, tuple(inputs), tuple(k for k in keys if k not in (ROW, *SCORE_COLUMNS)),
                    settings.scoring.chunk_rows, settings.scoring.max_reject_fraction)


@dataclass(frozen=True)
class ScoreResult:
    """What a job did: rows read, scored and rejected, where it wrote, the input's SHA-256, how long it took."""

    rows: int
    scored: int
    rejected: int
    output: str
    rejects: str
    input_sha256: str
    seconds: float
    version: str
    reasons: dict[str, int] = field(default_factory=dict)   # "column: issue" -> rejected lines

    @property
    def rows_per_s(self) -> float:
        return round(self.rows / self.seconds, 1) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "rows_per_s": self.rows_per_s}


def _schemas(job: ScoreJob):
    import pyarrow as pa

    keys = [job.source.dataset.schema.field(k) for k in job.keys]
    scores = pa.schema([pa.field(ROW, pa.int64()), *keys, pa.field("probability", pa.float64()),
                        pa.field("raw_score", pa.float64()), pa.field("version", pa.string())])
    rejects = pa.schema([pa.field(ROW, pa.int64()), *(pa.field(c, pa.string()) for c in REJECT_COLUMNS[1:])])
    return scores, rejects


def _too_many(job: ScoreJob, version: str, rows: int, rejected: int, reasons: Counter) -> TooManyRejects:
    top = "; ".join(f"{why} ({n} rows)" for why, n in reasons.most_common(SHOWN_REASONS))
    problems = [Problem(column=why.split(": ")[0], issue=why.split(": ", 1)[1], detail="rejected rows", count=n)
                for why, n in reasons.items()]
    return TooManyRejects(f"--data {job.source.location}: {rejected} of {rows} rows break the contract of version "
                          f"{version} ({rejected / rows:.2%} > scoring.max_reject_fraction "
                          f"{job.max_reject_fraction:.2%}); nothing was written; {top}", problems, job.source.location)


def run_job(job: ScoreJob, model, observe: Callable[[dict, np.ndarray], None] | None = None) -> ScoreResult:
    """Score the whole input; the output and its rejects appear together at the end, or nothing does.

    Raises:
        TooManyRejects: more rows broke the contract than ``scoring.max_reject_fraction`` allows.
        ConfigError: the input stopped being readable part way.
    """
    import pyarrow as pa

    start = time.perf_counter()
    version = model.metadata.version
    scores_schema, rejects_schema = _schemas(job)
    rows = scored = 0
    reasons: Counter = Counter()
    with staged_output(job.output, scores_schema, rejects_schema) as staged:
        for batch in chunks(job.source, job.chunk_rows, list(dict.fromkeys([*job.inputs, *job.keys]))):
            done = score_chunk(model, batch, rows + 1)
            kept = pa.array(done.kept)
            table = pa.table({ROW: pa.array(np.flatnonzero(done.kept) + rows + 1, pa.int64()),
                              **{k: batch.column(k).filter(kept) for k in job.keys},
                              "probability": done.probability, "raw_score": done.raw,
                              "version": pa.array([version] * int(done.kept.sum()), pa.string())})
            staged.scores.write_table(table.cast(scores_schema))
            if done.rejects[ROW]:
                staged.rejected.write_table(pa.table(done.rejects, schema=rejects_schema))
                reasons.update(f"{c}: {i}" for c, i in zip(done.rejects["column"], done.rejects["issue"], strict=True))
            if observe is not None and done.probability.size:
                observe(done.columns, done.probability)
            rows += batch.num_rows
            scored += done.probability.size
            log.info("scored %d rows (%d rejected so far)", rows, rows - scored)
        rejected = rows - scored
        if rows and rejected / rows > job.max_reject_fraction:
            raise _too_many(job, version, rows, rejected, reasons)
    return ScoreResult(rows, scored, rejected, str(job.output.path), str(job.output.rejects),
                       input_sha256(job.source), round(time.perf_counter() - start, 3), version, dict(reasons))
