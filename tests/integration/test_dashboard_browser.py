"""`journey dashboard` in a real browser: the real server on 127.0.0.1, headless Chromium over the DevTools protocol.

The test starts `journey dashboard --workdir W --port P` as a subprocess, drives Debian's ``chromium`` (installed
by `make test` where missing; skipped with the reason when it is absent) through a small Chrome DevTools
Protocol client over ``websockets``, opens the portfolio, follows its link to the top customer, checks in the
DOM that the timeline chart and the reasons rendered, saves screenshots to ``tests/artifacts/dashboard/`` and
stops the server by its own PID.

``JOURNEY_DASHBOARD_TEST_WORKDIR=work`` points it at the demo's workdir instead of the small fixture (how the
README's screenshots were taken); ``JOURNEY_UPDATE_SCREENSHOTS=1`` also copies them to ``docs/img/``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dashboard_workdir import build_workdir
from websockets.sync.client import connect

from serving.process import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
DOCS_IMG = ROOT / "docs" / "img"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WIDTH, HEIGHT = 1500, 1900

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium; "
                                "`make test` installs it)")


def wait_until(check, timeout: float, what: str, interval: float = 0.25):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Page:
    """A Chrome DevTools Protocol session on one page target (commands and their answers; events skipped)."""

    def __init__(self, websocket_url: str) -> None:
        self.socket = connect(websocket_url, max_size=None, open_timeout=20)
        self.ids = itertools.count(1)

    def send(self, method: str, **params):  # noqa: ANN201
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self.socket.recv(timeout=60))
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str):  # noqa: ANN201
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText + \"\\n\" + document.body.textContent : ''") or ""

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    chosen = os.environ.get("JOURNEY_DASHBOARD_TEST_WORKDIR")
    if chosen:
        return Path(chosen).resolve()
    base = tmp_path_factory.getbasetemp()
    return build_workdir(base / "dashboard_work", base / "tiny_journey_model")


@pytest.fixture
def server(workdir, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the workdir's own registry
    journey = Path(sys.executable).with_name("journey")
    log = (tmp_path / "dashboard.log").open("w")
    process = subprocess.Popen([str(journey), "dashboard", "--workdir", str(workdir), "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, (tmp_path / "dashboard.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                return answer.read().strip() == b"ok"
        except OSError:
            return False

    try:
        wait_until(healthy, 60, "the dashboard's health endpoint")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)  # by its own PID: `journey dashboard` became the server
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.fixture
def page(tmp_path):
    profile = tmp_path / "chromium-profile"
    browser = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        port = wait_until(lambda: active.exists() and active.read_text().split("\n")[0].strip(), 30,
                          "chromium's DevTools port")

        def page_target():  # noqa: ANN202
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                return next((t for t in json.load(answer) if t.get("type") == "page"), None)

        target = wait_until(page_target, 20, "a page target")
        session = Page(target["webSocketDebuggerUrl"])
        session.send("Page.enable")
        session.send("Runtime.enable")
        session.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                     mobile=False)
        yield session
        session.close()
    finally:
        browser.terminate()  # by its own PID
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()


CHART_DRAWN = """(() => {
  const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')];
  return charts.filter(c => { const d = c.querySelector('canvas, svg');
                              return d && d.getBoundingClientRect().width > 100; }).length;
})()"""
RUNNING = "!!document.querySelector('[data-testid=\"stStatusWidget\"]')"


def settle(page: Page, wanted: list[str], timeout: float = 45) -> str:
    """Wait until the page shows every text of ``wanted``, Streamlit has stopped running and charts are drawn."""
    text = wait_until(lambda: (t := page.text()) and all(w in t for w in wanted) and not page.evaluate(RUNNING)
                      and t, timeout, f"{wanted} on the page")
    time.sleep(2.0)  # let Vega and the data grids finish drawing
    return text or page.text()


def save(page: Page, name: str) -> Path:
    path = page.screenshot(ARTIFACTS / f"dashboard-{name}.png")
    if os.environ.get("JOURNEY_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / path.name)
    return path


@pytest.mark.timeout(180)
def test_the_dashboard_in_chromium_shows_the_portfolio_and_a_customer(server, page):
    started = time.monotonic()
    page.navigate(server + "/")
    settle(page, ["Portfolio", "Scored customers", "Eligible for", "Score distribution", "Ranked list",
                  "Open a customer"])
    assert save(page, "portfolio").stat().st_size > 10_000
    assert page.evaluate(CHART_DRAWN) >= 1, "the score distribution did not render"

    href = page.evaluate("""(() => { const a = [...document.querySelectorAll('a')]
        .find(a => a.href.includes('view=Customer') && a.href.includes('customer='));
        return a ? a.href : null; })()""")
    assert href, "the portfolio links no customer"
    customer = href.split("customer=")[1].split("&")[0]
    page.navigate(href)  # what a click on the link does (Streamlit opens such links in a new tab)
    text = settle(page, ["Journey timeline", "Reasons", "What changed since the previous cut-off", "importance:"],
                  timeout=60)
    save(page, "customer")
    assert page.evaluate("(document.querySelector('input[aria-label=\"Customer id\"]') || {}).value") == customer
    assert "events before the cut-off" in text
    assert page.evaluate(CHART_DRAWN) >= 1, "the timeline did not render"
    reasons = page.evaluate("""(() => { const h = [...document.querySelectorAll('h3')]
        .find(h => h.innerText.trim() === 'Reasons');
        const block = h && h.closest('[data-testid="stVerticalBlock"]');
        return block ? block.innerText : ''; })()""")
    assert reasons and ("before" in reasons or "not scored" in reasons), reasons
    assert "Per-event importance unavailable" not in text

    page.navigate(server + "/?view=Models")
    text = settle(page, ["Models", "Lineage"])
    assert "Champion" in text
    save(page, "models")
    assert time.monotonic() - started < 60
