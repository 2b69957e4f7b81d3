#!/usr/bin/env python3
"""The console's log viewer on a long log, in Debian's Chromium (Playwright for Python).

Opens /runs/NAME for an execution whose log has N lines and prints one JSON line:

    first_line_ms         from navigation start to the first `.log-line` in the page
    end_ms                from a click on `button#log-end` until the row whose `.ln` is
                          N is rendered inside the log's scrolling box
    scroll_steps          how many jumps scrolled the log from top to bottom
    heap_used_bytes       the page's JS heap after those jumps (CDP Runtime.getHeapUsage)
    heap_after_gc_bytes   the same after a forced garbage collection
    rendered_rows         `.log-line` rows in the DOM at the end (the viewer renders only
                          those on screen)
    dom_nodes             elements in the document at the end
    max_roundtrip_ms      the slowest `page.evaluate('1')` round trip, measured after each
                          jump and while waiting for rows
    responsive            whether every round trip took under 1 s

Environment:
    PROCTOR_URL           proctord's base URL (required), e.g. http://127.0.0.1:5001
    PROCTOR_EMAIL         who signs in (through POST /api/v1/session); unset: no sign-in
                          (authentication off)
    PROCTOR_TOKEN         that user's token
    PROCTOR_EXECUTION     the execution's name (required)
    PROCTOR_LINES         how many lines its log has (required)
    PROCTOR_SCROLL_STEPS  jumps from top to bottom (default 200)
    PROCTOR_CHROMIUM      the browser (default /usr/bin/chromium; Playwright's own
                          browsers are never downloaded)
    PROCTOR_TIMEOUT_S     how long to wait for each thing (default 60)

Exits 0 after printing the results, 1 (after printing {"error": ...}) when a step fails.
"""

import json
import os
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-precise-memory-info",
]

# Installed before the page's own scripts (through the DevTools protocol, which the
# page's Content-Security-Policy does not govern): notes when the first log row appears.
WATCH_FIRST_LINE = """
(() => {
  const seen = () => {
    if (window.__firstLogLine === undefined && document.querySelector('.log-line')) {
      window.__firstLogLine = performance.now();
    }
  };
  new MutationObserver(seen).observe(document, { childList: true, subtree: true });
})();
"""

# The element that scrolls the log: #log itself, or its nearest scrolling ancestor or
# descendant.
SCROLLER = """
() => {
  const log = document.querySelector('#log');
  if (!log) return null;
  const scrolls = e => {
    const o = getComputedStyle(e).overflowY;
    return (o === 'auto' || o === 'scroll') && e.scrollHeight > e.clientHeight + 1;
  };
  for (let e = log; e && e !== document.documentElement; e = e.parentElement) {
    if (scrolls(e)) return e;
  }
  return [...log.querySelectorAll('*')].find(scrolls) || null;
}
"""

WAIT_FOR_ROW = """
async ({ n, timeoutMs }) => {
  const t0 = performance.now();
  const inView = () => {
    const box = (window.__logScroller || document.querySelector('#log')).getBoundingClientRect();
    for (const row of document.querySelectorAll('#log .log-line')) {
      if ((row.querySelector('.ln')?.textContent ?? '').trim() !== String(n)) continue;
      const r = row.getBoundingClientRect();
      if (r.height > 0 && r.bottom > box.top && r.top < box.bottom) return true;
    }
    return false;
  };
  document.querySelector('button#log-end').click();
  while (!inView()) {
    if (performance.now() - t0 > timeoutMs) return null;
    await new Promise(resolve => requestAnimationFrame(resolve));
  }
  return performance.now() - t0;
}
"""


def env(name, default=None):
    value = os.environ.get(name, default)
    if value in (None, ""):
        fail(f"{name} is not set")
    return value


def fail(message):
    print(json.dumps({"error": message}), flush=True)
    sys.exit(1)


def main():
    url = env("PROCTOR_URL").rstrip("/")
    execution = env("PROCTOR_EXECUTION")
    lines = int(env("PROCTOR_LINES"))
    steps = max(2, int(env("PROCTOR_SCROLL_STEPS", "200")))
    chromium = env("PROCTOR_CHROMIUM", "/usr/bin/chromium")
    timeout_ms = int(float(env("PROCTOR_TIMEOUT_S", "60")) * 1000)
    email, token = os.environ.get("PROCTOR_EMAIL"), os.environ.get("PROCTOR_TOKEN")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        roundtrips = []

        def roundtrip():
            start = time.perf_counter()
            page.evaluate("1")
            roundtrips.append((time.perf_counter() - start) * 1000)

        if email:
            page.goto(f"{url}/sign-in")
            status = page.evaluate(
                """async ([email, token]) => (await fetch('/api/v1/session', {
                    method: 'POST',
                    headers: { 'Content-Type': 'application/json' },
                    body: JSON.stringify({ email, token }),
                })).status""",
                [email, token],
            )
            if status >= 300:
                fail(f"sign-in refused: POST /api/v1/session answered {status}")

        page.add_init_script(WATCH_FIRST_LINE)
        started = time.perf_counter()
        page.goto(f"{url}/runs/{execution}")
        page.wait_for_selector(".log-line", state="attached")
        first_line_wall_ms = (time.perf_counter() - started) * 1000
        first_line_ms = page.evaluate("() => window.__firstLogLine ?? null")
        roundtrip()

        page.wait_for_selector('main#main[data-ready="1"]', state="attached")
        has_scroller = page.evaluate(
            f"() => {{ const s = ({SCROLLER})(); window.__logScroller = s; return !!s; }}"
        )
        end_ms = page.evaluate(
            WAIT_FOR_ROW, {"n": lines, "timeoutMs": timeout_ms}
        )
        roundtrip()
        if end_ms is None:
            fail(f"row {lines} never showed after clicking #log-end ({timeout_ms} ms)")

        if has_scroller:
            for i in range(steps):
                page.evaluate(
                    """async f => {
                        const s = window.__logScroller;
                        s.scrollTop = f * (s.scrollHeight - s.clientHeight);
                        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
                    }""",
                    i / (steps - 1),
                )
                roundtrip()
        else:
            box = page.locator("#log").bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + min(box["height"], 200) / 2)
            page.locator("button#log-top").click()
            for _ in range(steps):
                page.mouse.wheel(0, 20 * lines / steps)
                roundtrip()

        cdp = context.new_cdp_session(page)
        heap = cdp.send("Runtime.getHeapUsage")["usedSize"]
        cdp.send("HeapProfiler.collectGarbage")
        heap_after_gc = cdp.send("Runtime.getHeapUsage")["usedSize"]
        counts = page.evaluate(
            """() => [document.querySelectorAll('#log .log-line').length,
                      document.getElementsByTagName('*').length]"""
        )
        browser.close()

    if errors:
        fail(f"uncaught page errors: {errors[:3]}")
    print(
        json.dumps(
            {
                "execution": execution,
                "lines": lines,
                "first_line_ms": round(first_line_ms, 1) if first_line_ms is not None else None,
                "first_line_wall_ms": round(first_line_wall_ms, 1),
                "end_ms": round(end_ms, 1),
                "scroll_steps": steps,
                "scrolled_by": "scrollTop" if has_scroller else "wheel",
                "heap_used_bytes": heap,
                "heap_after_gc_bytes": heap_after_gc,
                "rendered_rows": counts[0],
                "dom_nodes": counts[1],
                "max_roundtrip_ms": round(max(roundtrips), 1),
                "responsive": max(roundtrips) < 1000,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
