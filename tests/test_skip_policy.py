"""Under CI=true an unlisted skip fails the run (tests/conftest.py's ALLOWED_SKIPS); outside CI it stays a skip."""

from __future__ import annotations

import pytest

from tests import conftest

pytestmark = pytest.mark.unit

# The inner run loads only the policy's hooks, not the tier check: its tests carry no tier marker.
HOOKS = "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n"
TESTS = """
import pytest

def test_runs():
    pass

def test_skips_in_the_body():
    pytest.skip("no tmpfs here")

@pytest.fixture
def needs_root():
    pytest.skip("needs root")

def test_skips_in_a_fixture(needs_root):
    pass

@pytest.mark.skipif(True, reason="a condition")
def test_skipped_by_a_marker():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_to_fail():
    assert False
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(HOOKS)
    pytester.makepyfile(test_suite=TESTS)
    return pytester


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_every_unlisted_skip_fails_the_run_with_its_reason(suite, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    result = suite.runpytest("-rA")
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1)   # a skip in setup reads as an error
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped under CI=true and not in ALLOWED_SKIPS*no tmpfs here*",
                                 "*skipped under CI=true and not in ALLOWED_SKIPS*needs root*",
                                 "*skipped under CI=true and not in ALLOWED_SKIPS*a condition*"])


def test_a_listed_skip_stays_a_skip_under_ci(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(conftest, "ALLOWED_SKIPS", {"test_suite.py::test_skips_in_the_body": "a reason",
                                                    "test_suite.py::test_skips_in_a_fixture": "a reason",
                                                    "test_suite.py::test_skipped_by_a_marker": "a reason"})
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_a_module_skipped_at_collection_fails_under_ci(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(HOOKS)
    pytester.makepyfile(test_gone="import pytest\npytest.skip('no iproute2', allow_module_level=True)\n")
    result = pytester.runpytest()
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped under CI=true*no iproute2*"])


def test_outside_ci_a_skip_is_a_skip(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)


def test_every_listed_skip_has_a_reason():
    assert all(reason.strip() for reason in conftest.ALLOWED_SKIPS.values())
