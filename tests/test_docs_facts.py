"""The figures and names the hand-written documentation quotes, checked against the code and the results.

The explanation and reference pages that are not generated (docs/explanation/, three pages of
docs/reference/) and deployments/HANDOVER.md quote benchmark results, configuration keys, environment
variables, constants, paths, tests and thresholds. Each test here fails when a quote and its source part.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from serving.contract.constants import GOLDEN_TOLERANCE
from serving.settings import ServingSettings
from tasks.monitoring.settings import MonitoringSettings
from tasks.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DOCS = ROOT / "docs"
HANDOVER = ROOT / "deployments" / "HANDOVER.md"
PAGES = sorted([*(DOCS / "explanation").glob("*.md"),
                *(DOCS / "reference" / name for name in ("data-contract.md", "state.md", "tests-and-benchmarks.md"))])
CODE_DIRS = ("flows", "tasks", "serving", "bench", "testkit", "tests")
# Names that belong to other programs, not this code: boto3's environment.
FOREIGN_NAMES = re.compile(r"^(AWS_|MALLOC_ARENA_MAX$)")     # boto3's and glibc's


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def flat(page: str) -> str:
    """The page with line breaks as spaces, so a quoted phrase may wrap."""
    return re.sub(r"\s+", " ", page)


def backticked(page: str) -> set[str]:
    """Every `quoted` token; a key of metadata.json (`metadata.json` `calibration.candidates`) is not one of ours."""
    prose = flat(re.sub(r"```.*?```", " ", page, flags=re.S))
    after = "`metadata.json` "
    return {m.group(1) for m in re.finditer(r"`([^`]+)`", prose)
            if prose[max(0, m.start() - len(after)):m.start()] != after}


def code_text() -> str:
    """Our Python source. Not what lies under a hidden directory: bench/.venv-kserve, the KServe benchmark's
    environment (bench/README.md), holds 9,600 files of other projects (180 MB; reading and searching it took
    10 s of the unit tier)."""
    return "\n".join(text(p) for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")
                     if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def site_nav() -> set[str]:
    """The pages of mkdocs.yml's nav, relative to docs/."""
    return set(re.findall(r":\s*([\w/-]+\.md)\s*$", text(ROOT / "mkdocs.yml"), flags=re.M))


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): text(p) for p in PAGES}


@pytest.fixture(scope="module")
def all_quoting(pages) -> dict[str, str]:
    return {**pages, "deployments/HANDOVER.md": text(HANDOVER)}


def test_the_pages_exist_and_none_is_empty(pages):
    assert len(pages) == 7, sorted(pages)
    assert all(len(body) > 500 for body in pages.values()), {k: len(v) for k, v in pages.items()}


def test_no_page_has_a_bash_block(pages):
    # Every ```bash command of the docs must be run by a test; these pages illustrate with ```text instead.
    assert [name for name, body in pages.items() if "```bash" in body] == []


def _resolves(model: type, dotted: str) -> bool:
    for part in dotted.split("."):
        if part == "*":
            return True
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        model = field.annotation
    return True


def test_every_config_key_the_pages_name_exists(all_quoting):
    roots = {Settings: set(Settings.model_fields), MonitoringSettings: set(MonitoringSettings.model_fields)}
    unknown = []
    for name, body in all_quoting.items():
        for token in backticked(body):
            if not re.fullmatch(r"[a-z_]+(\.([a-z_0-9]+|\*))+", token):
                continue
            owners = [m for m, fields in roots.items() if token.split(".")[0] in fields]
            if owners and not any(_resolves(m, token) for m in owners):
                unknown.append(f"{name}: {token}")
    assert unknown == []


def test_every_environment_variable_and_constant_the_pages_name_exists(all_quoting):
    serving_settings, code = text(ROOT / "serving" / "settings.py"), code_text()
    unknown = []
    for name, body in all_quoting.items():
        for token in backticked(body):
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", token) or FOREIGN_NAMES.match(token):
                continue
            source = serving_settings if token.startswith("SERVING_") else code
            if not re.search(rf"\b{token}\b", source):
                unknown.append(f"{name}: {token}")
    assert unknown == []


