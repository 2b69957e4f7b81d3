#!/usr/bin/env python3
"""The Prefect 3 half of the `peer` bench (started by `benches/proctor.rs`, full mode only).

Runs the workload of the Proctor half on a Prefect 3 server of its own, on loopback,
and prints one JSON line with what it measured:

    workload      a flow `peer-hello(name)` running `sh -c 'echo hello $NAME; echo two;
                  echo three'` and sending each line to Prefect's run logger (stored
                  through the API, read back with POST /api/logs/filter)
    accepted_ms   submit → the API answered POST /api/deployments/{id}/create_flow_run
                  (201), for the runs submitted one after another
    busy_accepted_ms
                  the same for the runs submitted by `clients` clients at once
    submits_retried
                  submits answered 503 (SQLite locked) or 429 and sent again
    final_ms      submit → the final state seen by the client (the server's events
                  websocket, /api/events/out, announcing prefect.flow-run.Completed /
                  Failed / Crashed / Cancelled), runs submitted one after another
    stamped_ms    the same runs from the server's own stamps: flow run `created` →
                  `end_time` (no detection delay)
    runs, clients, concurrent_seconds
                  `runs` runs submitted by `clients` clients (each submitting its share
                  back to back): seconds from the first submit to the last final state
    all_completed every concurrent run ended COMPLETED
    lines_ok      every concurrent run's three lines are returned by POST /api/logs/filter
    idle_rss_kib, peak_rss_kib
                  RSS summed over every process of the server and the runner (the flow
                  run subprocesses included): at rest after a warm-up run; the highest
                  sample (every 50 ms) while the runs went
    cpu_seconds   user + system CPU of all those processes (children reaped included)
                  from the first concurrent submit to 1 s after the last final state
    version, config

Configuration (what Prefect's documentation describes for serving a flow, with every
knob that shortens the path of a short run turned its way): `prefect server start` on
SQLite (PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME in a temp dir), its UI,
analytics and deployment scheduler off; the flow served by a `Runner` (what
`flow.serve()` starts) with its poll (`query_seconds`, PREFECT_RUNNER_POLL_FREQUENCY,
default 10 s) lowered to PEER_QUERY_SECONDS and its `limit` (default 5) raised to
PEER_LIMIT; the server's keep-alive raised to 120 s (a pooled connection idle while a
run goes is not closed under the client); logging to the API on (the default).

Environment: PEER_SEQUENTIAL (50), PEER_RUNS (200), PEER_CLIENTS (8), PEER_LIMIT (8),
PEER_QUERY_SECONDS (1), PEER_DEADLINE_S (2400: everything is stopped after it).

Why a poll of 1 s and a limit of 8 (measured on the 2-core machine of BENCHMARKS.md):
each poll costs the server ~25 ms of CPU, so polling every 0.1 s took ~28 % of a core
from the runs, idle, for at most ~0.45 s less wait per run of 5-10 s; each flow run is a
new Python interpreter importing Prefect (~2.5 CPU-seconds before the flow starts), so
more than a few at once on two cores only adds memory and SQLite lock contention.

`peer_bench.py serve` is the runner process (internal).
"""

import os
import subprocess

from prefect import flow, get_run_logger

COMMAND = "echo hello $NAME; echo two; echo three"


@flow(name="peer-hello")
def hello(name: str) -> None:
    logger = get_run_logger()
    out = subprocess.run(
        ["sh", "-c", COMMAND],
        env={**os.environ, "NAME": name},
        capture_output=True,
        text=True,
        check=True,
    )
    for line in out.stdout.splitlines():
        logger.info(line)


async def serve() -> None:
    from prefect.runner import Runner

    runner = Runner(
        name="peer-runner",
        query_seconds=float(os.environ.get("PEER_QUERY_SECONDS", "1")),
        limit=int(os.environ.get("PEER_LIMIT", "8")),
    )
    await runner.aadd_flow(hello, name="peer")
    await runner.start()


# ---------------------------------------------------------------------------------
# The bench (the main process: the clients and the measuring, not counted).

# The processes this bench started (each the leader of its own session) and its temp dir.
STARTED = []
TEMP_DIRS = []


def stop_all():
    import shutil
    import signal

    # The runner (started last) first: it reports to the server while it stops.
    for p in reversed(STARTED):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            # Whatever is left of its session (flow run subprocesses, trackers).
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
    STARTED.clear()
    for d in TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def tree_pids(roots):
    """The roots and all their live descendants (walks /proc once)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parent[int(entry)] = int(fields[1])
    found = [r for r in roots if r in parent]
    seen = set(found)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in seen and pid not in seen:
                seen.add(pid)
                found.append(pid)
                changed = True
    return found


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pids):
    """utime + stime + cutime + cstime of each live process: a process's own time and
    that of its descendants it reaped, so nothing is counted twice."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / ticks


