"""The code a version was made from: commit, tag, dirty."""

from __future__ import annotations

import subprocess

import pytest

from tasks.lineage import code_lineage

pytestmark = pytest.mark.unit


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin", "HOME": str(repo)})


def test_commit_tag_and_dirty_tree_are_recorded(tmp_path):
    repo = tmp_path / "pipeline"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "flows.py").write_text("v1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code_lineage(repo) == {"code_commit": head, "code_tag": None, "code_dirty": False}
    _git(repo, "tag", "v1.0.0")
    (repo / "flows.py").write_text("edited\n")
    assert code_lineage(repo) == {"code_commit": head, "code_tag": "v1.0.0", "code_dirty": True}
    (repo / "scratch.txt").write_text("untracked files do not make the code dirty\n")
    (repo / "flows.py").write_text("v1\n")
    assert code_lineage(repo)["code_dirty"] is False


def test_outside_a_checkout_the_code_is_named_unidentified(tmp_path):
    out = code_lineage(tmp_path)
    assert out["code_commit"] is None and "not a git checkout" in out["code_note"]
