"""The web console in a real Chromium, through the hooks in README.md.

Each test signs in through the form in its own browser context, works one page the way
a person would, and checks each page it reaches (`Console.check`: no console or page
error, no serious or critical axe violation, a full-page screenshot).
"""

import http.server
import re
import threading
import time

from playwright.sync_api import expect

from conftest import PROCS, RUN, STEP, FINAL, number_in

FORBIDDEN = re.compile(
    r"forbidden|not found|no such|may not|not allowed|not permitted|permission|access|denied"
    r"|403|404",
    re.IGNORECASE,
)


def eventually(check, what: str, timeout: float = STEP / 1000):
    """Calls `check` until it returns something truthy without raising; returns that."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except AssertionError as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (last seen: {last!r})")
        time.sleep(0.05)


def run_name(console, proc: str) -> str:
    """Waits until the page is a run of `proc` and returns its name."""
    console.wait_path(rf"/runs/{re.escape(proc)}-[^/?]+")
    return console.path().split("?")[0].rsplit("/", 1)[1]


def visible_procs(console) -> list[str]:
    return console.page.locator("ul#procs li[data-proc]:visible").evaluate_all(
        "items => items.map(item => item.dataset.proc)"
    )


def row_names(console) -> list[str]:
    return console.page.locator("table#runs tbody tr[data-name]").evaluate_all(
        "rows => rows.map(row => row.dataset.name)"
    )


def row_cells(console, cell: str) -> list[str]:
    return console.page.locator(f"table#runs tbody tr[data-name] .{cell}").evaluate_all(
        "cells => cells.map(cell => cell.textContent.trim())"
    )


def log_row_in_view(console, number: int):
    """The `#log` row numbered `number` is rendered and on screen."""
    console.page.locator("#log").scroll_into_view_if_needed()
    row = console.page.locator(
        "#log .log-line", has=console.page.locator(".ln", has_text=re.compile(rf"^\s*{number}\s*$"))
    )
    expect(row).to_have_count(1)
    expect(row).to_be_in_viewport()


# --- signing in --------------------------------------------------------------------------


def test_a_wrong_token_is_refused_and_the_right_one_signs_in(open_console, config):
    console = open_console()
    page = console.page
    email, token = config.admin

    page.goto(console.url("/runs"))
    console.wait_ready()
    expect(page.locator("form#sign-in")).to_be_visible()
    expect(page.locator("table#runs tbody tr[data-name]")).to_have_count(0)

    console.goto("/sign-in")
    console.check("sign-in")
    form = page.locator("form#sign-in")
    form.locator("input[name=email]").fill(email)
    form.locator("input[name=token]").fill(token[:-1] + ("x" if token[-1] != "x" else "y"))
    form.locator("button[type=submit]").click()
    expect(page.locator("#sign-in-error")).to_be_visible()
    expect(page.locator("#sign-in-error")).to_have_text(re.compile(r"\S"))
    assert console.path().startswith("/sign-in"), console.path()
    console.check("sign-in-refused")

    form.locator("input[name=token]").fill(token)
    form.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)
    console.wait_ready()
    expect(page.locator("#who")).to_have_text(re.compile(re.escape(email)))
    links = page.locator("nav#nav a").all_inner_texts()
    for name in ("Overview", "Procs", "Runs", "Schedules"):
        assert any(name.lower() == link.strip().lower() for link in links), (name, links)

    cookies = page.context.cookies()
    assert any(c["httpOnly"] for c in cookies), f"no HttpOnly session cookie: {cookies}"
    kept = page.evaluate(
        "() => document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"
    )
    assert token not in kept, "the token is readable by scripts (document.cookie or storage)"


def test_signing_out_returns_to_sign_in_and_ends_the_session(open_console, config):
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    console.goto("/runs")
    page.locator("button#sign-out").click()
    console.wait_path("/sign-in")
    expect(page.locator("form#sign-in")).to_be_visible()
    session = page.evaluate(
        """async () => {
            const response = await fetch('/api/v1/session');
            return { status: response.status, body: await response.text() };
        }"""
    )
    signed_out = session["status"] == 401 or (
        session["status"] == 200 and '"signed_in":false' in session["body"].replace(" ", "")
    )
    assert signed_out, f"GET /api/v1/session after signing out: {session}"
    page.goto(console.url("/procs"))
    console.wait_ready()
    expect(page.locator("form#sign-in")).to_be_visible()
    expect(page.locator("ul#procs li[data-proc]")).to_have_count(0)


# --- procs -------------------------------------------------------------------------------


def test_the_procs_list_searches_and_leads_to_each_procs_page(open_console, config):
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    console.goto("/procs")
    names = eventually(lambda: visible_procs(console), "procs listed")
    assert set(PROCS) <= set(names), f"the admin sees every proc: {names}"
    console.check("procs")

    page.locator("input#proc-search").fill("gree")
    eventually(lambda: visible_procs(console) == ["greeter"], "the search keeps only greeter")
    page.locator("input#proc-search").fill("")
    eventually(lambda: set(PROCS) <= set(visible_procs(console)), "an empty search lists all")

    console.mark_document()
    page.locator('ul#procs li[data-proc="greeter"] a').click()
    console.wait_path("/procs/greeter")
    assert console.same_document(), "a console link reloads the page instead of pushState"
    expect(page.locator("h1")).to_contain_text("greeter")
    expect(page.locator("#proc-description")).to_contain_text("Says hello")
    expect(page.locator("#proc-image")).to_contain_text("alpine:3")
    expect(page.locator("#proc-author")).to_contain_text(config.admin[0])
    expect(page.locator('#proc-args li[data-arg="NAME"]')).to_have_count(1)
    secret = page.locator('#proc-secrets li[data-secret="GREETING_TOKEN"]')
    expect(secret).to_have_class(re.compile(r"\bset\b"))
    expect(page.locator("form#run-form input#arg-NAME")).to_have_count(1)
    expect(page.locator("code#cli-line")).to_contain_text("greeter")
    expect(page.locator("code#cli-line")).to_contain_text("NAME")
    expect(page.locator("code#curl-line")).to_contain_text("curl")
    expect(page.locator("code#curl-line")).to_contain_text("/jobs/execute")
    assert config.admin[1] not in page.content(), "the page shows the signed-in user's token"
    console.check("proc")

    console.goto("/procs/other-only")
    expect(page.locator("#proc-groups")).to_contain_text("other")
    missing = page.locator('#proc-secrets li[data-secret="OTHER_TOKEN"]')
    expect(missing).to_have_class(re.compile(r"\bmissing\b"))
    console.check("proc-restricted")


# --- runs --------------------------------------------------------------------------------


def test_a_run_started_from_its_form_shows_its_lines_live_and_then_its_status(
    open_console, config, api
):
    console = open_console(viewport={"width": 1280, "height": 1000})
    page = console.page
    console.sign_in(config.admin)
    console.goto("/procs/counter")
    page.locator("button#run").click()
    name = run_name(console, "counter")
    console.mark_document()
    lines = PROCS["counter"]["lines"]

    seen = []  # (status, highest line number on screen)
    deadline = time.monotonic() + RUN / 1000
    while time.monotonic() < deadline:
        status = console.status()
        numbers = [int(ln) for ln, _ in console.log_rows() if ln.isdigit()]
        seen.append((status, max(numbers, default=0)))
        if any(word in status.upper() for word in FINAL):
            break
        time.sleep(0.05)
    partial = sorted({n for status, n in seen if 0 < n < lines and "RUNNING" in status.upper()})
    assert len(partial) >= 2, (
        f"lines did not arrive live while RUNNING; (status, last line) seen: {seen}"
    )

    console.wait_text("#run-status", r"SUCCEEDED", RUN)
    eventually(lambda: number_in(console.text("#log-count")) == lines, f"#log-count is {lines}")
    rows = eventually(
        lambda: (r := console.log_rows()) and r[-1][0] == str(lines) and r,
        f"line {lines} on screen (following the end)",
    )
    first = int(rows[0][0])
    assert rows == [(str(n), f"line {n}") for n in range(first, lines + 1)], rows
    assert console.same_document(), "the page reloaded to show the final status"
    expect(page.locator("#run-exit-code")).to_contain_text("0")
    expect(page.locator("#run-user")).to_contain_text(config.admin[0])
    expect(page.locator("#run-attempts")).to_contain_text("1")
    assert api.execution(name)["status"] == "SUCCEEDED"
    console.check("run")


def test_a_missing_required_arg_is_shown_beside_its_input(open_console, config, api):
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    before = len(api.get("/api/v1/executions?proc=greeter&limit=500").json()["executions"])
    console.goto("/procs/greeter")
    page.locator("input#arg-NAME").fill("")
    page.locator("button#run").click()
    error = page.locator("#arg-NAME-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(re.compile(r"\S"))
    assert console.path() == "/procs/greeter", console.path()
    console.check("proc-missing-arg")
    after = len(api.get("/api/v1/executions?proc=greeter&limit=500").json()["executions"])
    assert after == before, "a run was started without its required arg"

    page.locator("input#arg-NAME").fill("Ada")
    page.locator("button#run").click()
    name = run_name(console, "greeter")
    console.wait_text("#run-status", r"SUCCEEDED", RUN)
    eventually(
        lambda: ("1", "Hello Ada") in console.log_rows(), "the greeting is in the log"
    )
    expect(page.locator("#run-args")).to_contain_text("NAME")
    expect(page.locator("#run-args")).to_contain_text("Ada")
    assert api.execution(name)["args"] == {"NAME": "Ada"}


def test_a_running_run_is_cancelled_from_its_page_and_run_again(open_console, config, api):
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    console.goto("/procs/sleeper")
    page.locator("button#run").click()
    first = run_name(console, "sleeper")
    try:
        console.wait_text("#run-status", r"RUNNING", RUN)
        console.check("run-running")
        page.locator("button#cancel").click()
        console.wait_text("#run-status", r"CANCELLED", RUN)
        assert api.execution(first)["status"] == "CANCELLED"
        cancel = page.locator("button#cancel")
        eventually(
            lambda: cancel.count() == 0 or cancel.is_hidden() or cancel.is_disabled(),
            "Cancel is gone or disabled once the run has ended",
        )
        console.check("run-cancelled")

        page.locator("button#run-again").click()
        page.wait_for_url(lambda url: "/runs/sleeper-" in url and first not in url)
        second = run_name(console, "sleeper")
        try:
            console.wait_text("#run-status", r"RUNNING", RUN)
            page.locator("button#cancel").click()
            console.wait_text("#run-status", r"CANCELLED", RUN)
        finally:
            api.cancel(second)
    finally:
        api.cancel(first)


def test_a_queued_run_shows_as_queued_and_is_cancelled_from_its_page(open_console, config, api):
    first = api.run("one-at-a-time")
    second = api.run("one-at-a-time")
    try:
        assert api.execution(second)["status"] == "QUEUED"
        console = open_console()
        page = console.page
        console.sign_in(config.admin)
        console.goto("/runs?proc=one-at-a-time")
        eventually(
            lambda: "QUEUED" in row_cells(console, "status"),
            "the queued run is listed as QUEUED",
        )
        queued_cell = page.locator(f'table#runs tbody tr[data-name="{second}"] .status').first
        expect(queued_cell).to_have_class(re.compile(r"\bs-QUEUED\b"))
        console.goto(f"/runs/{second}")
        console.wait_text("#run-status", r"^QUEUED \(0 ahead\)$", STEP)
        expect(page.locator("#run-status")).to_have_class(re.compile(r"\bs-QUEUED\b"))
        running_colour = page.evaluate(
            """() => { const probe = document.createElement('span');
                probe.className = 'status s-RUNNING'; document.body.append(probe);
                const colour = getComputedStyle(probe).color; probe.remove(); return colour; }"""
        )
        queued_colour = page.locator("#run-status").evaluate("el => getComputedStyle(el).color")
        assert queued_colour != running_colour, "QUEUED has a colour of its own"
        cancel = page.locator("button#cancel")
        expect(cancel).to_be_enabled()
        cancel.click()
        console.wait_text("#run-status", r"CANCELLED", RUN)
        cancelled = api.execution(second)
        assert cancelled["status"] == "CANCELLED" and cancelled["started_at"] is None, cancelled
        console.assert_no_errors()
    finally:
        api.cancel(second)
        api.cancel(first)


def test_a_long_log_is_paged_on_screen_searched_and_downloaded(open_console, config, api):
    lines = PROCS["many-lines"]["lines"]
    name = api.run("many-lines")
    assert api.wait_for(name)["status"] == "SUCCEEDED"
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    console.goto(f"/runs/{name}")
    console.wait_text("#run-status", r"SUCCEEDED")
    eventually(lambda: number_in(console.text("#log-count")) == lines, f"#log-count is {lines}")
    rendered = len(console.log_rows())
    assert 0 < rendered < lines / 4, f"{rendered} of {lines} rows rendered: not only those on screen"
    console.check("run-long-log")

    page.locator("button#log-end").click()
    log_row_in_view(console, lines)
    page.locator("button#log-top").click()
    log_row_in_view(console, 1)

    search = page.locator("input#log-search")
    search.fill(f"line {lines - 1}")
    search.press("Enter")
    eventually(
        lambda: (number_in(console.text("#log-search-count")) or 0) >= 1,
        "#log-search-count counts the match",
    )
    log_row_in_view(console, lines - 1)

    follow = page.locator("button#log-follow")
    pressed = follow.get_attribute("aria-pressed")
    assert pressed in ("true", "false"), f"#log-follow aria-pressed={pressed!r}"

    href = page.locator("a#log-download").get_attribute("href")
    assert href, "#log-download has no href"
    body = page.evaluate("async href => (await (await fetch(href)).text())", href)
    assert body.splitlines() == [f"line {n}" for n in range(1, lines + 1)], (
        f"the download has {len(body.splitlines())} lines"
    )


def test_markup_in_a_log_a_description_or_an_arg_shows_as_text(open_console, config, api):
    name = api.run("markup")
    api.wait_for(name)
    hostile = '<img src=x onerror="window.__injected=1">'
    greeted = api.run("greeter", {"NAME": hostile})
    api.wait_for(greeted)
    console = open_console()
    page = console.page
    console.sign_in(config.admin)

    console.goto(f"/runs/{name}")
    expected = [("1", "<b>bold</b>"), ("2", hostile), ("3", "a & b")]
    eventually(lambda: console.log_rows() == expected, "the lines show as text")
    assert page.locator("#log b, #log img").count() == 0, "log text became markup"
    console.goto("/procs/markup")
    expect(page.locator("#proc-description")).to_contain_text("<i>not italic</i>")
    assert page.locator("#proc-description i, #proc-description script").count() == 0
    console.goto(f"/runs/{greeted}")
    expect(page.locator("#run-args")).to_contain_text(hostile)
    assert page.locator("#run-args img").count() == 0
    eventually(lambda: ("1", f"Hello {hostile}") in console.log_rows(), "the greeting")
    console.goto("/runs")
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => window.__injected") is None, "markup ran as script"


# --- history -----------------------------------------------------------------------------


def apply_filters(console, **values):
    """Opens /runs afresh, sets the filters (`proc=`, `status=`, `user=`, `since=`,
    `until=`) and submits the form."""
    console.goto("/runs")
    for field, value in values.items():
        console.set_field(f"#filter-{field}", value)
    submit = console.page.locator("form#filters button[type=submit]")
    if submit.count():
        submit.first.click()
    else:
        console.page.locator("form#filters").evaluate("form => form.requestSubmit()")


def test_the_history_filters_by_proc_status_user_and_time(
    open_console, config, api, member_api
):
    succeeded = api.run("greeter", {"NAME": "History"})
    failed = api.run("failer")
    members = member_api.run("greeter", {"NAME": "Member"})
    for name in (succeeded, failed, members):
        api.wait_for(name)
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    console.goto("/runs")
    names = eventually(lambda: row_names(console), "runs listed")
    assert {succeeded, failed, members} <= set(names), names
    console.check("runs")

    apply_filters(console, proc="failer")
    eventually(
        lambda: failed in row_names(console) and set(row_cells(console, "proc")) == {"failer"},
        "only failer's runs",
    )
    apply_filters(console, status="FAILED")
    eventually(
        lambda: failed in row_names(console)
        and all("FAILED" in s.upper() for s in row_cells(console, "status")),
        "only FAILED runs",
    )
    apply_filters(console, proc="greeter", status="SUCCEEDED")
    eventually(
        lambda: succeeded in row_names(console)
        and failed not in row_names(console)
        and set(row_cells(console, "proc")) == {"greeter"}
        and all("SUCCEEDED" in s.upper() for s in row_cells(console, "status")),
        "only greeter's SUCCEEDED runs",
    )
    console.check("runs-filtered")
    apply_filters(console, user=config.member[0])
    eventually(
        lambda: members in row_names(console)
        and set(row_cells(console, "user")) == {config.member[0]},
        "only the member's runs",
    )
    apply_filters(console, since="2099-01-01T00:00")
    eventually(lambda: row_names(console) == [], "no run after 2099")

    console.goto("/runs")
    console.mark_document()
    page.locator(f'table#runs tbody tr[data-name="{failed}"] a').first.click()
    console.wait_path(f"/runs/{failed}")
    assert console.same_document()
    console.wait_text("#run-status", r"FAILED")
    expect(page.locator("#run-exit-code")).to_contain_text("3")
    expect(page.locator("#run-reason")).to_have_text(re.compile(r"\S"))


# --- schedules ---------------------------------------------------------------------------


def test_a_schedule_is_previewed_created_disabled_and_deleted(open_console, config, api):
    console = open_console()
    page = console.page
    console.sign_in(config.admin)
    console.goto("/schedules")
    rows = page.locator("table#schedules tbody tr[data-id]")
    before = set(rows.evaluate_all("rows => rows.map(row => row.dataset.id)"))
    console.set_field("select#schedule-proc", "greeter")
    expect(page.locator("input#sarg-NAME")).to_be_visible()
    who = f"Grace {time.time_ns()}"  # a schedule's proc and args are unique
    page.locator("input#sarg-NAME").fill(who)
    page.locator("input#schedule-email").fill("ops@example.com")

    page.locator("input#schedule-time").fill("not a cron")
    page.locator("input#schedule-time").press("Tab")
    error = page.locator("#schedule-error")
    try:
        expect(error).to_have_text(re.compile(r"\S"), timeout=3000)
    except AssertionError:
        page.locator("button#schedule-save").click()
        expect(error).to_have_text(re.compile(r"\S"))
    expect(error).to_be_visible()
    expect(rows).to_have_count(len(before))

    cron = "0 15 2 * * 1"
    page.locator("input#schedule-time").fill(cron)
    page.locator("input#schedule-tz").fill("Europe/Paris")
    page.locator("input#schedule-tz").press("Tab")
    expect(page.locator("#schedule-words")).to_have_text(re.compile(r"\S"))
    expect(page.locator("ol#schedule-next li")).to_have_count(5)
    times = page.locator("ol#schedule-next li").all_inner_texts()
    assert len(set(times)) == 5 and all(t.strip() for t in times), times
    eventually(
        lambda: not error.is_visible() or not error.inner_text().strip(),
        "#schedule-error clears once the time is valid",
    )
    console.check("schedules-form")

    page.locator("button#schedule-save").click()
    expect(rows).to_have_count(len(before) + 1)
    (schedule_id,) = set(rows.evaluate_all("rows => rows.map(row => row.dataset.id)")) - before
    row = page.locator(f'table#schedules tbody tr[data-id="{schedule_id}"]')
    expect(row.locator(".proc")).to_contain_text("greeter")
    expect(row.locator(".time")).to_contain_text(cron)
    expect(row.locator(".next")).to_have_text(re.compile(r"\S"))
    stored = api.get(f"/jobs/schedule/{schedule_id}")
    assert stored.status == 200, stored.text()
    stored = stored.json()
    assert stored["args"] == {"NAME": who}, stored
    assert stored["time_zone"] == "Europe/Paris", stored
    console.check("schedules")

    console.goto(f"/schedules/{schedule_id}")
    expect(page.locator("#schedule-detail")).to_contain_text("greeter")
    expect(page.locator("table#schedule-runs tbody tr[data-name]")).to_have_count(0)
    console.check("schedule")

    console.goto("/schedules")
    row = page.locator(f'table#schedules tbody tr[data-id="{schedule_id}"]')
    enabled_before = row.locator(".enabled").inner_text().strip()
    row.locator("button[data-action=disable]").click()
    expect(row.locator("button[data-action=enable]")).to_be_visible()
    expect(row.locator(".enabled")).not_to_have_text(enabled_before)
    assert api.get(f"/jobs/schedule/{schedule_id}").json()["enabled"] is False

    row.locator("button[data-action=delete]").click()
    expect(row).to_have_count(0)
    assert [kind for kind, _ in console.dialogs] == ["confirm"], console.dialogs
    assert api.get(f"/jobs/schedule/{schedule_id}").status == 404


# --- overview and navigation ------------------------------------------------------------


def test_the_overview_shows_runs_by_proc_and_what_runs_now(open_console, config, api):
    done = api.run("greeter", {"NAME": "Overview"})
    api.wait_for(done)
    running = api.run("sleeper")
    try:
        api.wait_for(running, ("RUNNING",))
        console = open_console()
        page = console.page
        console.sign_in(config.admin)
        console.goto("/")
        expect(page.locator("#overview")).to_be_visible()
        assert page.locator("svg.chart").count() >= 1, "no svg.chart"
        expect(page.locator('table#proc-stats tbody tr[data-proc="greeter"]')).to_have_count(1)
        expect(page.locator("#running-now")).to_contain_text(running)
        console.check("overview")

        console.mark_document()
        for label, path in (
            ("Runs", "/runs"),
            ("Schedules", "/schedules"),
            ("Procs", "/procs"),
            ("Overview", "/"),
        ):
            page.locator("nav#nav a", has_text=re.compile(rf"^\s*{label}\s*$")).click()
            console.wait_path(path)
            assert console.same_document(), f"the {label} link reloaded the page"
        page.go_back()
        console.wait_path("/procs")
        expect(page.locator("ul#procs li[data-proc]").first).to_be_visible()
    finally:
        api.cancel(running)


# --- what a member of "ops" sees ---------------------------------------------------------


def test_a_member_sees_neither_a_proc_of_another_group_nor_its_runs(
    open_console, config, api
):
    hidden_run = api.run("other-only")
    api.wait_for(hidden_run)
    console = open_console()
    page = console.page
    console.sign_in(config.member)
    console.goto("/procs")
    names = eventually(lambda: visible_procs(console), "procs listed")
    assert {"counter", "greeter"} <= set(names), names
    assert "other-only" not in names, names
    assert page.locator('ul#procs li[data-proc="other-only"]').count() == 0
    console.check("procs-member")

    for path in ("/procs/other-only", f"/runs/{hidden_run}"):
        console.goto(path)
        text = page.locator("main#main").inner_text()
        assert FORBIDDEN.search(text), f"{path} as a member of ops shows: {text[:300]!r}"
        assert page.locator("form#run-form:visible").count() == 0
        assert page.locator("#log .log-line").count() == 0
    console.check("proc-forbidden")

    console.goto("/runs")
    time.sleep(0.3)
    assert hidden_run not in row_names(console)


# --- phone width, dark scheme -------------------------------------------------------------


def test_the_run_page_and_overview_fit_a_phone_in_the_dark(open_console, config, api):
    name = api.run("counter")
    api.wait_for(name)
    console = open_console(
        viewport={"width": 390, "height": 844},
        color_scheme="dark",
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    console.goto("/sign-in")
    console.no_horizontal_scroll()
    console.check("phone-dark-sign-in")
    console.sign_in(config.admin)
    console.goto("/")
    console.no_horizontal_scroll()
    console.check("phone-dark-overview")
    console.goto(f"/runs/{name}")
    console.wait_text("#run-status", r"SUCCEEDED")
    eventually(lambda: console.log_rows(), "log lines shown")
    console.no_horizontal_scroll()
    console.check("phone-dark-run")
    luminance = console.page.evaluate(
        """() => {
            for (const el of [document.body, document.documentElement]) {
                const m = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g);
                if (m && (m.length < 4 || Number(m[3]) > 0)) {
                    const [r, g, b] = m.slice(0, 3).map(Number);
                    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
                }
            }
            return 1;
        }"""
    )
    assert luminance < 0.5, f"prefers-color-scheme: dark leaves a light page (luminance {luminance:.2f})"


def test_a_schedules_page_lists_the_runs_it_started(open_console, config, api):
    created = api.request.post(
        "/jobs/schedule",
        data={
            "name": "greeter",
            "args": {"NAME": f"Tick {time.time_ns()}"},
            "time": "@every 1s",
            "notification_emails": "",
            "tags": "console",
            "group_name": "ops",
        },
    )
    assert created.status == 201, created.text()
    schedule_id = created.json()["id"]
    try:

        def fired():
            page = api.get("/api/v1/executions?proc=greeter&limit=500").json()["executions"]
            return [e["name"] for e in page if e.get("schedule_id") == schedule_id]

        run = eventually(fired, "the schedule started a run", timeout=30)[0]
        api.request.post(f"/jobs/schedule/{schedule_id}/disable")
        api.wait_for(run)
        console = open_console()
        page = console.page
        console.sign_in(config.admin)
        console.goto(f"/schedules/{schedule_id}")
        expect(page.locator(f'table#schedule-runs tbody tr[data-name="{run}"]')).to_have_count(1)
        console.check("schedule-with-runs")
        console.goto(f"/runs/{run}")
        expect(page.locator("#run-schedule")).to_contain_text(schedule_id)
    finally:
        api.request.delete(f"/jobs/schedule/{schedule_id}")


def test_a_schedule_is_run_now_and_backfilled_from_its_page(open_console, config, api):
    from datetime import datetime, timedelta, timezone

    # Each minute of the hour two hours ago (UTC): long past, not due again today.
    start = (datetime.now(timezone.utc) - timedelta(hours=2)).replace(
        minute=0, second=0, microsecond=0
    )
    created = api.request.post(
        "/jobs/schedule",
        data={
            "name": "greeter",
            "args": {"NAME": f"Backfill {time.time_ns()}"},
            "time": f"0 * {start.hour} * * *",
            "notification_emails": "",
            "tags": "console",
            "group_name": "ops",
        },
    )
    assert created.status == 201, created.text()
    schedule_id = created.json()["id"]

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    try:
        # Three of the five fires have run already.
        first = api.request.post(
            f"/jobs/schedule/{schedule_id}/backfill",
            data={"from": at(1).isoformat(), "to": at(4).isoformat()},
        )
        assert first.status == 200, first.text()
        assert len(first.json()["started"]) == 3, first.text()

        console = open_console(timezone_id="UTC")
        page = console.page
        console.sign_in(config.admin)
        console.goto(f"/schedules/{schedule_id}")
        page.locator("button#schedule-run-now").click()
        run = run_name(console, "greeter")
        expect(page.locator("#run-schedule")).to_contain_text(schedule_id)
        api.wait_for(run)

        console.goto(f"/schedules/{schedule_id}")
        local = "%Y-%m-%dT%H:%M:%S"
        page.locator("input#backfill-from").fill(at(0).strftime(local))
        page.locator("input#backfill-to").fill(at(5).strftime(local))
        page.locator("button#backfill-submit").click()
        summary = page.locator("#backfill-summary")
        expect(summary).to_have_text("5 fires: 2 started, 3 skipped (already ran), 0 failed.")
        result = page.locator("#backfill-result")
        assert result.get_attribute("data-started") == "2"
        assert result.get_attribute("data-skipped") == "3"
        expect(page.locator("ul#backfill-started li a")).to_have_count(2)
        # The page's runs and fires show what the backfill added.
        expect(page.locator("table#schedule-runs tbody tr[data-name]")).to_have_count(6)
        expect(page.locator("table#schedule-fires tbody tr")).to_have_count(5)
        console.check("schedule-backfilled")

        history = api.get(f"/jobs/schedule/{schedule_id}/executions").json()
        assert len(history["executions"]) == 6, history  # five fires and the run now
        assert sorted(f["outcome"] for f in history["fires"]) == ["backfilled"] * 5, history

        page.locator("input#backfill-from").fill(at(30).strftime(local))
        page.locator("input#backfill-to").fill(at(20).strftime(local))
        page.locator("button#backfill-submit").click()
        expect(page.locator("#backfill-error")).to_contain_text("must be before")
    finally:
        api.request.delete(f"/jobs/schedule/{schedule_id}")


# --- a proc's limits and pod options, a run's notifications --------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver answering 200 to every POST, keeping the paths it got."""

    received: list[str] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_procs_limits_and_pod_options_and_a_runs_deliveries_are_shown(open_console, config, api):
    proc = {
        "name": "limited-pod",
        "description": "limits, retention and pod options",
        "image_name": "alpine:3",
        "env_vars": {"args": [], "secrets": []},
        "command": ["sh", "-c", "sleep 1; echo notified"],
        "max_concurrent_runs": 3,
        "execution_retention_days": 0,
        "log_retention_days": 7,
        "pod": {
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
            "nodeSelector": {"node-pool": "batch"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
            ],
            "serviceAccountName": "reporter",
            "imagePullSecrets": [{"name": "registry-creds"}],
            "labels": {"team": "ops"},
        },
    }
    response = api.request.post("/jobs/metadata", data=proc)
    assert response.status in (200, 201), f"register: {response.status} {response.text()}"

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        for scheme in ("light", "dark"):
            console = open_console(f"limits-{scheme}", color_scheme=scheme)
            page = console.page
            console.sign_in(config.admin)
            console.goto("/procs/limited-pod")
            expect(page.locator("#proc-max-concurrent")).to_have_text(
                "At most 3 runs at once; more wait as QUEUED"
            )
            expect(page.locator("#proc-execution-retention")).to_have_text("for ever")
            expect(page.locator("#proc-log-retention")).to_have_text("7 days")
            pod = page.locator("dl#proc-pod")
            expect(pod.locator("[data-pod=requests]")).to_have_text("cpu=500m")
            expect(pod.locator("[data-pod=limits]")).to_have_text("memory=1Gi")
            expect(pod.locator("[data-pod=nodeSelector]")).to_have_text("node-pool=batch")
            expect(pod.locator("[data-pod=tolerations]")).to_have_text("dedicated=batch:NoSchedule")
            expect(pod.locator("[data-pod=serviceAccountName]")).to_have_text("reporter")
            expect(pod.locator("[data-pod=imagePullSecrets]")).to_have_text("registry-creds")
            expect(pod.locator("[data-pod=labels]")).to_have_text("team=ops")
            console.check(f"proc-limits-{scheme}")

            response = api.request.post("/jobs/execute", data={
                "name": "limited-pod",
                "args": {},
                "notify": [{"kind": "webhook", "url": f"http://127.0.0.1:{port}/hook?secret=s3cret", "on": "always"}],
            })
            assert response.status == 201, f"run: {response.status} {response.text()}"
            name = response.json()["name"]
            console.goto(f"/runs/{name}")
            target = page.locator("#run-notify li[data-kind=webhook]")
            expect(target).to_have_count(1)
            expect(target.locator(".target")).to_have_text(f"http://127.0.0.1:{port}/…")
            expect(target.locator(".on")).to_have_text("on always")
            console.wait_text("#run-status", r"SUCCEEDED", RUN)
            row = page.locator("table#run-deliveries tbody tr[data-id]")
            expect(row).to_have_count(1, timeout=RUN)
            expect(row).to_have_attribute("data-status", "delivered", timeout=RUN)
            expect(row.locator(".kind")).to_have_text("webhook")
            expect(row.locator(".target")).to_have_text(f"http://127.0.0.1:{port}/…")
            expect(row.locator(".attempts")).to_have_text("1")
            expect(row.locator(".last")).to_contain_text("200")
            assert "s3cret" not in page.locator("main").inner_text(), "the URL was shown unmasked"
            assert _Receiver.received.count("/hook?secret=s3cret") >= 1
            # Nothing is pending any more: the page stops asking.
            page.wait_for_timeout(1500)
            asked = []
            page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/notifications") else None)
            page.wait_for_timeout(2500)
            assert not asked, f"the delivery log was still polled: {asked}"
            console.check(f"run-notifications-{scheme}")
    finally:
        server.shutdown()
        server.server_close()
