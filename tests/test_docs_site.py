"""The documentation site builds with every link and anchor checked; the README stays a five-minute read;
the figures the pages give are the ones the code and the deployments use."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.flows.test_guide_commands import DOCS, OWN_DATA, OWN_DATA_PAGE, documented_commands, site_pages, who_runs

pytestmark = pytest.mark.unit

README_MAX_LINES = 200


def test_the_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing anchor or a page left out of the nav fails the build."""
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    built = [page for page in site_pages()
             if (tmp_path / "site" / page.removesuffix(".md").removesuffix("index") / "index.html").exists()]
    assert built == site_pages()


def test_make_docs_serves_the_site_the_tests_build():
    """`make docs` serves this mkdocs.yml (live reload), on a port other than the model server's 8000."""
    recipe = subprocess.run(["make", "-n", "docs"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    (serve,) = [line for line in recipe.splitlines() if "mkdocs serve" in line]
    assert "--config-file" not in serve and ":8000" not in serve, serve


def test_the_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the site holds the rest"


def test_the_readmes_links_lead_somewhere():
    """The README is not part of the site, so mkdocs does not check its links: every relative one names a file."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert links and missing == []


def test_the_readmes_three_commands_are_the_tutorials():
    """"Your own data in three commands" is the tutorial's path, word for word, so the tutorial's test runs both."""
    readme = [cmd for doc, cmd in documented_commands() if doc == "README.md" and who_runs(cmd) == [OWN_DATA]]
    tutorial = [cmd for doc, cmd in documented_commands() if doc == OWN_DATA_PAGE]
    assert len(readme) == 3 and [cmd for cmd in tutorial if cmd in readme] == readme, (readme, tutorial)


def test_every_page_of_the_site_is_read_for_commands():
    assert {f"docs/{page}" for page in site_pages()} <= set(DOCS)
    assert {"README.md", "deployments/HANDOVER.md"} <= set(DOCS)


def test_the_schedules_the_pages_give_are_prefect_yamls():
    """The how-to pages say weekly (Monday 03:00 UTC), hourly and every 6 h: prefect.yaml's schedules."""
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert deployments["retrain"]["schedules"][0]["cron"] == "0 3 * * 1"
    assert deployments["monitor"]["schedules"][0]["cron"] == "0 * * * *"
    assert deployments["health"]["schedules"][0]["interval"] == 6 * 3600
    page = (ROOT / "docs" / "how-to" / "promote-from-ui.md").read_text()
    assert "| weekly" in page and "| hourly |" in page and "| every 6 h |" in page


def test_the_presigned_urls_lifetime_the_s3_page_gives_is_the_codes():
    from tasks.deploy.transports.s3 import PRESIGN_SECONDS

    assert f"valid for {PRESIGN_SECONDS // 60} minutes" in (ROOT / "docs" / "how-to" / "s3.md").read_text()


def test_the_unit_tiers_time_the_readme_gives_is_the_markers_goal():
    """The README's time for `make test-fast` is the goal the unit marker declares, not a number of its own."""
    goal = re.search(r'"unit: [^"]*< (\d+) s\)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"under {goal} s, the tier's goal in `pyproject.toml`" in (ROOT / "README.md").read_text()


def _duration(seconds: float) -> str:
    """As the README writes a measured time: "1 s", "2 min 6 s"."""
    whole = round(seconds)
    return f"{max(1, whole)} s" if whole < 60 else f"{whole // 60} min {whole % 60} s"


def test_the_readmes_times_are_the_measured_ones():
    """The README's times are bench/first_use.py's last run and the last clean-clone CI's, not prose."""
    import json

    first_use = json.loads((ROOT / "bench" / "results" / "first_use.json").read_text())
    steps = {step["step"]: step["seconds"] for step in first_use["steps"]}
    make_test = json.loads((ROOT / "bench" / "results" / "make_test.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for phrase in (f"`make install` comes first: {_duration(steps['make install'])} here",
                   f"The release itself took {_duration(steps['make run'])} on this two-core machine",
                   f"your own model answering took {_duration(first_use['own_data_seconds'])} on this machine",
                   f"`make install` {_duration(steps['make install'])}, `infer-schema` "
                   f"{_duration(steps['infer-schema'])}, `release` {_duration(steps['release'])} (8,000 rows, "
                   f"{first_use['data']['positive_rate'] * 100:.0f} % positives",
                   f"{round(make_test['seconds'] / 60)} minutes on a two-core machine (a clean clone, "
                   f"{make_test['date']})"):
        assert phrase in readme, phrase
    assert first_use["own_data_seconds"] < 600          # the "under 10 minutes, install included"
