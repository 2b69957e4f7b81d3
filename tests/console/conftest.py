"""The browser-test harness: Debian's Chromium driven by Playwright against a running
proctord, through the page hooks listed in README.md.

`tests/api/console.rs` starts proctord (authentication on, SQLite, local executor),
registers the procs named in `PROCS` below and runs this suite with:

    PROCTOR_URL              base URL of proctord, e.g. http://127.0.0.1:40123
    PROCTOR_ADMIN_EMAIL      an admin ...
    PROCTOR_ADMIN_TOKEN      ... and its token
    PROCTOR_MEMBER_EMAIL     a member of group "ops" only ...
    PROCTOR_MEMBER_TOKEN     ... and its token
    PROCTOR_SCREENSHOTS      where each page's screenshot goes (default: a new temp dir)
    PROCTOR_CHROMIUM         the browser (default /usr/bin/chromium; Playwright's own
                             browsers are never downloaded)
    PROCTOR_AXE_REPORT_ONLY  1: print axe violations instead of failing (while working
                             on the console only)

Every test fails on a console error or an uncaught page error, and every page it
checks (`Console.check`) must have no serious or critical axe-core violation.
"""

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

HERE = Path(__file__).resolve().parent
AXE = HERE / "vendor" / "axe.min.js"

CHROMIUM = os.environ.get("PROCTOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The procs tests/api/console.rs registers (keep the two in step).
PROCS = {
    # prints "line 1" .. "line 12", one every 0.25 s
    "counter": {"lines": 12},
    # sleeps for 5 minutes (cancelled by the tests)
    "sleeper": {},
    # one declared (so required) arg NAME; prints "Hello $NAME"; secret GREETING_TOKEN set
    "greeter": {"arg": "NAME"},
    # max_concurrent_runs 1, sleeps for 5 minutes: a second run waits QUEUED
    "one-at-a-time": {},
    # prints "about to fail", exits 3
    "failer": {},
    # prints "line 1" .. "line 2000" at once
    "many-lines": {"lines": 2000},
    # prints "<b>bold</b>", '<img src=x onerror="window.__injected=1">', "a & b"; its
    # description holds markup too: all of it must show as text
    "markup": {},
    # authorized_groups ["other"]: the "ops" member must not see it; secret OTHER_TOKEN unset
    "other-only": {},
}
FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "REQUIREMENT_NOT_MET", "CREATION_FAILED")

# Timeouts (ms) for the page to react; runs on the local executor start within a second.
STEP = 10_000
RUN = 30_000


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set (see tests/console/conftest.py)", returncode=2)
    return value


class Settings:
    def __init__(self):
        self.url = env("PROCTOR_URL").rstrip("/")
        self.admin = (env("PROCTOR_ADMIN_EMAIL"), env("PROCTOR_ADMIN_TOKEN"))
        self.member = (env("PROCTOR_MEMBER_EMAIL"), env("PROCTOR_MEMBER_TOKEN"))
        shots = os.environ.get("PROCTOR_SCREENSHOTS") or tempfile.mkdtemp(
            prefix="proctor-console-screenshots-"
        )
        self.screenshots = Path(shots)
        self.screenshots.mkdir(parents=True, exist_ok=True)


_settings = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def pytest_terminal_summary(terminalreporter):
    if _settings is not None:
        terminalreporter.write_line(f"console screenshots: {_settings.screenshots}")


@pytest.fixture(scope="session")
def config() -> Settings:
    return settings()


@pytest.fixture(scope="session")
def playwright_instance():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    yield browser
    browser.close()


class Api:
    """proctord's JSON API as one caller (header authentication), for setting a stage
    and checking what the console did."""

    def __init__(self, playwright, config: Settings, who):
        email, token = who
        self.email = email
        self.request = playwright.request.new_context(
            base_url=config.url,
            extra_http_headers={"Email-Id": email, "Access-Token": token},
        )

    def run(self, proc: str, args=None) -> str:
        response = self.request.post("/jobs/execute", data={"name": proc, "args": args or {}})
        assert response.status == 201, f"run {proc}: {response.status} {response.text()}"
        return response.json()["name"]

    def execution(self, name: str) -> dict:
        response = self.request.get(f"/api/v1/executions/{name}")
        assert response.status == 200, f"{name}: {response.status} {response.text()}"
        return response.json()

    def wait_for(self, name: str, statuses=FINAL, within: float = 30) -> dict:
        deadline = time.monotonic() + within
        while True:
            execution = self.execution(name)
            if execution["status"] in statuses:
                return execution
            assert time.monotonic() < deadline, f"{name} never reached {statuses}: {execution}"
            time.sleep(0.05)

    def cancel(self, name: str):
        self.request.post(f"/api/v1/executions/{name}/cancel")

    def get(self, path: str):
        return self.request.get(path)


