"""Batch scoring's logic on small files, a stand-in model (the real one: tests/flows/test_score_flow.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from serving.contract.schema import ColumnSpec, check_column, column_violations
from tasks.errors import ConfigError, DataValidationError
from tasks.scoring.chunk import score_chunk, typed_input
from tasks.scoring.job import ScoreJob, plan_job, run_job
from tasks.scoring.output import plan_output
from tasks.scoring.source import chunks, input_sha256, open_source
from tasks.settings import Settings

pytestmark = pytest.mark.unit

SPECS = {"age": ColumnSpec(name="age", type="integer", min=18, max=100),
         "income": ColumnSpec(name="income", type="numeric", nullable=True, min=0),
         "region": ColumnSpec(name="region", type="categorical", categories=("east", "west"))}


class FakeModel:
    """The part of ``LoadedModel`` a job uses; a score that is a plain function of the inputs."""

    def __init__(self) -> None:
        self.specs = SPECS
        self.metadata = SimpleNamespace(version="7", inputs=[SimpleNamespace(name=n) for n in SPECS],
                                        schema_={"columns": [{"name": n} for n in [*SPECS, "customer_id"]]})
        self.calls = 0

    def score_columns(self, columns):
        self.calls += 1
        raw = columns["age"] / 100 + np.nan_to_num(columns["income"]) / 1e6 + (columns["region"] == "east")
        return raw, 1 / (1 + np.exp(-raw))


def frame(n: int = 10, bad: dict[int, dict] | None = None) -> dict[str, list]:
    rows = {"customer_id": [f"c{i}" for i in range(n)], "age": [20 + i for i in range(n)],
            "income": [1000.0 * i for i in range(n)], "region": ["east" if i % 2 else "west" for i in range(n)]}
    for i, values in (bad or {}).items():
        for k, v in values.items():
            rows[k][i] = v
    return rows


def write(tmp_path: Path, rows: dict, name: str = "in.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".csv"):
        text = {k: [("" if v is None else str(v)) for v in vals] for k, vals in rows.items()}
        pacsv.write_csv(pa.table(text), path)
    else:
        pq.write_table(pa.table(rows), path)
    return path


def read_scores(path) -> pa.Table:
    if path.endswith(".csv"):
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"version": pa.string()}))
    return pq.read_table(path)   # a file, or a directory's Parquet parts (its _rejects.csv skipped)


def read_rejects(path) -> list[dict]:
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"value": pa.string()})).to_pylist()


def job(tmp_path: Path, data: Path, out: str = "out.parquet", *, keep=(), max_reject=0.5, chunk_rows=4) -> ScoreJob:
    settings = Settings(scoring={"chunk_rows": 100, "max_reject_fraction": max_reject})
    planned = plan_job(str(data), str(tmp_path / out), FakeModel().metadata, list(keep), False, settings)
    return ScoreJob(**{**planned.__dict__, "chunk_rows": chunk_rows})


# ---------------------------------------------------------------- the contract's rules, as masks

@pytest.mark.parametrize("spec, values, null", [
    (SPECS["age"], np.array([17.0, 20.5, 30.0, np.inf, np.nan]), np.array([0, 0, 0, 0, 1], bool)),
    (SPECS["region"], np.array(["east", "north", ""], dtype=object), np.array([0, 0, 1], bool)),
    (ColumnSpec(name="b", type="boolean"), np.array([0.0, 1.0, 2.0]), np.zeros(3, bool)),
])
def test_every_rule_gives_the_rows_check_column_reports(spec, values, null):
    masks = column_violations(spec, values, null)
    problems = check_column(spec, values, null)
    assert [(p.issue, p.detail, p.count) for p in problems] == [(i, d, int(m.sum())) for i, d, m in masks]
    assert masks, "each case breaks at least one rule"


def test_a_parquet_number_column_is_typed_as_the_csv_rulebook_types_its_text():
    fast = typed_input(SPECS["income"], pa.array([1.5, None, 3.0, float("nan")]))
    slow = typed_input(SPECS["income"], pa.array(["1.5", "", " 3 ", "NaN"]))
    assert np.array_equal(fast.values, slow.values, equal_nan=True)
    assert fast.null.tolist() == slow.null.tolist() == [False, True, False, True]


def test_a_chunk_rejects_each_bad_row_once_per_rule_and_scores_the_rest():
    rows = frame(6, {1: {"age": 17}, 3: {"region": "north", "age": "old"}, 4: {"income": -5.0}})
    batch = pa.RecordBatch.from_pydict({k: [str(v) for v in vals] for k, vals in rows.items()})
    done = score_chunk(FakeModel(), batch, first_row=11)
    assert done.kept.tolist() == [True, False, True, False, False, True]
    lines = list(zip(done.rejects["row"], done.rejects["column"], done.rejects["issue"], strict=True))
    assert sorted(lines) == [(12, "age", "out of range"), (14, "age", "wrong type"), (14, "region", "unknown category"),
                             (15, "income", "out of range")]
    assert done.rejects["value"][done.rejects["row"].index(14)] == "old"
    assert done.probability.shape == (3,) and done.columns["age"].tolist() == [20.0, 22.0, 25.0]


# ---------------------------------------------------------------- the input

def test_inputs_that_cannot_be_read_are_one_line_each(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty.csv").write_text("")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write(mixed, frame(2), "a.csv")
    write(mixed, frame(2), "b.parquet")
    cases = {str(tmp_path / "nope.csv"): "no such file or directory", str(tmp_path / "notes.txt"): "not a .csv",
             str(tmp_path / "empty.csv"): "unreadable as CSV", str(mixed): "mixes CSV and Parquet",
             "s3://bucket/key.csv": "local files for now"}
    for location, said in cases.items():
        with pytest.raises(ConfigError, match=said) as caught:
            open_source(location)
        assert "\n" not in str(caught.value)


def test_a_directory_is_read_in_file_order_in_bounded_chunks(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder, frame(5), "b.parquet")
    write(folder, {k: v[:3] for k, v in frame(3).items()} | {"customer_id": ["a0", "a1", "a2"]}, "a.parquet")
    source = open_source(str(folder))
    got = [b.column("customer_id").to_pylist() for b in chunks(source, 2, ["customer_id"])]
    assert [len(b) for b in got] == [2, 1, 2, 2, 1]
    assert sum(got, []) == ["a0", "a1", "a2", "c0", "c1", "c2", "c3", "c4"]
    assert source.rows == 8 and len(input_sha256(source)) == 64


def test_a_model_input_missing_from_the_file_is_named(tmp_path):
    data = write(tmp_path, {k: v for k, v in frame(3).items() if k != "income"})
    with pytest.raises(ConfigError, match=r"no column 'income' \(an input of version 7\); its columns: customer_id"):
        job(tmp_path, data)
    with pytest.raises(ConfigError, match=r"no column 'branch' \(named by --keep\)"):
        job(tmp_path, write(tmp_path, frame(3), "ok.csv"), keep=["branch"])


# ---------------------------------------------------------------- the output

def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "s.parquet").write_text("x")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        plan_output(str(tmp_path / "s.parquet"), overwrite=False)
    assert plan_output(str(tmp_path / "s.parquet"), overwrite=True).rejects == tmp_path / "s.parquet.rejects.csv"
    with pytest.raises(ConfigError, match=r"\.json is not an output format"):
        plan_output(str(tmp_path / "s.json"), overwrite=False)
    assert plan_output(str(tmp_path / "d"), overwrite=False).directory


@pytest.mark.parametrize("out", ["s.parquet", "s.csv", "nested/deeper/dir"])
def test_a_job_writes_scores_and_rejects_together(tmp_path, out):
    data = write(tmp_path, frame(9, {2: {"age": 150}}), "in.parquet")
    result = run_job(job(tmp_path, data, out), FakeModel())
    assert (result.rows, result.scored, result.rejected) == (9, 8, 1)
    scores = read_scores(result.output)
    assert scores.column_names == ["row", "customer_id", "probability", "raw_score", "version"]
    assert scores.column("row").to_pylist() == [1, 2, 4, 5, 6, 7, 8, 9]
    assert set(scores.column("version").to_pylist()) == {"7"}
    rejects = read_rejects(result.rejects)
    assert rejects == [{"row": 3, "column": "age", "issue": "out of range", "detail": "allowed range is [18, 100]",
                        "value": "150"}]
    assert not [p for p in tmp_path.rglob(".*part*")], "the staging directory is gone"


def test_too_many_rejects_fail_the_job_and_write_nothing(tmp_path):
    data = write(tmp_path, frame(10, {i: {"region": "north"} for i in range(3)}))
    with pytest.raises(DataValidationError, match=r"3 of 10 rows break .*30\.00% > scoring.max_reject_fraction "
                                                  r"20\.00%.*region: unknown category \(3 rows\)"):
        run_job(job(tmp_path, data, "deep/s.parquet", max_reject=0.2), FakeModel())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"], "no output, no rejects, no directory made"


def test_the_scores_are_the_models_chunk_by_chunk(tmp_path):
    data = write(tmp_path, frame(10))
    model, seen = FakeModel(), []
    result = run_job(job(tmp_path, data, chunk_rows=4), model, lambda cols, p: seen.append(p.size))
    assert model.calls == 3 and seen == [4, 4, 2]
    scores = pq.read_table(result.output)
    typed = {"age": np.arange(20.0, 30.0), "income": np.arange(10) * 1000.0,
             "region": np.array(["east" if i % 2 else "west" for i in range(10)], dtype=object)}
    raw, prob = FakeModel().score_columns(typed)
    assert scores.column("probability").to_pylist() == prob.tolist()
    assert scores.column("raw_score").to_pylist() == raw.tolist()
