"""``python -m flows score``: a registered version scores a CSV or Parquet file (or a directory of them).

The command checks every input before Prefect starts (the model, the version or alias, the input's format
and columns, the output), so bad input is one line and exit 2 with nothing written; then it runs the
``score`` flow (``flows.score``) and prints what a person needs: rows scored and rejected, where they went,
the speed, the batch's drift (a warning line for each threshold crossed) and the MLflow run.

Light at import like the parser: Prefect, TensorFlow and MLflow load inside the command.
"""

from __future__ import annotations

import argparse
import sys

from flows.commands import opt, write_json

ALIASES = ("champion", "challenger")
SCORE_VERSION_HELP = "a registered version number, or the version an alias names: champion or challenger " \
                     "(default: champion)"


def version_or_alias(text: str) -> str:
    """``score --version``: a registered version number (1, 2, 3…) or an alias (champion, challenger)."""
    if text in ALIASES:
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a registered version number (1, 2, 3…) nor "
                                         f"{' nor '.join(ALIASES)}")
    return str(int(text))


def add_score_command(command, model, monitoring) -> None:
    """The ``score`` command's options: ``command`` makes a command with the options every command has,
    ``model`` and ``monitoring`` add ``--model`` and ``--monitoring`` (flows.cli's: one meaning everywhere)."""
    sc = command("score", "score a CSV or Parquet file (or a directory of them) with a registered version: the "
                          "contract checks each row, rejected rows go to a rejects file, the scores to --out")
    model(sc)
    sc.add_argument("--version", type=version_or_alias, default="champion", metavar="N|champion|challenger",
                    help=SCORE_VERSION_HELP)
    sc.add_argument("--data", required=True, metavar="FILE|DIR",
                    help="the rows to score: a CSV with a header row, a Parquet file (.parquet/.pq), or a directory "
                         "of them (read in chunks of scoring.chunk_rows; never whole in memory)")
    sc.add_argument("--out", required=True, metavar="FILE|DIR",
                    help="the scores: a .parquet/.pq or .csv file (its rejects beside it, FILE.rejects.csv), or a "
                         "directory (part-00000.parquet and _rejects.csv); written only when the job succeeds")
    sc.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                    help="an input column to copy to the output beside the row number (repeatable; default: the "
                         "schema's columns that are not model inputs)")
    sc.add_argument("--overwrite", action="store_true", help="replace an existing --out (and its rejects file)")
    monitoring(sc)


def cmd_score(args) -> int:
    from flows.models import choose_model
    from tasks.monitoring.settings import load_monitoring
    from tasks.registry import MlflowRegistry
    from tasks.scoring.job import plan_job, resolve

    chosen = choose_model(args.config, args.model)    # fail fast, before Prefect starts, on bad input
    registry = MlflowRegistry(chosen.settings)
    mv = resolve(registry, args.version)
    plan_job(args.data, args.out, registry.metadata_of(mv), args.keep, args.overwrite, chosen.settings)
    load_monitoring(args.monitoring)
    from flows.score import score_flow

    summary = score_flow(data=str(args.data), out=str(args.out), version=str(mv.version), keep=args.keep,
                         overwrite=args.overwrite, config=chosen.config, monitoring=opt(args.monitoring),
                         model=chosen.model)
    write_json(args.json_out, summary)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    r = summary["result"]
    print(f"{summary['model']} version {summary['version']} scored {r['rows']} rows of {summary['data']}: "
          f"{r['scored']} written to {r['output']}, {r['rejected']} rejected (in {r['rejects']}); "
          f"{r['seconds']:.1f} s, {r['rows_per_s']:.0f} rows/s")
    for reason, n in sorted(r["reasons"].items(), key=lambda kv: -kv[1])[:5]:
        print(f"  rejected: {reason} ({n} rows)")
    drift = summary["drift"]
    measured = {n: f["psi"] for n, f in drift["features"].items() if f.get("psi") is not None}
    pred_psi = drift["prediction"].get("psi")
    if measured:
        worst = max(measured, key=measured.get)
        print(f"drift against training: highest feature PSI {measured[worst]:.3f} ({worst}), prediction PSI "
              f"{'-' if pred_psi is None else f'{pred_psi:.3f}'}; {len(drift['alarms'])} threshold(s) crossed")
    else:
        print(f"drift against training: not measured ({drift['prediction'].get('status')})")
    for alarm in drift["alarms"]:
        print(f"warning: drift: {alarm['message']} — {alarm['action']}", file=sys.stderr)
    print(f"recorded as MLflow {summary['run_link']}")
