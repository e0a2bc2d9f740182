"""A fleet's stages report each host as it finishes: ``stage: host 2/3 (h2)``, failures included."""

from __future__ import annotations

import re

import pytest
from prefect import task

from tasks.deploy.targets import Target
from tasks.progress import Step, reporting
from testkit.net import free_port

pytestmark = pytest.mark.integration


@task(name="stage")
def _stage(target: Target, refuse: bool = False) -> str:
    if refuse:
        raise RuntimeError(f"{target.name} refused")
    return target.name


def test_each_host_is_reported_as_it_finishes_with_its_count(prefect_server, tmp_path):
    from flows.fleet_stages import in_parallel

    targets = [Target(name=f"h{i}", transport="local", base_dir=tmp_path / f"h{i}", port=free_port())
               for i in range(1, 4)]
    steps: list[Step] = []
    with reporting(steps.append):
        out = in_parallel(_stage, targets, limit=2, per_target={"h2": {"refuse": True}})
    assert list(out) == ["h1", "h2", "h3"] and out["h1"] == "h1" and isinstance(out["h2"], RuntimeError)
    assert [(s.done, s.total) for s in steps] == [(1, 3), (2, 3), (3, 3)]
    hosts = [re.fullmatch(r"stage: host (\d)/3 \((h\d)\)( failed)?", s.what).groups() for s in steps]
    assert [n for n, _h, _f in hosts] == ["1", "2", "3"]
    assert sorted((h, bool(f)) for _n, h, f in hosts) == [("h1", False), ("h2", True), ("h3", False)]
