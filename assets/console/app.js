// Proctor console: one ES module, no framework, no build step. It speaks only the
// public API (the JSON routes and the log websocket), signed in by an HttpOnly session
// cookie; it never sees or keeps a token after signing in. Text from the server is only
// ever set as textContent, never parsed as HTML.

const STATUSES = ["RECEIVED", "QUEUED", "CREATED", "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED",
  "REQUIREMENT_NOT_MET", "CREATION_FAILED"];
const FINAL = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "REQUIREMENT_NOT_MET", "CREATION_FAILED"]);
const CHART_SERIES = [
  ["SUCCEEDED", "var(--ok)"], ["FAILED", "var(--fail)"], ["TIMED_OUT", "var(--timeout)"],
  ["CANCELLED", "var(--cancel)"], ["OTHER", "var(--other)"],
];

// ---------------------------------------------------------------- small helpers

const $ = (selector, root = document) => root.querySelector(selector);

/** An element: `el("a", {href: "/x", class: "y", onclick: f}, "text", child)`. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  setProps(node, props);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function setProps(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
}

/** An SVG element. */
function svg(tag, props = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(props)) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

const enc = encodeURIComponent;

function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** A time as the clock in `zone` shows it, naming the zone. */
function formatInZone(iso, zone) {
  if (!iso) return "—";
  try {
    return new Intl.DateTimeFormat(undefined, {
      timeZone: zone, weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
    }).format(new Date(iso));
  } catch {
    return formatTime(iso);
  }
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function runDuration(run) {
  if (!run.started_at) return null;
  const end = run.finished_at ? new Date(run.finished_at) : new Date();
  return (end - new Date(run.started_at)) / 1000;
}

function statusBadge(status, props = {}) {
  return el("span", { ...props, class: `status s-${status}` }, status);
}

/** A shell word, quoted only when it must be. */
function shellWord(text) {
  return /^[A-Za-z0-9_.,:/=@%+-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body) {
    const message = body && typeof body === "object" && body.error ? body.error
      : (typeof body === "string" && body ? body : `the server answered ${status}`);
    super(message);
    this.status = status;
    this.detail = body && typeof body === "object" ? body.detail : null;
  }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { error: "the server cannot be reached" });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    if (response.status === 401 && session.auth !== "off" && location.pathname !== "/sign-in") {
      session.user = null;
      queueMicrotask(() => navigate(`/sign-in?next=${enc(location.pathname + location.search)}`, true));
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

// ---------------------------------------------------------------- session and routing

const session = { auth: null, user: null };

async function loadSession() {
  try {
    const who = await fetch("/api/v1/session", { credentials: "same-origin" });
    if (who.ok) {
      const body = await who.json();
      session.auth = body.auth;
      session.user = body.signed_in ? body : null;
    } else {
      session.auth = "on";
      session.user = null;
    }
  } catch {
    session.auth = session.auth || "on";
  }
  showAccount();
}

function showAccount() {
  $("#nav").hidden = session.auth === "on" && !session.user;
  const who = $("#who");
  const out = $("#sign-out");
  if (session.user && session.auth === "on") {
    who.textContent = session.user.email + (session.user.is_admin ? " (admin)" : "");
    out.hidden = false;
  } else {
    who.textContent = session.auth === "off" ? "authentication off" : "";
    out.hidden = true;
  }
}

const ROUTES = [
  [/^\/$/, overviewPage, "Overview"],
  [/^\/sign-in$/, signInPage, "Sign in"],
  [/^\/procs$/, procsPage, "Procs"],
  [/^\/procs\/([^/]+)$/, procPage, "Proc"],
  [/^\/runs$/, historyPage, "Runs"],
  [/^\/runs\/([^/]+)$/, runPage, "Run"],
  [/^\/schedules$/, schedulesPage, "Schedules"],
  [/^\/schedules\/([^/]+)$/, schedulePage, "Schedule"],
];

let generation = 0;
let cleanups = [];

function navigate(url, replace = false) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

/** What a page may do while it is shown: stop things when it is left. */
class PageContext {
  constructor(id) { this.id = id; }
  get current() { return this.id === generation; }
  onLeave(fn) { if (this.current) cleanups.push(fn); else fn(); }
  every(ms, fn) {
    const timer = setInterval(() => { if (this.current) fn(); }, ms);
    this.onLeave(() => clearInterval(timer));
  }
}

async function render() {
  for (const fn of cleanups.splice(0)) {
    try { fn(); } catch (e) { console.warn(e); }
  }
  const id = ++generation;
  const ctx = new PageContext(id);
  const main = $("#main");
  main.dataset.ready = "0";
  if (session.auth === null) await loadSession();
  const path = location.pathname;
  if (session.auth === "on" && !session.user && path !== "/sign-in") {
    navigate(`/sign-in?next=${enc(path + location.search)}`, true);
    return;
  }
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll("#nav a")) {
    const href = link.getAttribute("href");
    const here = href === "/" ? path === "/" : path === href || path.startsWith(`${href}/`);
    if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const view = el("div");
  if (!route) {
    view.append(el("h1", {}, "Not found"), el("p", {}, "No page here. ", el("a", { href: "/" }, "Go to the overview.")));
  } else {
    const [pattern, page, title] = route;
    document.title = `${title} · Proctor`;
    const params = pattern.exec(path).slice(1).map(decodeURIComponent);
    try {
      await page(view, ctx, ...params);
    } catch (error) {
      if (!ctx.current) return;
      view.replaceChildren(el("h1", {}, title), problem(error));
    }
  }
  if (!ctx.current) return;
  main.replaceChildren(view);
  const heading = $("h1", main);
  if (heading && route && route[2] !== "Overview") document.title = `${heading.textContent} · Proctor`;
  // After a move inside the app, put focus (and a screen reader) at the new page.
  if (rendered) main.focus({ preventScroll: true });
  rendered = true;
  main.dataset.ready = "1";
}

let rendered = false;

function problem(error) {
  const status = error instanceof ApiError ? error.status : 0;
  const words = status === 403 ? "Forbidden: you may not see this."
    : status === 404 ? "Not found."
      : status >= 400 && status < 500 ? "Not valid:" : "Something went wrong.";
  return el("div", { class: "panel", role: "alert" }, el("strong", {}, words), " ", error.message);
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download") || event.defaultPrevented) return;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || !ROUTES.some(([pattern]) => pattern.test(url.pathname))) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", render);

// ---------------------------------------------------------------- sign in

async function signInPage(view) {
  if (session.auth === "off") {
    view.append(el("h1", {}, "Sign in"), el("p", {}, "Authentication is off on this server: there is nothing to sign in to. ",
      el("a", { href: "/" }, "Go to the overview.")));
    return;
  }
  const error = el("p", { id: "sign-in-error", class: "form-error", role: "alert" });
  const email = el("input", { id: "email", name: "email", type: "email", autocomplete: "username", required: true });
  const token = el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const form = el("form", { id: "sign-in", class: "panel", novalidate: true },
    el("label", { for: "email" }, "E-mail"), email,
    el("label", { for: "token" }, "Access token ", el("span", { class: "hint" }, "(an admin makes one with proctord token create EMAIL)")),
    token, error,
    el("p", {}, el("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const who = await api("POST", "/api/v1/session", { email: email.value, token: token.value });
      session.auth = who.auth;
      session.user = who;
      token.value = "";
      showAccount();
      const next = new URLSearchParams(location.search).get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", true);
    } catch (e) {
      error.textContent = e.message;
    }
  });
  view.append(el("h1", {}, "Sign in to Proctor"), form);
}

$("#sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/api/v1/session"); } catch (e) { console.warn(e.message); }
  session.user = null;
  showAccount();
  navigate("/sign-in", true);
});

// ---------------------------------------------------------------- overview