@pytest.fixture(scope="session")
def api(playwright_instance, config) -> Api:
    api = Api(playwright_instance, config, config.admin)
    for proc in PROCS:
        response = api.get(f"/jobs/metadata/{proc}")
        assert response.status == 200, (
            f"proc {proc} is not registered ({response.status}): "
            "tests/api/console.rs registers the procs conftest.PROCS names"
        )
    yield api
    api.request.dispose()


@pytest.fixture(scope="session")
def member_api(playwright_instance, config) -> Api:
    api = Api(playwright_instance, config, config.member)
    yield api
    api.request.dispose()


# A browser's own report of an HTTP error status: "Failed to load resource: the server
# responded with a status of 401 (Unauthorized)". The API's 4xx answers are what the
# console shows the user (a refused sign-in, a missing arg, a forbidden proc); any 5xx,
# and any 4xx for something that is not the API (a script, a style, the icon), is a bug.
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
API_PATHS = re.compile(r"^/(api/|jobs/)")


class Console:
    """One browser page on the console, watching for errors."""

    def __init__(self, page: Page, config: Settings, label: str):
        self.page = page
        self.config = config
        self.label = label
        self.errors: list[str] = []
        self.dialogs: list[tuple[str, str]] = []
        page.set_default_timeout(STEP)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught page error: {error}"))
        page.on("dialog", self._on_dialog)
        self._cdp = None

    def _on_console(self, message):
        if message.type not in ("error", "assert"):
            return
        text = message.text
        url = (message.location or {}).get("url", "")
        failed = FAILED_LOAD.search(text)
        if failed:
            status = int(failed.group(1))
            path = re.sub(r"^[a-z]+://[^/]+", "", url)
            if 400 <= status < 500 and API_PATHS.match(path):
                return
            text = f"{text} [{url}]"
        self.errors.append(f"console.{message.type} on {self.path()}: {text}")

    def _on_dialog(self, dialog):
        self.dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    # --- navigation -------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.config.url + path

    def path(self) -> str:
        return re.sub(r"^[a-z]+://[^/]+", "", self.page.url)

    def goto(self, path: str):
        self.page.goto(self.url(path))
        self.wait_ready()

    def wait_ready(self):
        try:
            self.page.wait_for_selector('main#main[data-ready="1"]', timeout=STEP)
        except PlaywrightTimeout:
            shown = self.page.evaluate(
                "() => (document.querySelector('main') || document.body)?.innerText ?? ''"
            )
            raise AssertionError(
                f'{self.path()}: no main#main[data-ready="1"] after {STEP} ms; '
                f"the page shows: {shown[:300]!r}"
            ) from None

    def wait_path(self, pattern: str):
        """Waits until the URL's path matches `pattern` (a regex), then for the page."""
        regex = re.compile("^" + re.escape(self.config.url) + pattern + r"(\?.*)?$")
        self.page.wait_for_url(regex, timeout=STEP)
        self.wait_ready()

    def mark_document(self):
        """Marks the current document; `same_document` tells whether it is still the one
        (no reload or full navigation since)."""
        self.page.evaluate("() => { window.__proctorConsoleMark = 1 }")

    def same_document(self) -> bool:
        return self.page.evaluate("() => window.__proctorConsoleMark === 1")

    # --- signing in ---------------------------------------------------------------------

    def sign_in(self, who):
        email, token = who
        self.goto("/sign-in")
        form = self.page.locator("form#sign-in")
        form.locator("input[name=email]").fill(email)
        form.locator("input[name=token]").fill(token)
        form.locator("button[type=submit]").click()
        self.page.wait_for_url(lambda url: "/sign-in" not in url, timeout=STEP)
        self.wait_ready()
        expect(self.page.locator("#who")).to_have_text(re.compile(re.escape(email)))

    # --- checks -------------------------------------------------------------------------

    def assert_no_errors(self):
        assert not self.errors, "the page reported errors:\n" + "\n".join(self.errors)

    def check(self, name: str):
        """Checks the page as it is now: no errors so far, no serious or critical axe
        violation; saves a full-page screenshot as NAME.png."""
        self.screenshot(name)
        self.assert_no_errors()
        violations = self.axe()
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        report = f"axe on {self.path()} ({name}):\n" + "\n".join(
            f"- {v['id']} ({v['impact']}): {v['help']} — {', '.join(v['targets'][:5])}"
            for v in bad
        )
        if bad and os.environ.get("PROCTOR_AXE_REPORT_ONLY") == "1":
            print(report)
            return
        assert not bad, report

    def screenshot(self, name: str):
        path = self.config.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path

    def axe(self) -> list[dict]:
        """axe-core's violations on the page. The console sends a strict
        Content-Security-Policy, which refuses an injected <script>; axe is evaluated
        through the DevTools protocol instead, which CSP does not govern, so the page
        keeps its real policy (bypass_csp would also hide the console's own violations)."""
        if not self.page.evaluate("() => typeof window.axe === 'object'"):
            if self._cdp is None:
                self._cdp = self.page.context.new_cdp_session(self.page)
            result = self._cdp.send(
                "Runtime.evaluate",
                {"expression": AXE.read_text() + "\n;typeof window.axe", "returnByValue": True},
            )
            assert "exceptionDetails" not in result, f"axe did not load: {result}"
        return self.page.evaluate(
            """async () => {
                const result = await axe.run(document, { resultTypes: ['violations'] });
                return result.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    targets: v.nodes.map(n => n.target.join(' ')),
                }));
            }"""
        )

    # --- reading the page ----------------------------------------------------------------

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text().strip()

    def wait_text(self, selector: str, pattern, timeout: int = STEP):
        """Waits until the element's text matches `pattern` (a regex, searched)."""
        expect(self.page.locator(selector).first).to_have_text(
            re.compile(pattern) if isinstance(pattern, str) else pattern, timeout=timeout
        )

    def log_rows(self) -> list[tuple[str, str]]:
        """The `(.ln, .tx)` of each rendered `#log .log-line`, top to bottom."""
        rows = self.page.evaluate(
            """() => [...document.querySelectorAll('#log .log-line')].map(row => [
                (row.querySelector('.ln')?.textContent ?? '').trim(),
                (row.querySelector('.tx')?.textContent ?? ''),
            ])"""
        )
        return [(ln, tx.rstrip("\n")) for ln, tx in rows]

    def status(self) -> str:
        return self.text("#run-status")

    def set_field(self, selector: str, value: str):
        """Sets an input or a select (by value, else by its visible label)."""
        field = self.page.locator(selector)
        tag = field.evaluate("e => e.tagName.toLowerCase()")
        if tag == "select":
            values = field.evaluate("e => [...e.options].map(o => [o.value, o.label])")
            match = [v for v, label in values if v == value] or [
                v for v, label in values if label.strip().lower() == value.lower()
            ]
            assert match, f"{selector} has no option {value!r}: {values}"
            field.select_option(match[0])
        else:
            field.fill(value)

    def no_horizontal_scroll(self):
        width = self.page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert width[0] <= width[1] + 1, (
            f"{self.path()} scrolls sideways at {width[1]} px wide (content {width[0]} px)"
        )


def number_in(text: str) -> int | None:
    """The first number in `text` (thousands separators allowed)."""
    found = re.search(r"\d[\d,.\u202f\u00a0 ]*", text)
    if not found:
        return None
    digits = re.sub(r"\D", "", found.group(0))
    return int(digits) if digits else None


@pytest.fixture
def open_console(browser, config, request):
    """Opens console pages (each in its own browser context, so its own cookies):
    `open_console(label, **context_options)`. Each fails the test on a page error."""
    opened = []

    def open_one(label: str = "page", **options) -> Console:
        options.setdefault("viewport", {"width": 1280, "height": 800})
        context = browser.new_context(base_url=config.url, **options)
        console = Console(context.new_page(), config, label)
        opened.append((context, console))
        return console

    yield open_one
    errors = []
    for context, console in opened:
        errors.extend(console.errors)
        context.close()
    if errors:
        if request.node.rep_call_ok():
            pytest.fail("the page reported errors:\n" + "\n".join(errors))
        print("the page also reported errors:\n" + "\n".join(errors))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call_ok = lambda: report.passed


def pytest_collection_modifyitems(items):
    for item in items:
        item.rep_call_ok = lambda: True


def dump(value) -> str:
    return json.dumps(value, indent=1, default=str)