def test_every_repository_path_and_test_the_pages_name_exists(all_quoting):
    tests_source = "\n".join(text(p) for p in (ROOT / "tests").rglob("*.py"))
    nav_files = site_nav()
    missing = []
    for name, body in all_quoting.items():
        for token in backticked(body):
            token = token.split("::")[0].split(" ")[0]
            if re.fullmatch(r"test_\w+", token):
                if f"def {token}(" not in tests_source:
                    missing.append(f"{name}: {token}")
            elif token.startswith("docs/") and token.endswith(".md"):
                if token.removeprefix("docs/") not in nav_files:
                    missing.append(f"{name}: {token} (not a page of mkdocs.yml's nav)")
            elif re.fullmatch(r"(flows|tasks|serving|tests|bench|deployments|configs|docs|testkit)/[\w./*-]+", token):
                if "*" in token:
                    if not list(ROOT.glob(token)):
                        missing.append(f"{name}: {token}")
                elif not (ROOT / token).exists():
                    missing.append(f"{name}: {token}")
    assert missing == []


def test_the_quoted_benchmark_figures_match_the_results():
    page = flat(text(DOCS / "explanation" / "honest-metrics.md"))
    training = {r["dataset"]: r for r in json.loads(text(ROOT / "bench" / "results" / "training.json"))["results"]}
    floor = json.loads(text(ROOT / "bench" / "results" / "ece_floor.json"))
    anes, diabetes = floor["anes96"], floor["diabetes"]
    raw_ece = training["anes96"]["calibration"]["candidates"]["none"]["ece"]
    assert f"anes96 set ({anes['rows']} rows)" in page
    assert f"the raw scores' ECE of {raw_ece:.3f}" in page
    assert training["anes96"]["calibration"]["chosen"] == anes["calibrator"] == "sigmoid"
    assert f"`auto` ships sigmoid and the cross-fitted ECE is {anes['ece']}" in page
    assert f"diabetes set ({diabetes['rows']} rows)" in page
    assert f"median ECE is {diabetes['perfect_median']}, and our {diabetes['ece']}" in page
    assert f"at its {round(diabetes['measured_percentile'] * 100)}th percentile" in page
    assert diabetes["perfect_share_at_or_below_target"] < 0.01     # "a bound of 0.02 there is below the noise"


def test_the_calibration_test_level_quoted_is_the_codes():
    from tasks.training.calibrate import CALIBRATION_TEST_LEVEL

    page = flat(text(DOCS / "explanation" / "honest-metrics.md"))
    assert f"fewer than {CALIBRATION_TEST_LEVEL:.0%}".replace("%", " %") in page


def test_the_soak_and_the_unit_tiers_durations_quoted_are_the_codes():
    short = re.search(r'"FAULT_SOAK_SECONDS", (\d+)\)', text(ROOT / "tests" / "faults" / "test_load_faults.py"))
    plateau = re.search(r'"PLATEAU_SOAK_SECONDS", (\d+)\)', text(ROOT / "tests" / "faults" / "test_memory_plateau.py"))
    makefile = text(ROOT / "Makefile")
    minutes = int(re.search(r"^SOAK_SECONDS \?= (\d+)$", makefile, flags=re.M).group(1)) // 60
    plateau_s = int(re.search(r"^PLATEAU_SECONDS \?= (\d+)$", makefile, flags=re.M).group(1))
    reliability = flat(text(DOCS / "explanation" / "reliability.md"))
    assert f"the two soaks at length: {minutes} and {plateau_s // 60} minutes" in reliability
    assert f"the two soaks run {short.group(1)} and {plateau.group(1)} seconds here, as in make test" in reliability
    assert f"(make test: {short.group(1)} s and {plateau.group(1)} s)" in makefile
    tiers = flat(text(DOCS / "reference" / "tests-and-benchmarks.md"))
    assert f"in `make test` its soak runs {short.group(1)} seconds and the memory plateau soak {plateau.group(1)}; " \
           f"`make soak` runs the first for {minutes} minutes (`FAULT_SOAK_SECONDS={minutes * 60}`), the length " \
           f"whose memory growth per hour is asserted, then the plateau for {plateau_s // 60} " \
           f"(`PLATEAU_SOAK_SECONDS={plateau_s}`)" in tiers
    assert "under 60 s (the goal in the marker's description)" in tiers
    assert '"unit: no network, no servers, at most a tiny model; the edit loop\'s tier (make test-fast, < 60 s)"' \
        in text(ROOT / "pyproject.toml")


def test_the_gate_metrics_the_page_defines_are_the_codes():
    from typing import get_args

    from tasks.settings import Metric

    page = text(DOCS / "explanation" / "quality-gate.md")
    section = page.split("## Bounds relative to chance")[1].split("\n## ")[0]
    defined = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))
    assert {"roc_auc", "pr_auc_lift", "brier_skill", "ece_relative"} <= defined
    assert defined <= set(get_args(Metric))
    assert {"pr_auc", "brier", "ece"} <= set(get_args(Metric))     # "the absolute keys stay accepted"