async function overviewPage(view, ctx) {
  const bucket = new URLSearchParams(location.search).get("bucket") === "day" ? "day" : "hour";
  const heading = el("div", { class: "actions" },
    el("h1", {}, "Overview"),
    el("a", { class: "button", href: "/?bucket=hour", "aria-current": bucket === "hour" ? "true" : null }, "Last 24 hours"),
    el("a", { class: "button", href: "/?bucket=day", "aria-current": bucket === "day" ? "true" : null }, "Last 30 days"));
  const body = el("div", { id: "overview" });
  view.append(heading, body);
  const draw = async () => {
    const [stats, running] = await Promise.all([
      api("GET", `/api/v1/stats?bucket=${bucket}`),
      api("GET", "/api/v1/executions?status=RUNNING&limit=20"),
    ]);
    if (ctx.current) body.replaceChildren(...overview(stats, running.executions, bucket));
  };
  await draw();
  ctx.every(bucket === "day" ? 60000 : 5000, () => draw().catch((e) => console.warn(e.message)));
}

function overview(stats, running, bucket) {
  let finished = 0;
  let succeeded = 0;
  for (const b of stats.buckets) {
    for (const [status, n] of Object.entries(b.counts)) {
      finished += n;
      if (status === "SUCCEEDED") succeeded += n;
    }
  }
  const rate = finished ? `${Math.round((succeeded / finished) * 100)} %` : "—";
  const span = bucket === "day" ? "30 days" : "24 hours";
  const numbers = el("div", { class: "grid numbers" },
    el("div", { class: "panel" }, el("div", { class: "muted" }, `Finished runs, ${span}`), el("div", { class: "big" }, finished)),
    el("div", { class: "panel" }, el("div", { class: "muted" }, `Success rate, ${span}`), el("div", { class: "big" }, rate)),
    el("div", { class: "panel" }, el("div", { class: "muted" }, "Going now"), el("div", { class: "big" }, stats.running)));
  const chartPanel = el("section", { class: "panel", "aria-labelledby": "chart-title" },
    el("h2", { id: "chart-title" }, `Runs per ${bucket} by final status`), barChart(stats.buckets, bucket),
    el("div", { class: "legend" }, CHART_SERIES.map(([name, color]) => {
      const item = el("span", {}, name === "OTHER" ? "other" : name.toLowerCase().replace("_", " "));
      item.style.color = color;
      return item;
    })));
  const procRows = stats.procs.map((p) => el("tr", { dataset: { proc: p.proc } },
    el("td", {}, el("a", { href: `/procs/${enc(p.proc)}` }, p.proc)),
    el("td", {}, p.runs),
    el("td", {}, p.success_rate === null || p.success_rate === undefined ? "—" : `${Math.round(p.success_rate * 100)} %`),
    el("td", {}, formatDuration(p.p50_seconds)),
    el("td", {}, formatDuration(p.p95_seconds))));
  const procTable = el("section", { class: "panel" }, el("h2", {}, "Per proc"),
    el("div", { class: "table-wrap" }, el("table", { id: "proc-stats" },
      el("thead", {}, el("tr", {}, ["Proc", "Runs", "Success", "p50 duration", "p95 duration"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, procRows.length ? procRows : el("tr", {}, el("td", { colspan: 5, class: "muted" }, `No finished runs in the last ${span}.`))))));
  const now = el("section", { class: "panel", id: "running-now" }, el("h2", {}, "Running now"),
    running.length ? runsTable(running, "running-table") : el("p", { class: "muted" }, "Nothing is running."));
  return [numbers, chartPanel, procTable, now];
}

function barChart(buckets, bucket) {
  const width = Math.max(320, Math.min(900, window.innerWidth - 48));
  const height = width < 600 ? 200 : 220;
  const pad = { left: 36, right: 8, top: 10, bottom: 26 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0));
  const max = Math.max(1, ...totals);
  const step = max <= 5 ? 1 : Math.ceil(max / 4 / Math.pow(10, Math.floor(Math.log10(max / 4)))) * Math.pow(10, Math.floor(Math.log10(max / 4)));
  const top = Math.ceil(max / step) * step;
  const y = (n) => pad.top + plotH - (n / top) * plotH;
  const barW = plotW / Math.max(1, buckets.length);
  const chart = svg("svg", {
    class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Runs per ${bucket}: ${totals.reduce((a, n) => a + n, 0)} finished runs in ${buckets.length} ${bucket}s`,
  });
  for (let v = 0; v <= top; v += step) {
    chart.append(svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  const labelEvery = Math.max(1, Math.ceil(buckets.length / Math.max(2, Math.floor(plotW / 75))));
  buckets.forEach((b, i) => {
    const x = pad.left + i * barW;
    let base = 0;
    for (const [name, color] of CHART_SERIES) {
      const n = name === "OTHER"
        ? Object.entries(b.counts).filter(([s]) => !CHART_SERIES.some(([k]) => k === s)).reduce((a, [, c]) => a + c, 0)
        : b.counts[name] || 0;
      if (!n) continue;
      const rect = svg("rect", { x: x + 1, width: Math.max(1, barW - 2), y: y(base + n), height: y(base) - y(base + n), fill: color },
        svg("title", {}, `${formatTime(b.start)}: ${n} ${name.toLowerCase()}`));
      chart.append(rect);
      base += n;
    }
    if (i % labelEvery === 0) {
      const date = new Date(b.start);
      const label = bucket === "day"
        ? date.toLocaleDateString(undefined, { month: "short", day: "numeric" })
        : date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
      chart.append(svg("text", { x: x + barW / 2, y: height - 8, "text-anchor": "middle" }, label));
    }
  });
  return chart;
}

function runsTable(runs, id, empty = "No runs.") {
  return el("div", { class: "table-wrap" }, el("table", { id },
    el("thead", {}, el("tr", {}, ["Run", "Proc", "Status", "User", "Created", "Duration"].map((h, i) =>
      el("th", { scope: "col", class: i === 3 || i === 5 ? "wide" : null }, h)))),
    el("tbody", {}, runs.length ? runs.map(runRow) : el("tr", {}, el("td", { colspan: 6, class: "muted" }, empty)))));
}

function runRow(run) {
  return el("tr", { dataset: { name: run.name } },
    el("td", { class: "name mono" }, el("a", { href: `/runs/${enc(run.name)}` }, run.name)),
    el("td", { class: "proc" }, run.proc_name),
    el("td", { class: "status-cell" }, statusBadge(run.status, { class: "status" })),
    el("td", { class: "user wide" }, run.user_email),
    el("td", { class: "created" }, formatTime(run.created_at)),
    el("td", { class: "duration wide" }, formatDuration(runDuration(run))));
}

// ---------------------------------------------------------------- procs

async function listProcs() {
  return (await api("GET", "/jobs/metadata")) || [];
}

async function procsPage(view, ctx) {
  const procs = await listProcs();
  const query = new URLSearchParams(location.search).get("q") || "";
  const search = el("input", { id: "proc-search", type: "search", placeholder: "Search by name, description, author or group", value: query, "aria-label": "Search procs" });
  const list = el("ul", { id: "procs", class: "plain" });
  const count = el("p", { class: "muted", "aria-live": "polite" });
  const show = () => {
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = procs.filter((p) => {
      const text = [p.name, p.description, p.author, p.image_name, ...(p.authorized_groups || [])].join(" ").toLowerCase();
      return words.every((w) => text.includes(w));
    });
    list.replaceChildren(...shown.map((p) => el("li", { dataset: { proc: p.name } },
      el("a", { href: `/procs/${enc(p.name)}` }, p.name), " ",
      el("span", { class: "muted" }, p.description || ""),
      el("div", { class: "muted" }, `${p.image_name}${p.author ? ` · by ${p.author}` : ""}${p.authorized_groups?.length ? ` · groups: ${p.authorized_groups.join(", ")}` : ""}`))));
    count.textContent = `${shown.length} of ${procs.length} procs`;
    const url = new URL(location.href);
    if (search.value) url.searchParams.set("q", search.value); else url.searchParams.delete("q");
    if (ctx.current) history.replaceState(null, "", url.pathname + url.search);
  };
  search.addEventListener("input", show);
  view.append(el("h1", {}, "Procs"), el("div", { class: "panel" }, search, count, list));
  show();
}

async function procPage(view, ctx, name) {
  const proc = await api("GET", `/jobs/metadata/${enc(name)}`);
  let setSecrets = null;
  try {
    setSecrets = new Set((await api("GET", `/jobs/secrets/${enc(name)}`)).secret_names);
  } catch (e) {
    if (e.status !== 403) throw e;
  }
  const args = proc.env_vars?.args || [];
  const secrets = proc.env_vars?.secrets || [];
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "Description"), el("dd", { id: "proc-description" }, proc.description || "—"),
    el("dt", {}, "Image"), el("dd", { id: "proc-image", class: "mono" }, proc.image_name),
    el("dt", {}, "Author"), el("dd", { id: "proc-author" }, [proc.author, proc.contributors].filter(Boolean).join("; ") || "—"),
    el("dt", {}, "Groups"), el("dd", { id: "proc-groups" }, proc.authorized_groups?.length ? proc.authorized_groups.join(", ") : "everyone"),
    procLimits(proc));
  const pod = podFacts(proc.pod);
  const argList = el("ul", { id: "proc-args" }, args.length ? args.map((a) =>
    el("li", { dataset: { arg: a.name } }, el("code", {}, a.name), a.description ? ` — ${a.description}` : "")) : el("li", { class: "muted" }, "none"));
  const secretList = el("ul", { id: "proc-secrets" }, secrets.length ? secrets.map((s) =>
    el("li", { dataset: { secret: s.name }, class: setSecrets ? (setSecrets.has(s.name) ? "set" : "missing") : null },
      el("code", {}, s.name), s.description ? ` — ${s.description}` : "")) : el("li", { class: "muted" }, "none"));

  const formError = el("p", { id: "run-form-error", class: "form-error", role: "alert" });
  const unset = setSecrets ? secrets.filter((s) => !setSecrets.has(s.name)).map((s) => s.name) : [];
  const warning = unset.length ? el("p", { class: "warning" },
    `Its runs stop at REQUIREMENT_NOT_MET until an admin sets ${unset.join(", ")} (POST /jobs/secrets).`) : null;
  const inputs = new Map();
  const fields = args.map((a) => {
    const input = el("input", { id: `arg-${a.name}`, name: a.name, autocomplete: "off", "aria-describedby": `arg-${a.name}-error`, required: true });
    inputs.set(a.name, input);
    return el("div", {},
      el("label", { for: `arg-${a.name}` }, a.name, " ", el("span", { class: "hint" }, a.description || "")),
      input, el("p", { id: `arg-${a.name}-error`, class: "field-error" }));
  });
  const cli = el("code", { id: "cli-line", class: "copy", tabindex: "0", "aria-label": "proctor command line" });
  const curl = el("code", { id: "curl-line", class: "copy", tabindex: "0", "aria-label": "curl command line" });
  const values = () => Object.fromEntries([...inputs].map(([k, input]) => [k, input.value]));
  const describe = () => {
    const given = values();
    cli.textContent = ["proctor", "execute", proc.name, ...Object.entries(given).map(([k, v]) => shellWord(`${k}=${v}`))].join(" ");
    const body = JSON.stringify({ name: proc.name, args: given });
    const auth = session.auth === "on" ? ` -H "Email-Id: ${session.user?.email || "you@example.com"}" -H "Access-Token: $PROCTOR_TOKEN"` : "";
    curl.textContent = `curl -X POST ${location.origin}/jobs/execute -H 'Content-Type: application/json'${auth} -d ${shellWord(body)}`;
  };
  const fieldError = (arg, message) => {
    const input = inputs.get(arg);
    const error = $(`#arg-${CSS.escape(arg)}-error`, form);
    if (input) input.setAttribute("aria-invalid", message ? "true" : "false");
    if (error) error.textContent = message || "";
  };
  const form = el("form", { id: "run-form", novalidate: true }, warning, fields, formError,
    el("p", { class: "actions" }, el("button", { id: "run", type: "submit", class: "primary" }, "Run")),
    el("p", { class: "muted" }, "The same from a terminal:"), cli, el("p", { class: "muted" }, "Or over HTTP:"), curl);
  for (const input of inputs.values()) input.addEventListener("input", () => { fieldError(input.name, ""); describe(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.textContent = "";
    const given = values();
    const missing = Object.entries(given).filter(([, v]) => v === "").map(([k]) => k);
    for (const arg of inputs.keys()) fieldError(arg, missing.includes(arg) ? `${arg} is required` : "");
    if (missing.length) {
      inputs.get(missing[0]).focus();
      return;
    }
    const button = $("#run", form);
    button.disabled = true;
    try {
      const run = await api("POST", "/jobs/execute", { name: proc.name, args: given });
      navigate(`/runs/${enc(run.name)}`);
    } catch (e) {
      showArgErrors(e, inputs, fieldError, formError);
    } finally {
      button.disabled = false;
    }
  });
  describe();
  view.append(el("h1", {}, proc.name),
    el("div", { class: "grid" },
      el("section", { class: "panel" }, facts, el("h2", {}, "Args"), argList, el("h2", {}, "Secrets"), secretList,
        pod && el("h2", { id: "proc-pod-title" }, "Pod options"), pod),
      el("section", { class: "panel", "aria-labelledby": "run-title" }, el("h2", { id: "run-title" }, "Run"), form)));
}

/** The facts of a proc's own limits, each only when it sets it. */
function procLimits(proc) {
  const days = (n, zero) => (n === 0 ? zero : `${n} day${n === 1 ? "" : "s"}`);
  const facts = [];
  if (proc.max_concurrent_runs != null) {
    facts.push(el("dt", {}, "Concurrency"), el("dd", { id: "proc-max-concurrent", dataset: { value: proc.max_concurrent_runs } },
      `At most ${proc.max_concurrent_runs} run${proc.max_concurrent_runs === 1 ? "" : "s"} at once; more wait as QUEUED`));
  }
  if (proc.execution_retention_days != null) {
    facts.push(el("dt", {}, "Runs kept"), el("dd", { id: "proc-execution-retention", dataset: { value: proc.execution_retention_days } },
      days(proc.execution_retention_days, "for ever")));
  }
  if (proc.log_retention_days != null) {
    facts.push(el("dt", {}, "Log lines kept"), el("dd", { id: "proc-log-retention", dataset: { value: proc.log_retention_days } },
      days(proc.log_retention_days, "as long as the run")));
  }
  return facts;
}

/** A proc's Kubernetes pod options as a definition list (null when it has none). */
function podFacts(pod) {
  if (!pod || typeof pod !== "object") return null;
  const pairs = (map) => Object.entries(map || {}).map(([k, v]) => `${k}=${v}`);
  const rows = [];
  const row = (key, label, lines) => {
    if (lines.length) rows.push(el("dt", {}, label), el("dd", { class: "mono lines", dataset: { pod: key } }, lines.join("\n")));
  };
  const resources = pod.resources || {};
  row("requests", "Requests", pairs(resources.requests));
  row("limits", "Limits", pairs(resources.limits));
  row("nodeSelector", "Node selector", pairs(pod.nodeSelector));
  row("tolerations", "Tolerations", (pod.tolerations || []).map((t) =>
    `${t.key ?? "*"}${t.operator === "Exists" ? " exists" : `=${t.value ?? ""}`}${t.effect ? `:${t.effect}` : ""}`
    + `${t.tolerationSeconds != null ? ` for ${t.tolerationSeconds} s` : ""}`));
  row("serviceAccountName", "Service account", pod.serviceAccountName ? [pod.serviceAccountName] : []);
  row("imagePullSecrets", "Image pull secrets", (pod.imagePullSecrets || []).map((r) => r.name));
  row("labels", "Labels", pairs(pod.labels));
  return rows.length ? el("dl", { id: "proc-pod", class: "facts" }, rows) : null;
}

/** Puts the server's 422 (or 400) about args next to the fields it names. */
function showArgErrors(error, inputs, fieldError, formError) {
  const detail = error.detail || {};
  let placed = false;
  for (const arg of detail.missing || []) {
    if (inputs.has(arg)) { fieldError(arg, `${arg} is required (${error.message})`); placed = true; }
  }
  for (const arg of inputs.keys()) {
    if (new RegExp(`\\barg ${arg}\\b`).test(error.message)) { fieldError(arg, error.message); placed = true; }
  }
  if (!placed) formError.textContent = error.message;
}

// ---------------------------------------------------------------- a run

async function runPage(view, ctx, name) {
  let run = await api("GET", `/api/v1/executions/${enc(name)}`);
  const status = el("span", { id: "run-status", class: `status s-${run.status}`, "aria-live": "polite" }, run.status);
  const cell = (id) => el("dd", { id });
  const facts = {
    exit: cell("run-exit-code"), reason: cell("run-reason"), attempts: cell("run-attempts"), user: cell("run-user"),
    schedule: cell("run-schedule"), created: cell("run-created"), started: cell("run-started"), finished: cell("run-finished"),
    duration: cell("run-duration"),
  };
  const args = el("dd", { id: "run-args", class: "mono" });
  const cancel = el("button", { id: "cancel", type: "button", class: "danger" }, "Cancel");
  const again = el("button", { id: "run-again", type: "button" }, "Run again with the same args");
  const actionError = el("p", { class: "form-error", role: "alert" });
  const show = () => {
    // A queued run waits for a slot of its proc's max_concurrent_runs; it can be cancelled.
    status.textContent = run.status === "QUEUED" && run.queue_position != null
      ? `QUEUED (${run.queue_position} ahead)` : run.status;
    status.className = `status s-${run.status}`;
    facts.exit.textContent = run.exit_code ?? "—";
    facts.reason.textContent = run.reason || "—";
    facts.attempts.textContent = run.attempts;
    facts.user.textContent = run.user_email;
    facts.schedule.replaceChildren(run.schedule_id ? el("a", { href: `/schedules/${enc(run.schedule_id)}` }, run.schedule_id) : "—");
    facts.created.textContent = formatTime(run.created_at);
    facts.started.textContent = formatTime(run.started_at);
    facts.finished.textContent = formatTime(run.finished_at);
    facts.duration.textContent = formatDuration(runDuration(run));
    const pairs = Object.entries(run.args || {});
    args.textContent = pairs.length ? pairs.map(([k, v]) => `${k}=${v}`).join("\n") : "none";
    cancel.disabled = FINAL.has(run.status);
  };
  show();
  const refresh = async () => {
    try {
      run = await api("GET", `/api/v1/executions/${enc(name)}`);
      show();
    } catch (e) {
      console.warn(e.message);
    }
  };
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    actionError.textContent = "";
    try {
      run = await api("POST", `/api/v1/executions/${enc(name)}/cancel`);
      show();
    } catch (e) {
      actionError.textContent = e.message;
      cancel.disabled = FINAL.has(run.status);
    }
  });
  again.addEventListener("click", async () => {
    again.disabled = true;
    actionError.textContent = "";
    try {
      const next = await api("POST", "/jobs/execute", { name: run.proc_name, args: run.args || {} });
      navigate(`/runs/${enc(next.name)}`);
    } catch (e) {
      actionError.textContent = e.message;
      again.disabled = false;
    }
  });
  const log = new LogView(name, !FINAL.has(run.status), (final) => {
    if (final) { run.status = final; show(); }
    refresh();
  });
  ctx.onLeave(() => log.close());
  ctx.every(1000, () => { if (!FINAL.has(run.status)) refresh(); });
  const notifications = new NotificationsView(name, () => run);
  ctx.every(1000, () => { if (notifications.wanted()) notifications.refresh(); });
  view.append(
    el("div", { class: "actions" }, el("h1", {}, run.name), status),
    el("p", { class: "muted" }, "Proc ", el("a", { href: `/procs/${enc(run.proc_name)}` }, run.proc_name), ` · image ${run.image} · ${run.executor} executor`),
    el("div", { class: "grid" },
      el("section", { class: "panel" }, el("dl", { class: "facts" },
        el("dt", {}, "Exit code"), facts.exit, el("dt", {}, "Reason"), facts.reason,
        el("dt", {}, "Attempts"), facts.attempts, el("dt", {}, "User"), facts.user,
        el("dt", {}, "Schedule"), facts.schedule)),
      el("section", { class: "panel" }, el("dl", { class: "facts" },
        el("dt", {}, "Created"), facts.created, el("dt", {}, "Started"), facts.started,
        el("dt", {}, "Finished"), facts.finished, el("dt", {}, "Duration"), facts.duration,
        el("dt", {}, "Args"), args))),
    el("p", { class: "actions" }, cancel, again), actionError, notifications.root);
  await notifications.refresh();
  if (run.logs_purged_at) {
    // Retention removed the lines; the record is kept a while longer.
    view.append(el("section", { class: "panel", "aria-label": "Log" },
      el("p", { class: "muted" }, `The log lines of this run were removed by retention on ${run.logs_purged_at.slice(0, 10)}.`)));
    return;
  }
  view.append(el("section", { class: "panel", "aria-label": "Log" }, log.root));
  await log.start();
}

/**
 * A run's notify targets (masked by the server) and the delivery log of its end
 * notifications. It is read while the run goes on and after it ends until every
 * delivery its targets call for is there and none is pending.
 */
class NotificationsView {
  static PATIENCE = 60;

  constructor(name, current) {
    this.name = name;
    this.current = current;
    this.deliveries = [];
    this.checksAfterEnd = 0;
    this.busy = false;
    this.targets = el("ul", { id: "run-notify" });
    this.body = el("tbody");
    this.root = el("section", { class: "panel", id: "run-notifications", "aria-labelledby": "run-notifications-title", hidden: true },
      el("h2", { id: "run-notifications-title" }, "Notifications"), this.targets,
      el("div", { class: "table-wrap" }, el("table", { id: "run-deliveries" },
        el("caption", { class: "muted" }, "Deliveries"),
        el("thead", {}, el("tr", {}, ["Kind", "Target", "Status", "Attempts", "Last answer", "Created", "Updated", "Delivered"].map((h, i) =>
          el("th", { scope: "col", class: i >= 5 && i <= 6 ? "wide" : null }, h)))),
        this.body)));
    this.show();
  }

  /** The targets whose `on` matches the run's final status. */
  expected(run) {
    const ok = run.status === "SUCCEEDED";
    return (run.notify || []).filter((t) => t.on === "always" || !t.on || (t.on === "success") === ok).length;
  }

  wanted() {
    const run = this.current();
    if (!run.notify?.length && !this.deliveries.length) return false;
    if (!FINAL.has(run.status)) return true;
    if (this.deliveries.some((d) => d.status === "pending")) return true;
    // The deliveries appear shortly after the run ends; wait a while for them.
    return this.deliveries.length < this.expected(run) && this.checksAfterEnd < NotificationsView.PATIENCE;
  }

  async refresh() {
    const run = this.current();
    if (this.busy) return;
    this.busy = true;
    try {
      this.deliveries = (await api("GET", `/api/v1/executions/${enc(this.name)}/notifications`)) || [];
      if (FINAL.has(run.status)) this.checksAfterEnd += 1;
      this.show();
    } catch (e) {
      console.warn(e.message);
    } finally {
      this.busy = false;
    }
  }

  show() {
    const run = this.current();
    const targets = run.notify || [];
    this.root.hidden = !targets.length && !this.deliveries.length;
    this.targets.replaceChildren(...targets.map((t, i) => el("li", { dataset: { index: i, kind: t.kind } },
      el("span", { class: "kind" }, t.kind), " ", el("code", { class: "target" }, t.url), " ",
      el("span", { class: "muted on" }, `on ${t.on || "always"}`))));
    this.body.replaceChildren(...(this.deliveries.length ? this.deliveries.map((d) => el("tr", { dataset: { id: d.id, status: d.status } },
      el("td", { class: "kind" }, d.kind),
      el("td", { class: "target mono" }, d.target),
      el("td", { class: "delivery-status" }, el("span", { class: `delivery d-${d.status}` }, d.status)),
      el("td", { class: "attempts" }, d.attempts),
      el("td", { class: "last" }, [d.last_status_code != null ? `HTTP ${d.last_status_code}` : null, d.last_error].filter(Boolean).join(" · ") || "—"),
      el("td", { class: "created wide" }, formatTime(d.created_at)),
      el("td", { class: "updated wide" }, formatTime(d.updated_at)),
      el("td", { class: "delivered" }, formatTime(d.delivered_at))))
      : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, FINAL.has(run.status) ? "None yet." : "Sent when the run ends."))]));
  }
}

