"""The input of a batch scoring job: a CSV or Parquet file, or a directory of them, read in chunks.

pyarrow datasets read it: a chunk of ``scoring.chunk_rows`` rows at a time, with no read-ahead beyond the
next batch, so the job's memory is bounded by the chunk (and, for Parquet, by the file's row group), never
by the input. A CSV's every column is read as text and typed by the contract's own rulebook
(``serving.contract.inputs``, as training reads a CSV), so a bad value is a rejected row, not a read error.

    open_source(location)          the files, their format and columns; ConfigError naming what is wrong
    require_columns(source, ...)   every model input (and --keep column) is a column of the input
    chunks(source, rows)           the record batches, in the input's order
    input_sha256(source)           the SHA-256 of the file (of a directory: of its files' digests)

Local paths only for now; an ``s3://`` location is refused with one line (the reader is the seam).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serving.contract.digest import sha256_file
from serving.contract.schema import canonical_digest
from tasks.errors import ConfigError

INPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
SHOWN_COLUMNS = 12


@dataclass(frozen=True)
class Source:
    """A readable input: where it is, its files (one, or a directory's, sorted), their format and columns."""

    location: str
    files: tuple[Path, ...]
    format: str                      # csv | parquet
    columns: tuple[str, ...]
    dataset: object                  # the pyarrow dataset that reads it

    @property
    def rows(self) -> int | None:
        """The row count when the format records it (Parquet), else None."""
        return self.dataset.count_rows() if self.format == "parquet" else None


def _files(location: str) -> tuple[list[Path], str]:
    if location.startswith("s3://"):
        raise ConfigError(f"--data {location}: batch scoring reads local files for now (copy the object here)")
    path = Path(location)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_FORMATS
                       and not p.name.startswith((".", "_")))
        if not files:
            raise ConfigError(f"--data {location}: a directory with no .csv, .parquet or .pq file in it")
    elif path.exists():
        files = [path]
    else:
        raise ConfigError(f"--data {location}: no such file or directory")
    formats = {INPUT_FORMATS.get(p.suffix.lower()) for p in files}
    if None in formats:
        raise ConfigError(f"--data {location}: not a .csv, .parquet or .pq file")
    if len(formats) > 1:
        raise ConfigError(f"--data {location}: mixes CSV and Parquet files; give one format")
    return files, formats.pop()


def open_source(location: str) -> Source:
    """The input at ``location``, opened (its header or footer read, no row yet).

    Raises:
        ConfigError: missing, not CSV or Parquet, unreadable or empty (one line naming the file).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds

    files, fmt = _files(location)
    paths = [str(p) for p in files]
    try:
        dataset = ds.dataset(paths, format=fmt)
        if fmt == "csv":   # every column as text: the contract types it, a bad value is a rejected row
            text = {name: pa.string() for name in dataset.schema.names}
            options = pacsv.ConvertOptions(column_types=text, strings_can_be_null=False)
            dataset = ds.dataset(paths, format=ds.CsvFileFormat(convert_options=options))
        columns = tuple(dataset.schema.names)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"--data {location}: unreadable as {fmt.upper()}: {_first_line(exc)}") from None
    return Source(location, tuple(files), fmt, columns, dataset)


def require_columns(source: Source, needed: list[str], what: str) -> None:
    """Raise ConfigError naming each column of ``needed`` the input lacks (in every row, so no row could score)."""
    missing = [c for c in needed if c not in source.columns]
    if missing:
        shown = ", ".join(source.columns[:SHOWN_COLUMNS]) + (", …" if len(source.columns) > SHOWN_COLUMNS else "")
        raise ConfigError(f"--data {source.location}: no column {', '.join(repr(c) for c in missing)} ({what}); "
                          f"its columns: {shown or 'none'}")


def chunks(source: Source, chunk_rows: int, columns: list[str]) -> Iterator:
    """The input's ``columns`` as record batches of at most ``chunk_rows`` rows, in the input's order.

    Raises:
        ConfigError: a file stops being readable part way (a CSV row with the wrong number of fields).
    """
    import pyarrow as pa

    batches = source.dataset.to_batches(columns=columns, batch_size=chunk_rows, batch_readahead=0,
                                        fragment_readahead=0, use_threads=True)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"--data {source.location}: unreadable: {_first_line(exc)}") from None
        if batch.num_rows:
            yield batch


def input_sha256(source: Source) -> str:
    """The SHA-256 of the input file; of a directory, the digest of each file's relative path and SHA-256."""
    if len(source.files) == 1 and not Path(source.location).is_dir():
        return sha256_file(source.files[0])
    root = Path(source.location)
    return canonical_digest({p.relative_to(root).as_posix(): sha256_file(p) for p in source.files})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
