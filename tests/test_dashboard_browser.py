"""The dashboard in a real headless browser (Debian's Chromium driven by Playwright's
Python client) against a real gateway process and a real worker on the broker.

Run now on a handler -> the run appears live in the history (no reload) -> its detail page
shows the final state; filter by status; replay a dead letter and see its new run; a
read-only token sees no buttons. Every page is photographed into test-output/dashboard/.

The browser: $SIGNALBOX_CHROMIUM, else /usr/bin/chromium (.ci/run installs Debian's
package where it is missing). Never `playwright install`: no download at test time. A
machine without a browser skips these tests and says why, unless
SIGNALBOX_REQUIRE_BROWSER=1 (CI) makes that a failure."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from streams.contracts import records
from tests.conftest import ROOT, GatewayProcess, Stack, WorkerProcess, unique

pytestmark = [pytest.mark.browser, pytest.mark.broker]

SECRET = "dashboard-secret-" + uuid.uuid4().hex
SHOTS = ROOT / "test-output" / "dashboard"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def token(scope: str = "events:write handlers:read handlers:write runs:read subscribe", sub: str = "ada") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "scope": scope, "iat": now, "exp": now + 900}, SECRET, algorithm="HS256")


def chromium() -> str | None:
    for candidate in (os.environ.get("SIGNALBOX_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def no_browser(reason: str) -> None:
    if os.environ.get("SIGNALBOX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SIGNALBOX_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"no browser on this machine: {reason} (install Debian's chromium, or set SIGNALBOX_CHROMIUM)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("the playwright package is not installed (pip install -e '.[test]')")
    executable = chromium()
    if executable is None:
        no_browser("no chromium executable (/usr/bin/chromium, $SIGNALBOX_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def gateway(stack: Stack, worker: WorkerProcess) -> Iterator[GatewayProcess]:
    g = GatewayProcess(stack, "ui-gateway", {"SIGNALBOX_GATEWAY_JWT_SECRET": SECRET}).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def page(browser: Any, gateway: GatewayProcess) -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=gateway.url)
    context.set_default_timeout(30_000)
    p = context.new_page()
    p.goto("/ui/runs")
    assert "/ui/login" in p.url  # no cookie yet
    p.fill("textarea[name=token]", token())
    p.click("button[type=submit]")
    p.wait_for_url("**/ui/runs")
    yield p
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_run_now_appears_live_and_its_detail_shows_the_final_state(stack: Stack, page: Any, browser: Any,
                                                                     gateway: GatewayProcess) -> None:
    hid = unique("ui-count")
    stack.apply_handler({"id": hid, "job": "count4", "event": {"match": {"type": unique("never")}},
                         "params": {"n": "n"}})
    # the history, filtered on the handler, open in one tab (live: no reload below)
    history = page.context.new_page()
    history.goto(f"/ui/runs?handler={hid}")
    history.wait_for_selector("#live-dot.on")
    assert history.locator("tr[data-run]").count() == 0
    history.evaluate("window.__marker = 'not reloaded'")
    # run now from the handler's page, with a param from the form
    page.goto(f"/ui/handlers/{hid}")
    page.fill("input[name='param.n']", "5")
    page.click("#run-now button[type=submit]")
    flash = page.locator("#action-result .flash.ok")
    flash.wait_for()
    run_id = flash.locator("a").inner_text()
    shot(page, "handler")
    # the run appears in the history without a reload, and settles there
    history.wait_for_selector(f"tr[data-run='{run_id}']")
    history.wait_for_selector(f"tr[data-run='{run_id}'] .s-succeeded")
    assert history.evaluate("window.__marker") == "not reloaded"
    shot(history, "runs")
    # its detail page: trigger, params, final state
    history.click(f"tr[data-run='{run_id}'] a.mono")
    history.wait_for_url(f"**/ui/runs/{run_id}")
    text = history.locator("main").inner_text()
    assert "run now" in text and '"n": "5"' in text
    final = history.locator("section.card", has_text="Final state").locator("pre").inner_text()
    assert json.loads(final)["runs"] >= 1 and {"n": "5"} in json.loads(final)["seen"]
    shot(history, "run")
    history.close()


def test_what_changed_while_a_page_was_not_listening_is_shown_when_it_listens(stack: Stack, page: Any,
                                                                              gateway: GatewayProcess) -> None:
    """A page renders, then opens its live connection: a run that settles in between (or
    while the connection is down) was told to nobody. Here the live connection is held off
    until the run has settled; the history and the run's page must still show it settled,
    without a reload by the test. (CI once waited a minute on a replayed run's page.)"""
    hid = unique("ui-late")
    stack.apply_handler({"id": hid, "job": "count4", "event": {"match": {"type": unique("never")}},
                         "params": {"n": "n"}})
    listening = {"allowed": False}

    def hold_live(route: Any) -> None:  # a stream that ends at once: EventSource retries after 200 ms
        if listening["allowed"]:
            route.continue_()
        else:
            route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body="retry: 200\n\n")

    history = page.context.new_page()
    history.route("**/ui/live", hold_live)
    history.goto(f"/ui/runs?handler={hid}")
    assert history.locator("tr[data-run]").count() == 0
    history.evaluate("window.__marker = 'not reloaded'")
    auth = {"Authorization": f"Bearer {token()}"}
    r = httpx.post(f"{gateway.url}/handlers/{hid}/run", json={"params": {"n": "7"}}, headers=auth, timeout=30)
    assert r.status_code == 202, r.text
    run_id = records.run_id(hid, f"manual:{r.json()['request_id']}")
    detail = page.context.new_page()
    detail.route("**/ui/live", hold_live)
    detail.goto(f"/ui/runs/{run_id}")
    deadline = time.monotonic() + 60
    while True:  # settled, as the gateway's REST API sees it
        got = httpx.get(f"{gateway.url}/runs/{run_id}", headers=auth, timeout=30)
        if got.status_code == 200 and got.json()["status"] == "succeeded":
            break
        assert time.monotonic() < deadline, f"the run did not settle in 60 s: {got.status_code} {got.text[:300]}"
        time.sleep(0.2)
    history.wait_for_timeout(1000)  # the pages keep retrying their held-off connection meanwhile
    assert history.locator("tr[data-run]").count() == 0  # nothing could tell it yet
    listening["allowed"] = True
    history.wait_for_selector(f"tr[data-run='{run_id}'] .s-succeeded", timeout=15_000)
    assert history.evaluate("window.__marker") == "not reloaded"
    detail.wait_for_selector("#run-head .status.s-succeeded", timeout=15_000)
    assert '"n": "7"' in detail.locator("main").inner_text()
    history.close()
    detail.close()