/**
 * The log of one run. Lines are numbered from 1 without gaps, so line n sits at
 * n × row height; only the rows on screen exist in the page, and only pages of lines
 * near what was looked at stay in memory (a run of a million lines stays light). A live
 * run is followed over the websocket from the last stored line on (`after=`), and
 * reconnects from where it was if the connection drops.
 */
class LogView {
  static PAGE = 1000;
  static KEEP_PAGES = 150;
  static SCAN = 100000;
  static MAX_PX = 8000000;

  constructor(name, live, onEnd) {
    this.name = name;
    this.live = live;
    this.onEnd = onEnd;
    this.total = 0;
    this.pages = new Map();
    this.loading = new Set();
    this.tailPage = 0;
    this.follow = live;
    this.closed = false;
    this.socket = null;
    this.frame = 0;
    this.query = "";
    this.matches = [];
    this.searchId = 0;
    this.scanned = 0;
    this.programmatic = false;

    this.count = el("span", { id: "log-count", class: "muted", "aria-live": "off" }, "…");
    this.followButton = el("button", { id: "log-follow", type: "button", "aria-pressed": String(this.follow) }, "Follow");
    this.searchInput = el("input", { id: "log-search", type: "search", placeholder: "Search the log", "aria-label": "Search the log" });
    this.searchCount = el("span", { id: "log-search-count", class: "muted", "aria-live": "polite" });
    const prev = el("button", { type: "button", "aria-label": "Previous match" }, "↑");
    const next = el("button", { type: "button", "aria-label": "Next match" }, "↓");
    const top = el("button", { id: "log-top", type: "button" }, "Top");
    const end = el("button", { id: "log-end", type: "button" }, "End");
    const download = el("a", { id: "log-download", class: "button", href: `/api/v1/executions/${enc(name)}/logs?download=true`, download: `${name}.log` }, "Download");
    this.spacer = el("div", { id: "log-spacer" });
    this.rows = el("div", { id: "log", role: "log", "aria-label": `Log of ${name}` });
    this.viewport = el("div", { id: "log-viewport", tabindex: "0", "aria-label": "Log lines" }, this.spacer, this.rows);
    this.root = el("div", {},
      el("div", { class: "log-bar" }, el("h2", {}, "Log"), this.count, this.followButton, top, end, this.searchInput, prev, next, this.searchCount, download),
      this.viewport);

    this.followButton.addEventListener("click", () => this.setFollow(!this.follow));
    top.addEventListener("click", () => { this.setFollow(false); this.scrollToLine(0); });
    end.addEventListener("click", () => this.toEnd());
    prev.addEventListener("click", () => this.jumpToMatch(-1));
    next.addEventListener("click", () => this.jumpToMatch(1));
    this.searchInput.addEventListener("input", debounce(() => this.search(this.searchInput.value), 250));
    this.searchInput.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this.jumpToMatch(e.shiftKey ? -1 : 1); }
    });
    this.viewport.addEventListener("scroll", () => {
      if (this.programmatic) { this.programmatic = false; } else if (this.follow && !this.atEnd()) { this.setFollow(false); }
      this.schedule();
    }, { passive: true });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.viewport);
  }

  get rowHeight() {
    if (!this._rowHeight) this._rowHeight = parseFloat(getComputedStyle(this.viewport).getPropertyValue("--row")) || 18;
    return this._rowHeight;
  }

  async start() {
    await this.fetchPage(0, true);
    this.tailPage = Math.max(0, Math.floor((this.total - 1) / LogView.PAGE));
    if (this.live) {
      if (this.tailPage > 0) await this.fetchPage(this.tailPage);
      this.connect();
    }
    this.layout();
    if (this.follow) this.toEnd();
    this.schedule();
  }

  close() {
    this.closed = true;
    this.searchId++;
    this.resize.disconnect();
    if (this.socket) this.socket.close(1000);
    cancelAnimationFrame(this.frame);
  }

  /** Reads one page of stored lines; the first read also learns how many lines there are. */
  async fetchPage(page, first = false) {
    if (this.loading.has(page) || this.closed) return;
    this.loading.add(page);
    try {
      const from = page * LogView.PAGE;
      const response = await fetch(`/api/v1/executions/${enc(this.name)}/logs?since_seq=${from}&limit=${LogView.PAGE}`, { credentials: "same-origin" });
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
      const stored = Number(response.headers.get("Proctor-Stored-Lines") || 0);
      const text = await response.text();
      const lines = text === "" ? [] : text.slice(0, -1).split("\n");
      if (first) this.total = Math.max(this.total, stored);
      // A page not yet complete in the store (lines seen live, still being written) is read again later.
      const expected = Math.min(LogView.PAGE, Math.max(0, this.total - from));
      if (lines.length < expected && page !== this.tailPage) {
        setTimeout(() => { this.loading.delete(page); this.schedule(); }, 300);
        return;
      }
      if (!this.pages.has(page) || this.pages.get(page).length < lines.length) this.keep(page, lines);
      this.loading.delete(page);
      this.schedule();
    } catch (e) {
      this.loading.delete(page);
      if (first) throw e;
      console.warn(`log page ${page}: ${e.message}`);
    }
  }

  keep(page, lines) {
    this.pages.delete(page);
    this.pages.set(page, lines);
    while (this.pages.size > LogView.KEEP_PAGES) {
      const oldest = [...this.pages.keys()].find((p) => p !== this.tailPage);
      if (oldest === undefined) break;
      this.pages.delete(oldest);
    }
  }

  line(index) {
    const page = this.pages.get(Math.floor(index / LogView.PAGE));
    return page ? page[index % LogView.PAGE] : undefined;
  }

  connect() {
    if (this.closed) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/jobs/logs?job_name=${enc(this.name)}&after=${this.total}`);
    this.socket = socket;
    socket.addEventListener("message", (event) => {
      this.retry = 0;
      this.append(String(event.data));
    });
    socket.addEventListener("close", (event) => {
      if (this.closed || this.socket !== socket) return;
      const final = event.code === 1000 && FINAL.has(event.reason) ? event.reason : null;
      if (final) {
        this.live = false;
        this.onEnd(final);
        return;
      }
      // Dropped (a restart, a replica going away, the network): carry on from the
      // last line held, so nothing is missed and nothing is shown twice.
      this.onEnd(null);
      this.retry = Math.min(5000, (this.retry || 250) * 2);
      setTimeout(() => this.connect(), this.retry);
    });
  }

  append(text) {
    const index = this.total;
    const page = Math.floor(index / LogView.PAGE);
    if (page !== this.tailPage || !this.pages.has(page)) {
      this.tailPage = page;
      if (!this.pages.has(page)) this.keep(page, []);
    }
    const lines = this.pages.get(page);
    if (lines.length === index % LogView.PAGE) lines.push(text);
    this.total = index + 1;
    if (this.query && text.toLowerCase().includes(this.query)) this.matches.push(index);
    this.schedule();
  }

  layout() {
    const virtual = this.total * this.rowHeight;
    this.spacer.style.height = `${Math.min(virtual, LogView.MAX_PX)}px`;
    this.count.textContent = `${this.total.toLocaleString()} line${this.total === 1 ? "" : "s"}`;
  }

  /** Virtual pixels per real scrolled pixel (above MAX_PX of lines the scroll bar is scaled). */
  scale() {
    const virtual = this.total * this.rowHeight;
    const shown = this.viewport.clientHeight;
    if (virtual <= LogView.MAX_PX) return 1;
    return (virtual - shown) / (LogView.MAX_PX - shown);
  }

  atEnd() {
    const v = this.viewport;
    return v.scrollTop + v.clientHeight >= v.scrollHeight - this.rowHeight;
  }

  setFollow(on) {
    this.follow = on;
    this.followButton.setAttribute("aria-pressed", String(on));
    if (on) this.toEnd();
  }

  toEnd() {
    this.layout();
    this.programmatic = true;
    this.viewport.scrollTop = this.viewport.scrollHeight;
    if (this.live && !this.follow) this.setFollow(true);
    this.schedule();
  }

  scrollToLine(index) {
    this.layout();
    const target = Math.max(0, index * this.rowHeight - this.viewport.clientHeight / 3);
    this.programmatic = true;
    this.viewport.scrollTop = target / this.scale();
    this.schedule();
  }

  schedule() {
    if (!this.frame && !this.closed) {
      this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
    }
  }

  draw() {
    this.layout();
    if (this.follow && !this.atEnd()) {
      this.programmatic = true;
      this.viewport.scrollTop = this.viewport.scrollHeight;
    }
    const h = this.rowHeight;
    const shown = this.viewport.clientHeight;
    const top = this.viewport.scrollTop * this.scale();
    const first = Math.max(0, Math.floor(top / h));
    const last = Math.min(this.total, first + Math.ceil(shown / h) + 1);
    this.rows.style.transform = `translateY(${this.viewport.scrollTop - (top - first * h)}px)`;
    const wanted = last - first;
    while (this.rows.children.length < wanted) {
      this.rows.append(el("div", { class: "log-line" }, el("span", { class: "ln" }), el("span", { class: "tx" })));
    }
    while (this.rows.children.length > wanted) this.rows.lastChild.remove();
    for (let i = first; i < last; i++) {
      const row = this.rows.children[i - first];
      const text = this.line(i);
      row.firstChild.textContent = String(i + 1);
      row.classList.toggle("pending", text === undefined);
      if (text === undefined) {
        row.lastChild.textContent = "…";
        this.fetchPage(Math.floor(i / LogView.PAGE));
      } else {
        this.paint(row.lastChild, text);
        row.classList.toggle("hit", this.query !== "" && text.toLowerCase().includes(this.query));
      }
    }
  }

  /** The line's text, with what is searched for marked. */
  paint(cell, text) {
    if (!this.query || !text.toLowerCase().includes(this.query)) {
      if (cell.childElementCount || cell.textContent !== text) cell.textContent = text;
      return;
    }
    const lower = text.toLowerCase();
    const parts = [];
    let at = 0;
    for (let i = lower.indexOf(this.query); i !== -1; i = lower.indexOf(this.query, i + this.query.length)) {
      parts.push(text.slice(at, i), el("mark", {}, text.slice(i, i + this.query.length)));
      at = i + this.query.length;
    }
    parts.push(text.slice(at));
    cell.replaceChildren(...parts);
  }

  /** Finds every line holding `query` by reading the stored log in large pages (none kept). */
  async search(query) {
    const id = ++this.searchId;
    this.query = query.trim().toLowerCase();
    this.matches = [];
    this.scanned = 0;
    this.schedule();
    if (!this.query) { this.searchCount.textContent = ""; return; }
    const upto = this.total;
    for (let from = 0; from < upto; from += LogView.SCAN) {
      this.searchCount.textContent = `searching… ${Math.round((from / Math.max(1, upto)) * 100)} %`;
      const response = await fetch(`/api/v1/executions/${enc(this.name)}/logs?since_seq=${from}&limit=${Math.min(LogView.SCAN, upto - from)}`, { credentials: "same-origin" });
      if (id !== this.searchId) return;
      if (!response.ok) { this.searchCount.textContent = "the search stopped: the log could not be read"; return; }
      const text = await response.text();
      if (id !== this.searchId) return;
      let index = from;
      let start = 0;
      const found = [];
      while (start < text.length) {
        let stop = text.indexOf("\n", start);
        if (stop === -1) stop = text.length;
        if (text.slice(start, stop).toLowerCase().includes(this.query)) found.push(index);
        index++;
        start = stop + 1;
      }
      this.matches.push(...found);
      this.scanned = index;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    if (id !== this.searchId) return;
    // Lines that arrived live while the stored log was read were matched on arrival.
    this.matches = [...new Set(this.matches)].sort((a, b) => a - b);
    this.searchCount.textContent = `${this.matches.length.toLocaleString()} match${this.matches.length === 1 ? "" : "es"}`;
    if (this.matches.length) this.jumpToMatch(1);
    this.schedule();
  }

  jumpToMatch(direction) {
    if (!this.matches.length) return;
    const h = this.rowHeight;
    const here = Math.floor((this.viewport.scrollTop * this.scale() + this.viewport.clientHeight / 3) / h);
    let target;
    if (direction > 0) target = this.matches.find((m) => m > here) ?? this.matches[0];
    else target = [...this.matches].reverse().find((m) => m < here) ?? this.matches[this.matches.length - 1];
    this.setFollow(false);
    this.scrollToLine(target);
    const position = this.matches.indexOf(target) + 1;
    this.searchCount.textContent = `${position.toLocaleString()} of ${this.matches.length.toLocaleString()} matches`;
  }
}

// ---------------------------------------------------------------- history

async function historyPage(view, ctx) {
  const params = new URLSearchParams(location.search);
  const procs = await listProcs().catch(() => []);
  const toLocalInput = (iso) => {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };
  const proc = el("input", { id: "filter-proc", name: "proc", list: "proc-names", value: params.get("proc") || "", autocomplete: "off" });
  const status = el("select", { id: "filter-status", name: "status" }, el("option", { value: "" }, "any"),
    STATUSES.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)));
  const user = el("input", { id: "filter-user", name: "user", type: "email", value: params.get("user") || "" });
  const since = el("input", { id: "filter-since", name: "since", type: "datetime-local", value: toLocalInput(params.get("since")) });
  const until = el("input", { id: "filter-until", name: "until", type: "datetime-local", value: toLocalInput(params.get("until")) });
  const field = (label, input) => el("div", {}, el("label", { for: input.id }, label), input);
  const form = el("form", { id: "filters", class: "filters panel" },
    field("Proc", proc), field("Status", status), field("User", user), field("Since", since), field("Until", until),
    el("datalist", { id: "proc-names" }, procs.map((p) => el("option", { value: p.name }))),
    el("button", { type: "submit", class: "primary" }, "Filter"),
    el("button", { type: "reset" }, "Clear"));
  const error = el("p", { class: "form-error", role: "alert" });
  const body = el("tbody");
  const table = el("div", { class: "table-wrap" }, el("table", { id: "runs" },
    el("thead", {}, el("tr", {}, ["Run", "Proc", "Status", "User", "Created", "Duration"].map((h, i) =>
      el("th", { scope: "col", class: i === 3 || i === 5 ? "wide" : null }, h)))), body));
  const prev = el("button", { id: "prev-page", type: "button" }, "Newer");
  const next = el("button", { id: "next-page", type: "button" }, "Older");
  const where = el("span", { class: "muted" });
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const limit = 25;
  let known = null;

  const query = () => {
    const q = new URLSearchParams();
    if (proc.value.trim()) q.set("proc", proc.value.trim());
    if (status.value) q.set("status", status.value);
    if (user.value.trim()) q.set("user", user.value.trim());
    if (since.value) q.set("since", new Date(since.value).toISOString());
    if (until.value) q.set("until", new Date(until.value).toISOString());
    return q;
  };
  const load = async () => {
    const q = query();
    q.set("limit", String(limit));
    q.set("offset", String(offset));
    const page = await api("GET", `/api/v1/executions?${q}`);
    const rows = page.executions.map((run) => {
      const row = runRow(run);
      if (known && !known.has(run.name)) row.classList.add("new");
      return row;
    });
    known = new Set(page.executions.map((r) => r.name));
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No runs match."))]));
    prev.disabled = offset === 0;
    next.disabled = page.next_offset === null || page.next_offset === undefined;
    where.textContent = page.executions.length ? `runs ${offset + 1}–${offset + page.executions.length}` : "";
  };
  const go = (newOffset) => {
    const q = query();
    if (newOffset) q.set("offset", String(newOffset));
    navigate(`/runs${q.toString() ? `?${q}` : ""}`);
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); go(0); });
  form.addEventListener("reset", () => setTimeout(() => go(0), 0));
  status.addEventListener("change", () => go(0));
  prev.addEventListener("click", () => go(Math.max(0, offset - limit)));
  next.addEventListener("click", () => go(offset + limit));
  try {
    await load();
  } catch (e) {
    error.textContent = e.message;
  }
  // New runs appear by themselves on the first page.
  if (offset === 0) ctx.every(2000, () => load().then(() => { error.textContent = ""; }, (e) => { error.textContent = e.message; }));
  view.append(el("h1", {}, "Runs"), form, error, el("div", { class: "panel" }, table, el("p", { class: "actions" }, prev, next, where)));
}

// ---------------------------------------------------------------- schedules

function scheduleActions(schedule, after) {
  const error = el("span", { class: "form-error", role: "alert" });
  const act = async (action) => {
    try {
      if (action === "delete") {
        if (!confirm(`Delete the schedule of ${schedule.name} (${schedule.time})?`)) return;
        await api("DELETE", `/jobs/schedule/${enc(schedule.id)}`);
      } else {
        await api("POST", `/jobs/schedule/${enc(schedule.id)}/${action}`);
      }
      await after(action);
    } catch (e) {
      error.textContent = e.message;
    }
  };
  const toggle = schedule.enabled ? "disable" : "enable";
  return el("span", { class: "actions" },
    el("button", { type: "button", dataset: { action: toggle }, onclick: () => act(toggle), "aria-label": `${toggle} the schedule of ${schedule.name}` }, toggle === "disable" ? "Disable" : "Enable"),
    el("button", { type: "button", class: "danger", dataset: { action: "delete" }, onclick: () => act("delete"), "aria-label": `delete the schedule of ${schedule.name}` }, "Delete"),
    error);
}

async function schedulesPage(view, ctx) {
  const body = el("tbody");
  const load = async () => {
    const schedules = (await api("GET", "/jobs/schedule")) || [];
    body.replaceChildren(...(schedules.length ? schedules.map((s) => el("tr", { dataset: { id: s.id } },
      el("td", { class: "proc" }, el("a", { href: `/schedules/${enc(s.id)}` }, s.name)),
      el("td", { class: "time mono" }, `${s.time} (${s.time_zone})`),
      el("td", { class: "next" }, s.enabled ? formatInZone(s.next_fire_at, s.time_zone) : "—"),
      el("td", { class: "enabled" }, s.enabled ? "enabled" : "disabled"),
      el("td", {}, scheduleActions(s, load)))) : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No schedules yet."))]));
  };
  await load();
  const procs = await listProcs();
  view.append(el("h1", {}, "Schedules"),
    el("div", { class: "panel table-wrap" }, el("table", { id: "schedules" },
      el("thead", {}, el("tr", {}, ["Proc", "When", "Next fire", "State", ""].map((h) => el("th", { scope: "col" }, h)))), body)),
    scheduleForm(procs, load));
}

function scheduleForm(procs, after) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const proc = el("select", { id: "schedule-proc", name: "name", required: true },
    procs.map((p) => el("option", { value: p.name }, p.name)));
  const time = el("input", { id: "schedule-time", name: "time", placeholder: "0 9 * * 1-5", autocomplete: "off", class: "mono", required: true, "aria-describedby": "schedule-words" });
  const tz = el("input", { id: "schedule-tz", name: "time_zone", value: zone, list: "zones", autocomplete: "off" });
  const zones = el("datalist", { id: "zones" }, (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : ["UTC"]).map((z) => el("option", { value: z })));
  const words = el("p", { id: "schedule-words", "aria-live": "polite" });
  const nextList = el("ol", { id: "schedule-next" });
  const error = el("p", { id: "schedule-error", class: "form-error", role: "alert" });
  const argsBox = el("div");
  const email = el("input", { id: "schedule-email", name: "notification_emails", type: "text", placeholder: "who gets mail about its runs, comma-separated" });
  const tags = el("input", { id: "schedule-tags", name: "tags", value: "console" });
  const group = el("input", { id: "schedule-group", name: "group_name", value: session.user?.groups?.[0] || "default" });
  const policy = el("select", { id: "schedule-policy", name: "concurrency_policy" },
    el("option", { value: "Allow" }, "Allow: a run may start while the previous goes on"),
    el("option", { value: "Forbid" }, "Forbid: skip a fire while the previous run goes on"),
    el("option", { value: "Replace" }, "Replace: cancel the previous run, then start"));
  const save = el("button", { id: "schedule-save", type: "submit", class: "primary", disabled: true }, "Save schedule");
  const previewBox = el("div", { class: "panel preview", hidden: true }, words, el("p", { class: "muted" }, "Next fires:"), nextList);
  let previewOk = false;
  const showArgs = () => {
    const chosen = procs.find((p) => p.name === proc.value);
    argsBox.replaceChildren(...(chosen?.env_vars?.args || []).map((a) => el("div", {},
      el("label", { for: `sarg-${a.name}` }, a.name, " ", el("span", { class: "hint" }, a.description || "")),
      el("input", { id: `sarg-${a.name}`, name: a.name, autocomplete: "off", dataset: { arg: a.name } }))));
  };
  const preview = async () => {
    previewOk = false;
    save.disabled = true;
    const cron = time.value.trim();
    if (!cron) { words.textContent = ""; nextList.replaceChildren(); error.textContent = ""; previewBox.hidden = true; return; }
    try {
      const answer = await api("GET", `/api/v1/schedules/preview?time=${enc(cron)}&time_zone=${enc(tz.value.trim())}&count=5`);
      if (time.value.trim() !== cron) return;
      error.textContent = "";
      words.textContent = answer.description;
      const fmt = new Intl.DateTimeFormat(undefined, { timeZone: answer.time_zone, weekday: "short", year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
      nextList.replaceChildren(...answer.next.map((t) => el("li", {}, el("time", { datetime: t }, fmt.format(new Date(t))))));
      previewBox.hidden = false;
      previewOk = true;
      save.disabled = false;
    } catch (e) {
      words.textContent = "";
      nextList.replaceChildren();
      previewBox.hidden = true;
      error.textContent = e.message;
    }
  };
  const later = debounce(preview, 250);
  time.addEventListener("input", later);
  tz.addEventListener("input", later);
  proc.addEventListener("change", showArgs);
  showArgs();
  const form = el("form", { id: "schedule-form", class: "panel", novalidate: true },
    el("h2", {}, "New schedule"),
    el("label", { for: "schedule-proc" }, "Proc"), proc,
    el("label", { for: "schedule-time" }, "When ", el("span", { class: "hint" }, "(cron: minute hour day-of-month month day-of-week)")), time,
    el("label", { for: "schedule-tz" }, "Time zone"), tz, zones,
    previewBox,
    argsBox,
    el("label", { for: "schedule-email" }, "Mail"), email,
    el("label", { for: "schedule-tags" }, "Tags"), tags,
    el("label", { for: "schedule-group" }, "Group"), group,
    el("label", { for: "schedule-policy" }, "While a run goes on"), policy,
    error, el("p", {}, save));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!previewOk) await preview();
    if (!previewOk) return;
    save.disabled = true;
    const args = Object.fromEntries([...argsBox.querySelectorAll("input")].map((i) => [i.dataset.arg, i.value]));
    try {
      await api("POST", "/jobs/schedule", {
        name: proc.value, time: time.value.trim(), time_zone: tz.value.trim(), args,
        notification_emails: email.value, tags: tags.value, group_name: group.value, concurrency_policy: policy.value,
      });
      time.value = "";
      words.textContent = "";
      nextList.replaceChildren();
      previewBox.hidden = true;
      error.textContent = "";
      await after("create");
    } catch (e) {
      error.textContent = e.message;
      save.disabled = false;
    }
  });
  return form;
}

// "Run now" and the backfill form of a schedule's page.
function scheduleManual(schedule, refresh) {
  const path = `/jobs/schedule/${enc(schedule.id)}`;
  const runError = el("span", { id: "schedule-run-error", class: "form-error", role: "alert" });
  const runNow = el("button", { id: "schedule-run-now", type: "button", class: "primary", "aria-label": `Run now the schedule of ${schedule.name}` }, "Run now");
  runNow.addEventListener("click", async () => {
    runNow.disabled = true;
    try {
      const run = await api("POST", `${path}/run`);
      navigate(`/runs/${enc(run.name)}`);
    } catch (e) {
      runError.textContent = e.message;
      runNow.disabled = false;
    }
  });
  const from = el("input", { id: "backfill-from", name: "from", type: "datetime-local", step: 1, required: true });
  const to = el("input", { id: "backfill-to", name: "to", type: "datetime-local", step: 1, required: true });
  const error = el("p", { id: "backfill-error", class: "form-error", role: "alert" });
  const result = el("div", { id: "backfill-result", "aria-live": "polite" });
  const submit = el("button", { id: "backfill-submit", type: "submit" }, "Backfill");
  const form = el("form", { id: "backfill-form", novalidate: true },
    el("h3", {}, "Backfill"),
    el("p", { class: "hint" }, "Runs each fire of the range (from included, to excluded; your local time) that has not run, at most 1000."),
    el("label", { for: "backfill-from" }, "From"), from,
    el("label", { for: "backfill-to" }, "To"), to,
    error, el("p", {}, submit), result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const start = new Date(from.value);
    const end = new Date(to.value);
    if (!from.value || !to.value || Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) {
      error.textContent = "Give both ends of the range.";
      return;
    }
    submit.disabled = true;
    try {
      const report = await api("POST", `${path}/backfill`, { from: start.toISOString(), to: end.toISOString() });
      const started = report.started || [], skipped = report.skipped || [], failed = report.failed || [];
      result.dataset.fires = report.fires;
      result.dataset.started = started.length;
      result.dataset.skipped = skipped.length;
      result.dataset.failed = failed.length;
      result.replaceChildren(
        el("p", { id: "backfill-summary" }, `${report.fires} fires: ${started.length} started, ${skipped.length} skipped (already ran), ${failed.length} failed.`),
        started.length ? el("ul", { id: "backfill-started" }, started.map((f) => el("li", {},
          formatInZone(f.fire_at, schedule.time_zone), " ", el("a", { href: `/runs/${enc(f.execution)}`, class: "mono" }, f.execution)))) : "",
        failed.length ? el("ul", { id: "backfill-failed" }, failed.map((f) => el("li", {}, `${formatInZone(f.fire_at, schedule.time_zone)}: ${f.reason}`))) : "");
      await refresh();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  });
  return el("section", { id: "schedule-manual", class: "panel" },
    el("h2", {}, "Run by hand"),
    el("p", { class: "actions" }, runNow, el("span", { class: "hint" }, "once now, with its args, as you"), runError),
    form);
}

async function schedulePage(view, ctx, id) {
  const [schedule, history] = await Promise.all([
    api("GET", `/jobs/schedule/${enc(id)}`),
    api("GET", `/jobs/schedule/${enc(id)}/executions`),
  ]);
  let words = "";
  let upcoming = [];
  try {
    const preview = await api("GET", `/api/v1/schedules/preview?time=${enc(schedule.time)}&time_zone=${enc(schedule.time_zone)}&count=5`);
    words = preview.description;
    upcoming = preview.next;
  } catch (e) {
    words = e.message;
  }
  const args = Object.entries(schedule.args || {}).map(([k, v]) => `${k}=${v}`).join(" ") || "none";
  const firesView = (history) => {
    const fires = (history.fires || []).map((f) => el("tr", {},
      el("td", {}, formatInZone(f.fire_at, schedule.time_zone)), el("td", {}, f.outcome), el("td", { class: "mono" }, f.execution_id || "—")));
    return fires.length ? el("div", { class: "table-wrap" }, el("table", { id: "schedule-fires" },
      el("thead", {}, el("tr", {}, ["Fire time", "Outcome", "Execution id"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, fires))) : el("p", { class: "muted" }, "No fires yet.");
  };
  const runsBox = el("div", {}, runsTable(history.executions, "schedule-runs", "No runs yet."));
  const firesBox = el("div", {}, firesView(history));
  // After a backfill: the runs and fires it added.
  const refresh = async () => {
    const latest = await api("GET", `/jobs/schedule/${enc(id)}/executions`);
    runsBox.replaceChildren(runsTable(latest.executions, "schedule-runs", "No runs yet."));
    firesBox.replaceChildren(firesView(latest));
  };
  view.append(
    el("h1", {}, `Schedule of ${schedule.name}`),
    el("section", { id: "schedule-detail", class: "panel" }, el("dl", { class: "facts" },
      el("dt", {}, "Proc"), el("dd", {}, el("a", { href: `/procs/${enc(schedule.name)}` }, schedule.name)),
      el("dt", {}, "When"), el("dd", { class: "mono" }, `${schedule.time} (${schedule.time_zone})`),
      el("dt", {}, "In words"), el("dd", {}, words),
      el("dt", {}, "State"), el("dd", {}, schedule.enabled ? "enabled" : "disabled"),
      el("dt", {}, "Next fires"), el("dd", {}, schedule.enabled && upcoming.length ? el("ol", {}, upcoming.map((t) => el("li", {}, formatInZone(t, schedule.time_zone)))) : "—"),
      el("dt", {}, "Args"), el("dd", { class: "mono" }, args),
      el("dt", {}, "Policy"), el("dd", {}, schedule.concurrency_policy),
      el("dt", {}, "Mail"), el("dd", {}, schedule.notification_emails || "—"),
      el("dt", {}, "Tags"), el("dd", {}, schedule.tags),
      el("dt", {}, "Group"), el("dd", {}, schedule.group_name),
      el("dt", {}, "Created by"), el("dd", {}, schedule.user_email)),
    el("p", {}, scheduleActions(schedule, (action) => navigate(action === "delete" ? "/schedules" : location.pathname, true)))),
    scheduleManual(schedule, refresh),
    el("section", { class: "panel" }, el("h2", {}, "Runs"), runsBox),
    el("section", { class: "panel" }, el("h2", {}, "Recent fires"), firesBox));
}

render();
