// Polls GET pipeline_runs and updates the run table in place (no page reload).

const STAGES = ["scan", "merge", "convert", "version", "retrain", "register", "clean"]; // as in doodle/pipeline/stages/__init__.py
const POLL_MS = 5000;
const LABELS = { waiting: "waiting", running: "running", complete: "complete", failed: "failed", not_triggered: "not triggered" };

const table = document.getElementById("runs");
const tableWrap = table.parentElement;
const empty = document.getElementById("empty");
const banner = document.getElementById("error");
const updated = document.getElementById("updated");
const bodies = new Map(); // run_id -> <tbody>, reused so open tooltips survive a poll
let clockSkewMs = 0; // server clock minus ours, for "running for" times
let lastUpdate = null;

for (const [i, stage] of STAGES.entries()) {
  const th = document.createElement("th");
  th.scope = "col";
  th.dataset.stage = stage;
  th.innerHTML = `<span class="stage-n">Stage ${i + 1}</span><span class="stage-name"></span>`;
  th.lastChild.textContent = stage;
  document.getElementById("header-row").append(th);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function clock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function dateTime(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock(date)}`;
}

function duration(seconds, precise) {
  if (seconds < 60) return precise ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// [cell text, hover title] of one stage of one run.
function describe(stage, status, start, end, now) {
  const label = LABELS[status] ?? status;
  if (status === "running" && start) {
    const took = duration(Math.max(0, (now - start) / 1000), false);
    return [took, `${stage}: running for ${took}`];
  }
  if ((status === "complete" || status === "failed") && start && end) {
    const took = duration(Math.max(0, (end - start) / 1000), true);
    return [took, status === "complete" ? `${stage}: ${took}` : `${stage}: failed after ${took}`];
  }
  return ["", `${stage}: ${label}`];
}

function set(element, name, value) {
  if (element.getAttribute(name) !== value) element.setAttribute(name, value);
}

function setText(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

function newRunBody(runId) {
  const body = document.createElement("tbody");
  body.className = "run";
  const row = body.insertRow();
  row.dataset.runId = runId;
  row.insertCell().className = "run-id";
  row.insertCell().className = "start-time";
  for (const stage of STAGES) {
    const cell = row.insertCell();
    cell.className = "stage";
    cell.dataset.stage = stage;
    cell.innerHTML = '<span class="status"></span><span class="took"></span>';
  }
  const note = body.insertRow();
  note.className = "message";
  note.hidden = true;
  note.insertCell().colSpan = 2 + STAGES.length;
  return body;
}

function updateRunBody(body, run, now) {
  const [row, note] = body.rows;
  const started = new Date(run.start_time);
  setText(row.cells[0], `#${run.run_id}`);
  setText(row.cells[1], dateTime(started));
  set(row.cells[1], "title", started.toISOString());
  STAGES.forEach((stage, i) => {
    const n = i + 1;
    const status = run[`stage_${n}_status`];
    const start = run[`stage_${n}_start`] && new Date(run[`stage_${n}_start`]);
    const end = run[`stage_${n}_end`] && new Date(run[`stage_${n}_end`]);
    const [took, title] = describe(stage, status, start, end, now);
    const cell = row.cells[2 + i];
    set(cell, "data-status", status);
    set(cell, "title", title);
    setText(cell.firstChild, LABELS[status] ?? status);
    setText(cell.lastChild, took);
  });
  const message = run.message ?? "";
  set(row, "title", message);
  setText(note.cells[0], message);
  note.hidden = message === "";
}

function render(runs, now) {
  empty.hidden = runs.length > 0;
  tableWrap.hidden = runs.length === 0;
  const current = new Set();
  let previous = table.tHead;
  for (const run of runs) {
    let body = bodies.get(run.run_id);
    if (!body) {
      body = newRunBody(run.run_id);
      bodies.set(run.run_id, body);
    }
    updateRunBody(body, run, now);
    if (previous.nextElementSibling !== body) previous.after(body); // only moves when the order changed
    previous = body;
    current.add(run.run_id);
  }
  for (const [runId, body] of bodies) {
    if (!current.has(runId)) {
      body.remove();
      bodies.delete(runId);
    }
  }
}

function showError(detail) {
  banner.hidden = detail === null;
  table.classList.toggle("stale", detail !== null);
  updated.dataset.state = detail === null ? "ok" : "error";
  updated.textContent = lastUpdate ? `${detail === null ? "updated" : "last updated"} ${lastUpdate}` : "no data yet";
  if (detail !== null) {
    banner.textContent = `Run store unavailable: ${detail.replace(/^run store unavailable:\s*/i, "")}`;
  }
}

async function failure(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch {
    // not JSON: fall back to the status line
  }
  return `HTTP ${response.status}`;
}

function noteServerClock(response) {
  const server = Date.parse(response.headers.get("date") ?? "");
  // The Date header has whole seconds: only correct a skew larger than that.
  clockSkewMs = Number.isNaN(server) || Math.abs(server - Date.now()) < 2000 ? 0 : server - Date.now();
}

async function poll() {
  try {
    const response = await fetch("pipeline_runs", { cache: "no-store", signal: AbortSignal.timeout(POLL_MS) });
    if (!response.ok) throw new Error(await failure(response));
    const runs = await response.json();
    noteServerClock(response);
    render(runs, new Date(Date.now() + clockSkewMs));
    lastUpdate = clock(new Date());
    showError(null);
  } catch (error) {
    const detail = error instanceof TypeError || error.name === "TimeoutError" ? "the viewer did not answer" : error.message;
    showError(detail);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