def test_filter_by_status_and_replay_a_dead_letter(stack: Stack, page: Any, gateway: GatewayProcess) -> None:
    hid = unique("ui-explode")
    stack.apply_handler({"id": hid, "job": "explode", "event": {"match": {"type": unique("never")}},
                         "retry": {"attempts": 1}})
    r = httpx.post(f"{gateway.url}/handlers/{hid}/run", json={"params": {"n": 3}},
                   headers={"Authorization": f"Bearer {token()}"}, timeout=30)
    assert r.status_code == 202, r.text
    # filter the history by status: the run gave up (dead-lettered), succeeded runs are not listed
    page.goto("/ui/runs")
    page.select_option("select[name=status]", "dead_lettered")
    page.fill("input[name=handler]", hid)
    page.click("#run-filters button[type=submit]")
    page.wait_for_url("**status=dead_lettered**")
    page.wait_for_selector("tr[data-run] .s-dead_lettered", timeout=60_000)
    assert page.locator("tr[data-run] .s-succeeded").count() == 0
    shot(page, "runs-filtered")
    page.select_option("select[name=status]", "succeeded")
    page.click("#run-filters button[type=submit]")
    page.wait_for_url("**status=succeeded**")
    assert page.locator("tr[data-run]").count() == 0 and "match these filters" in page.locator("main").inner_text()
    # replay its dead letter: a new run of the handler with the same params
    page.goto("/ui/dead-letters")
    row = page.locator("tr[data-dead]", has_text=hid).first
    row.wait_for()
    shot(page, "dead-letters")
    row.locator("button", has_text="Replay").click()
    flash = page.locator("#action-result .flash.ok")
    flash.wait_for()
    new_run = flash.locator("a").inner_text()
    flash.locator("a").click()
    page.wait_for_url(f"**/ui/runs/{new_run}")
    try:
        page.wait_for_selector("#run-head .status.s-dead_lettered, #run-head .status.s-failed", timeout=60_000)
    except Exception as exc:  # say whether the run settled (the page missed it) or not (the pipeline did)
        got = httpx.get(f"{gateway.url}/runs/{new_run}", headers={"Authorization": f"Bearer {token()}"}, timeout=30)
        raise AssertionError(f"the replayed run's page did not show it settled; the REST API says "
                             f"{got.status_code} {got.text[:500]}") from exc
    text = page.locator("main").inner_text()
    assert hid in text and '"n": 3' in text and "bad input 3" in text
    shot(page, "run-replayed")


def test_events_jobs_and_a_read_only_viewer(stack: Stack, page: Any, browser: Any, gateway: GatewayProcess) -> None:
    event_id = unique("ui-ev")
    r = httpx.post(f"{gateway.url}/events", json={"id": event_id, "type": "ui-deposit", "pid": "CH-9"},
                   headers={"Authorization": f"Bearer {token()}"}, timeout=30)
    assert r.status_code == 202, r.text
    hid = unique("ui-why")
    stack.apply_handler({"id": hid, "job": "count5", "event": {"match": {"type": "ui-deposit", "pid": "CH-1"}}})
    page.goto("/ui/events")
    page.wait_for_selector(f"a:has-text('{event_id}')", timeout=30_000)
    shot(page, "events")
    page.goto(f"/ui/events?id={event_id}&handler={hid}")
    why = page.locator("#why").inner_text()
    assert "does not fire" in why and "match pid" in why
    shot(page, "event-explain")
    page.goto("/ui/jobs")
    assert page.locator("td a", has_text="count4").count() == 1
    shot(page, "jobs")
    page.goto("/ui/handlers")
    assert page.locator("button", has_text="Disable").count() >= 1
    shot(page, "handlers")
    # a read-only role: the same pages, no buttons
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=gateway.url)
    ro = context.new_page()
    ro.goto("/ui/login")
    ro.fill("textarea[name=token]", jwt.encode(
        {"sub": "rita", "roles": ["reader"], "exp": int(time.time()) + 900}, SECRET, algorithm="HS256"))
    ro.click("button[type=submit]")
    ro.goto("/ui/handlers")
    assert "read-only" in ro.locator("header").inner_text()
    assert ro.locator("main button").count() == 0 and ro.locator("a", has_text="Run now").count() == 0
    shot(ro, "handlers-read-only")
    context.close()
