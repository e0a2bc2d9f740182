"""The approval form in both Prefect UIs, driven in headless Chromium (Playwright on Debian's chromium).

A real ``prefect server start`` with both UIs (the classic one at ``/``, the new one at ``/v2``), a process
worker and ``prefect deploy --all`` (testkit.prefect_stack). Version 1 is the champion, served by the local
target; version 2 is blessed, not deployed. In each UI an operator opens a paused ``promote/promote`` run,
finds Resume where that UI puts it, fills the form as it appears and submits it: once leaving Approve off
(a rejection: the registry and the served version do not move), once switching it on (the candidate becomes
the champion and is served). The runs list then names each outcome. Each step is screenshotted into the
test's tmp_path; a failure's message lists the screenshots. Only 127.0.0.1 is reached: the new UI's
requests elsewhere (its analytics) are refused in the browser and listed.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from testkit.prefect_stack import Api, prefect_stack
from tests.conftest import FAST_CONFIG, mlflow_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_MS = 30_000            # the longest any element of a page may take to appear
OUTCOME = {True: "Approved", False: "Rejected"}


def labelled(name: str) -> re.Pattern:
    """A field's label as both UIs write it: its title, followed by " (Optional)" when it is not required."""
    return re.compile(rf"^{name}( \(Optional\))?$")


class Classic:
    """The classic UI, at /: a Resume button beside Cancel opens the form; Submit sends it."""

    name, prefix, submit = "classic", "", "Submit"

    def open_form(self, page):
        page.get_by_role("button", name="Resume", exact=True).click(timeout=WAIT_MS)
        return page.get_by_role("dialog")

    def field(self, page, dialog, label: str):
        header = page.locator(".schema-form-property__label", has_text=labelled(label))
        return dialog.locator(".schema-form-property").filter(has=header)

    def switch(self, page, dialog):
        return self.field(page, dialog, "Approve").get_by_role("switch")

    def labels(self, dialog) -> list[str]:
        return dialog.locator(".schema-form-property__label").all_inner_texts()

    def text(self, page, dialog, label: str):
        return self.field(page, dialog, label).locator("textarea")


class New:
    """The new UI, at /v2: Resume is an item of the ⋮ "Open menu" at the top right; the form's button is
    Resume too."""

    name, prefix, submit = "new", "/v2", "Resume"

    def open_form(self, page):
        page.get_by_role("button", name="Open menu", exact=True).first.click(timeout=WAIT_MS)
        page.get_by_role("menuitem", name="Resume", exact=True).click(timeout=WAIT_MS)
        return page.get_by_role("dialog")

    def switch(self, page, dialog):
        return dialog.get_by_role("switch", name=labelled("Approve"))

    def text(self, page, dialog, label: str):
        return dialog.get_by_label(labelled(label))

    def labels(self, dialog) -> list[str]:
        return dialog.locator("label[data-slot=label]").all_inner_texts()


class Browser:
    """One Chromium page that reaches 127.0.0.1 only, records what each resume sends and screenshots steps."""

    def __init__(self, pw, shots) -> None:
        exe = shutil.which("chromium")
        if exe is None:
            pytest.fail("chromium is not installed; `make test` installs Debian's chromium")
        self.browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(WAIT_MS)
        self.shots, self.refused, self.sent, self.answers, self.retries = shots, [], {}, [], 0
        self.page.route("**/*", self._local_only)
        self.page.on("request", self._record)
        self.page.on("response", self._answer)

    def _local_only(self, route) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()

    def _record(self, request) -> None:
        found = re.search(r"/api/flow_runs/([0-9a-f-]{36})/resume$", request.url)
        if found and request.method == "POST":
            self.sent[found.group(1)] = json.loads(request.post_data or "{}").get("run_input")

    def _answer(self, response) -> None:
        if "/resume" in response.url or "/validate" in response.url:
            self.answers.append(f"{response.status} {response.url.rsplit('/api/', 1)[-1]}: {response.text()[:300]}")

    def shot(self, name: str) -> None:
        path = self.shots / f"{len(list(self.shots.iterdir())):02d}-{name}.png"
        self.page.screenshot(path=path)

    def check(self, ok: bool, what: str) -> None:
        """Assert with the screenshots so far named in the message (the last one shows the failing screen)."""
        if not ok:
            self.shot("failure")
            pytest.fail(f"{what}\nscreenshots: {sorted(str(p) for p in self.shots.iterdir())}")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, kind, error, _tb) -> None:
        """Any other error (an element that never appeared, a run that ended otherwise) fails with the
        screenshots too; the browser is closed either way."""
        try:
            if error is not None and not isinstance(error, pytest.fail.Exception):
                self.check(False, f"{kind.__name__}: {str(error)[:2000]}")
        finally:
            self.browser.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_frame):
    """The Prefect stack with both UIs; version 1 released to "local" (champion), version 2 blessed only."""
    with prefect_stack(tmp_path_factory.mktemp("prefect-ui"), FAST_CONFIG, demo_frame, ui=True) as running:
        api, log = Api(running["api"]), running["worker_log"]
        api.wait(api.run("release/retrain", {"data": str(running["data"])}), {"COMPLETED"}, log)
        api.wait(api.run("release/retrain", {"data": str(running["data"]), "targets": []}), {"COMPLETED"}, log)
        yield {**running, "client": mlflow_client(running["home"])[0], "api_client": api}