def main() -> None:
    import asyncio
    import json
    import socket
    import sys
    import tempfile
    import threading
    import time

    import httpx

    sequential = int(os.environ.get("PEER_SEQUENTIAL", "50"))
    runs = int(os.environ.get("PEER_RUNS", "200"))
    clients = int(os.environ.get("PEER_CLIENTS", "8"))
    limit = int(os.environ.get("PEER_LIMIT", "8"))
    query_seconds = float(os.environ.get("PEER_QUERY_SECONDS", "1"))
    deadline_s = float(os.environ.get("PEER_DEADLINE_S", "2400"))

    def log(*args):
        print("peer_bench:", *args, file=sys.stderr, flush=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="proctor-peer-prefect-")
    TEMP_DIRS.append(tmp)
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": os.path.join(tmp, "home"),
        "PREFECT_API_URL": api,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "true",
        "PEER_LIMIT": str(limit),
        "PEER_QUERY_SECONDS": str(query_seconds),
        "DO_NOT_TRACK": "1",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("PREFECT_")})
    def watchdog():
        time.sleep(deadline_s)
        print(json.dumps({"error": f"deadline of {deadline_s:.0f} s passed"}), flush=True)
        stop_all()
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()

    prefect_bin = os.path.join(os.path.dirname(sys.executable), "prefect")
    t0 = time.monotonic()
    server = subprocess.Popen(
        [prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--keep-alive-timeout", "120"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "server.log"), "w"),
        start_new_session=True,
    )
    STARTED.append(server)
    http = httpx.Client(base_url=api, timeout=60)
    while True:
        try:
            if http.get("/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() - t0 > 600:
            raise RuntimeError("the Prefect server did not start: " + open(os.path.join(tmp, "server.log")).read()[-2000:])
        time.sleep(0.05)
    server_ready_s = time.monotonic() - t0
    version = http.get("/admin/version").json()
    runner = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "runner.log"), "w"),
        start_new_session=True,
    )
    STARTED.append(runner)
    while True:
        r = http.get("/deployments/name/peer-hello/peer")
        if r.status_code == 200:
            deployment = r.json()["id"]
            break
        if runner.poll() is not None or time.monotonic() - t0 > 900:
            raise RuntimeError("the runner did not register its deployment: " + open(os.path.join(tmp, "runner.log")).read()[-2000:])
        time.sleep(0.1)
    roots = [server.pid, runner.pid]
    log(f"Prefect {version} up in {server_ready_s:.1f} s; deployment {deployment}")

    peak = {"kib": 0, "on": False}

    def sampler():
        while True:
            if peak["on"]:
                peak["kib"] = max(peak["kib"], rss_kib(tree_pids(roots)))
            time.sleep(0.05)

    threading.Thread(target=sampler, daemon=True).start()

    FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    async def bench():
        from prefect.events.clients import PrefectEventSubscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        waiting = {}
        ended = {}
        retried = [0]
        names = [f"prefect.flow-run.{s.capitalize()}" for s in FINAL]
        subscriber = PrefectEventSubscriber(
            api_url=api,
            filter=EventFilter(event=EventNameFilter(name=names))
        )
        await subscriber.__aenter__()

        async def listen():
            async for event in subscriber:
                run = event.resource.id.removeprefix("prefect.flow-run.")
                ended[run] = (time.monotonic(), event.event.rsplit(".", 1)[1].upper())
                future = waiting.pop(run, None)
                if future is not None and not future.done():
                    future.set_result(ended[run])

        listener = asyncio.create_task(listen())
        client = httpx.AsyncClient(
            base_url=api, timeout=120, limits=httpx.Limits(max_connections=clients + 4)
        )

        async def submit(name):
            # As Prefect's own client does, a 503 (what the server answers when SQLite
            # is locked) or 429 is retried, after 0.1 s doubled at each try up to 2 s,
            # for up to 300 s (its client waits 2 s, doubled, 5 times); each counts in
            # `retried` and the latency.
            sent = time.monotonic()
            for attempt in range(1000):
                try:
                    r = await client.post(
                        f"/deployments/{deployment}/create_flow_run",
                        json={"parameters": {"name": name}},
                    )
                    if r.status_code not in (429, 502, 503):
                        break
                except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError):
                    # A pooled connection the server closed meanwhile (its client
                    # retries these too).
                    if time.monotonic() - sent > 300:
                        raise
                retried[0] += 1
                if time.monotonic() - sent > 300:
                    break
                await asyncio.sleep(min(0.1 * 2**attempt, 2))
            accepted = time.monotonic()
            assert r.status_code == 201, r.text
            return r.json()["id"], sent, accepted

        async def final_of(run):
            if run in ended:
                return ended[run]
            future = waiting.get(run)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                waiting[run] = future
            return await future

        missed = [0]

        async def safety_net():
            # Should an event never come: one look at the runs still awaited, every 15 s
            # (a run already final there then counts as ended now, and as missed).
            while True:
                await asyncio.sleep(15)
                ids = list(waiting)
                for i in range(0, len(ids), 200):
                    r = await client.post(
                        "/flow_runs/filter",
                        json={"flow_runs": {"id": {"any_": ids[i : i + 200]}}, "limit": 200},
                    )
                    for fr in r.json():
                        if fr["state_type"] in FINAL and fr["id"] in waiting:
                            await asyncio.sleep(1)  # the event may be on its way
                            future = waiting.pop(fr["id"], None)
                            if future is not None and not future.done():
                                missed[0] += 1
                                log(f"no event for {fr['id']}; the API says {fr['state_type']}")
                                ended[fr["id"]] = (time.monotonic(), fr["state_type"])
                                future.set_result(ended[fr["id"]])

        net = asyncio.create_task(safety_net())

        # A warm-up run, then rest, then idle memory.
        run, _, _ = await submit("warm-up")
        await final_of(run)
        await asyncio.sleep(3)
        idle = rss_kib(tree_pids(roots))
        peak["kib"], peak["on"] = idle, True

        accepted_ms, final_ms, seq_runs = [], [], []
        for i in range(sequential):
            run, sent, accepted = await submit(f"seq-{i}")
            at, _ = await final_of(run)
            accepted_ms.append((accepted - sent) * 1000)
            final_ms.append((at - sent) * 1000)
            seq_runs.append(run)
        log(f"sequential: {sequential} runs")

        cpu_before = cpu_seconds(tree_pids(roots))
        start = time.monotonic()
        conc_accepted, conc_runs = [], []

        async def one_client(c):
            mine = []
            for i in range(c, runs, clients):
                run, sent, accepted = await submit(f"run-{i}")
                conc_accepted.append((accepted - sent) * 1000)
                mine.append((run, f"run-{i}"))
            ends = [await final_of(run) for run, _ in mine]
            conc_runs.extend(mine)
            return ends

        results = await asyncio.gather(*(one_client(c) for c in range(clients)))
        last = max(at for ends in results for at, _ in ends)
        all_completed = all(state == "COMPLETED" for ends in results for _, state in ends)
        await asyncio.sleep(1)
        cpu = cpu_seconds(tree_pids(roots)) - cpu_before
        peak["on"] = False
        log(f"concurrent: {runs} runs in {last - start:.1f} s")

        # The server's own stamps of the sequential runs.
        stamped_ms = []
        for run in seq_runs:
            r = (await client.get(f"/flow_runs/{run}")).json()
            created = datetime_of(r["created"])
            end = datetime_of(r["end_time"]) if r.get("end_time") else None
            if end is not None:
                stamped_ms.append((end - created).total_seconds() * 1000)
        # Every concurrent run's three lines, through the logs filter API (lines sent
        # in the run's last batch may still be on their way: up to 30 s allowed).
        lines_ok, missing = True, 0
        check_until = time.monotonic() + 30
        for run, name in conc_runs:
            want = [f"hello {name}", "two", "three"]
            while True:
                r = await client.post(
                    "/logs/filter",
                    json={"logs": {"flow_run_id": {"any_": [run]}}, "limit": 200},
                )
                messages = [entry["message"] for entry in r.json()]
                if all(line in messages for line in want):
                    break
                if time.monotonic() > check_until:
                    lines_ok = False
                    missing += 1
                    break
                await asyncio.sleep(0.2)
        state_types = {}
        for i in range(0, len(conc_runs), 100):
            ids = [run for run, _ in conc_runs[i : i + 100]]
            r = await client.post(
                "/flow_runs/filter",
                json={"flow_runs": {"id": {"any_": ids}}, "limit": 200},
            )
            for fr in r.json():
                state_types[fr["id"]] = fr["state_type"]
        all_completed = all_completed and len(state_types) == runs and all(
            s == "COMPLETED" for s in state_types.values()
        )
        listener.cancel()
        net.cancel()
        await client.aclose()
        return {
            "accepted_ms": accepted_ms,
            "busy_accepted_ms": conc_accepted,
            "final_ms": final_ms,
            "stamped_ms": stamped_ms,
            "runs": runs,
            "clients": clients,
            "concurrent_seconds": last - start,
            "all_completed": all_completed,
            "lines_ok": lines_ok,
            "runs_missing_lines": missing,
            "idle_rss_kib": idle,
            "peak_rss_kib": peak["kib"],
            "cpu_seconds": cpu,
            "submits_retried": retried[0],
            "final_events_missed": missed[0],
        }

    def datetime_of(text):
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    result = asyncio.run(bench())
    import prefect

    result["version"] = prefect.__version__
    result["server_ready_s"] = server_ready_s
    result["config"] = {
        "database": "sqlite (aiosqlite)",
        "executed_by": "Runner (flow.serve), one spawned subprocess per flow run",
        "runner_limit": limit,
        "runner_query_seconds": query_seconds,
        "final_state_seen_by": "events websocket /api/events/out",
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["serve"]:
        import asyncio

        asyncio.run(serve())
    else:
        import json

        try:
            main()
        except BaseException as e:  # reported to the Rust side, which prints it
            import traceback

            traceback.print_exc()
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
            stop_all()
            sys.exit(1)
        stop_all()