# ---------------------------------------------------------------- deployments/HANDOVER.md

def test_the_guides_prefect_table_lists_every_deployment_and_schedule():
    guide, spec = text(HANDOVER), yaml.safe_load(text(ROOT / "prefect.yaml"))
    table = "\n".join(line for line in guide.splitlines() if line.startswith("| `"))
    for deployment in spec["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function).name
        assert f"| `{flow}/{deployment['name']}` |" in table, deployment["name"]
        for schedule in deployment.get("schedules") or []:
            if "cron" in schedule:
                assert f"cron `{schedule['cron']}` UTC" in table, schedule
            else:
                assert f"every {schedule['interval']} s" in table, schedule


def test_the_guides_checklist_quotes_the_monitoring_thresholds():
    m, guide = MonitoringSettings(), flat(text(HANDOVER))

    def pct(x: float) -> str:
        return f"{x * 100:g} %"

    lat, err = m.latency_ms, m.error_rate
    quoted = [
        f"| P95 > {lat.p95_warning:g} ms | P95 > {lat.p95_critical:g} ms for {lat.p95_minutes} min; "
        f"P99 > {lat.p99_critical:g} ms for {lat.p99_minutes} min |",
        f"drop > {pct(m.volume.drop)}, spike > {pct(m.volume.spike)}",
        f"| > {pct(err.warning)} | > {pct(err.critical)} for {err.minutes} min; "
        f"5xx > {pct(err.server_errors)} for {err.server_minutes} min |",
        f"\"not enough data\" under {m.min_rows_for_drift} rows | ≥ {m.psi.warning:g} | > {m.psi.critical:g} on a "
        f"feature, or > {m.psi.warning:g} on more than {m.psi.many_features} |",
        f"mean shift > {m.prediction.mean_shift:g}, variance +{pct(m.prediction.variance_increase)}, "
        f"extremes > {pct(m.prediction.extreme_share)}",
        f"(at least {m.min_labels} labels) | ≥ {m.ece.warning:g}; rising over 24 h (+{m.ece.trend_rise:g}) | "
        f"≥ {m.ece.critical:.2f} for {m.ece.critical_hours} consecutive hours",
        f"ROC-AUC {m.performance.roc_auc_drop:g} or precision {m.performance.precision_drop * 100:g} points below "
        "training",
    ]
    assert [q for q in quoted if q not in guide] == []


def test_the_guides_other_figures_are_the_codes():
    guide = flat(text(HANDOVER))
    days = ServingSettings.model_fields["feedback_ttl_s"].default // 86400
    assert f"for up to {days} days (`SERVING_FEEDBACK_TTL_S`" in guide
    holdout = Settings().recalibration.holdout_fraction
    assert f"newest {holdout * 100:g} % of those labels held out" in guide
    assert f"golden predictions within {GOLDEN_TOLERANCE:.0e}".replace("e-0", "e-") in guide
    promote = text(ROOT / "flows" / "promote.py")
    assert "approval_timeout_s: int = 24 * 3600" in promote
    spec = yaml.safe_load(text(ROOT / "prefect.yaml"))
    [deployment] = [d for d in spec["deployments"] if d["name"] == "promote"]
    assert deployment["parameters"]["approval_timeout_s"] == 24 * 3600
    assert "`approval_timeout_s` (24 h by default)" in guide


def test_the_exit_codes_the_pages_quote_are_the_command_lines(all_quoting):
    source = "\n".join(text(p) for p in (ROOT / "flows").glob("*.py"))
    defined = {int(n) for n in re.findall(r"\bEXIT_[A-Z_]+ = (\d+)", source)}
    defined |= {int(n) for n in re.findall(r"\breturn (\d+) if ", source)}
    quoted = {f"{name}: exit {n}": int(n) for name, body in all_quoting.items()
              for n in re.findall(r"\bexits? (\d+)\b", flat(body))}
    assert {k: v for k, v in quoted.items() if v not in defined} == {}


def test_the_extremes_of_the_prediction_check_are_the_servers():
    from serving.monitoring.counts import EXTREME_HIGH, EXTREME_LOW

    page = flat(text(DOCS / "explanation" / "monitoring.md"))
    assert f"share of predictions below {EXTREME_LOW:g} or above {EXTREME_HIGH:g}" in page