@pytest.fixture(scope="module")
def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed; `make test` installs it (requirements.txt)")
    with sync_playwright() as pw:
        yield pw


def served(stack) -> tuple[str, str]:
    """(the champion's registry version, the export version the local target serves)."""
    from tasks.deploy.targets import load_targets
    from tasks.deploy.transports import transport_for

    champion = stack["client"].get_model_version_by_alias("test-model", "champion").version
    status = transport_for(load_targets(stack["targets"], stack["home"])["local"]).host("status")
    return str(champion), str(status["default_version"])


def export_of(stack, version: str) -> str:
    return stack["client"].get_model_version("test-model", version).tags["export_version"]


def submit(browser: Browser, ui, dialog, resumed, presses: int = 3, wait_s: float = 10) -> None:
    """Press the form's button until ``resumed()``: again, at most ``presses`` times, only while the server
    answers 5xx (the SQLite server's "database is locked" under load; the UI then shows "Oops. Something went
    wrong." and keeps the form filled), as an operator would."""
    for _ in range(presses):
        seen = len(browser.answers)
        dialog.get_by_role("button", name=ui.submit, exact=True).click()
        end = time.monotonic() + wait_s
        while not resumed() and time.monotonic() < end:
            browser.page.wait_for_timeout(250)
        if resumed() or not any(a.startswith("5") for a in browser.answers[seen:]):
            return
        browser.retries += 1


def decide(browser: Browser, ui, stack, version: str, approve: bool) -> dict:
    """Start a promotion of ``version``, answer its form in ``ui`` as an operator would; the finished run."""
    api, log = stack["api_client"], stack["worker_log"]
    run_id = api.run("promote/promote", {"version": int(version), "poll_interval_s": 1})
    api.wait(run_id, {"PAUSED"}, log)
    page, verdict = browser.page, OUTCOME[approve].lower()
    page.goto(f"{stack['ui']}{ui.prefix}/runs/flow-run/{run_id}")
    browser.shot(f"{ui.name}-{verdict}-paused")
    dialog = ui.open_form(page)
    switch = ui.switch(page, dialog)
    browser.check(switch.get_attribute("aria-checked") == "false", f"{ui.name}: Approve is not off as it appears")
    # Required fields are the ones not marked "(Optional)": the approver and the reason.
    labels = ui.labels(dialog)
    browser.check(labels == ["Approve (Optional)", "Approver", "Reason"], f"{ui.name}: the form's labels are {labels}")
    if approve:
        switch.click()
    ui.text(page, dialog, "Approver").fill("alice@example.com" if approve else "bob@example.com")
    ui.text(page, dialog, "Reason").fill("better on the new data" if approve else "not this week")
    browser.shot(f"{ui.name}-{verdict}-filled")
    submit(browser, ui, dialog, lambda: api.flow_run(run_id)["state"]["type"] != "PAUSED")
    browser.shot(f"{ui.name}-{verdict}-submitted")
    browser.check(api.flow_run(run_id)["state"]["type"] != "PAUSED",
                  f"{ui.name}: the run is still paused after {ui.submit}; the UI sent {browser.sent.get(run_id)}, "
                  f"the server answered {browser.answers[-2:]}")
    return api.wait(run_id, {"COMPLETED"}, log)


@pytest.mark.parametrize("ui", [Classic(), New()], ids=lambda ui: ui.name)
def test_reject_then_approve_in_the_ui(stack, playwright, ui, tmp_path):
    client = stack["client"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with Browser(playwright, shots) as browser:
        # The candidate: the blessed version that is not the champion (2 in the first UI, 1 in the second).
        champion, serving = served(stack)
        candidate = "2" if champion == "1" else "1"
        assert client.get_model_version("test-model", candidate).tags["blessed"] == "true"

        rejected = decide(browser, ui, stack, candidate, approve=False)
        browser.check(served(stack) == (champion, serving), f"{ui.name}: a rejection moved {served(stack)}")
        browser.check(browser.sent[rejected["id"]].get("approve", False) is False,
                      f"{ui.name}: a rejection sent {browser.sent[rejected['id']]}")

        approved = decide(browser, ui, stack, candidate, approve=True)
        browser.check(served(stack) == (candidate, export_of(stack, candidate)),
                      f"{ui.name}: an approval of {candidate} left {served(stack)}")
        assert browser.sent[approved["id"]]["approve"] is True
        assert client.get_model_version("test-model", candidate).tags["approval_approver"] == "alice@example.com"

        # The runs list names each outcome beside the run's name.
        browser.page.goto(f"{stack['ui']}{ui.prefix}/runs")
        for run in (rejected, approved):
            browser.page.get_by_text(run["name"], exact=True).first.wait_for(timeout=WAIT_MS)
        browser.shot(f"{ui.name}-runs")
        listed = browser.page.locator("body").inner_text()
        for run, approve in ((rejected, False), (approved, True)):
            browser.check(re.search(rf"{re.escape(run['name'])}\s+{OUTCOME[approve]}\b", listed) is not None,
                          f"{ui.name}: the runs list does not show {run['name']} as {OUTCOME[approve]}")
        print(f"{ui.name} UI sent: " + json.dumps({OUTCOME[False]: browser.sent[rejected["id"]],
                                                   OUTCOME[True]: browser.sent[approved["id"]]}))
        print(f"{ui.name} UI: requests refused (not 127.0.0.1): {sorted(set(browser.refused))}; "
              f"presses again after a 5xx: {browser.retries}")
