// The drawing page: pointer strokes, a live guess while drawing, and label correction.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const BACKEND = (params.get("backend") || (window.DOODLE_CONFIG || {}).backendUrl || "http://localhost:8000")
    .replace(/\/$/, "");
  const DEBOUNCE_MS = 150;
  const HEALTH_EVERY_MS = 3000;
  const REQUEST_TIMEOUT_MS = 5000;

  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("status");
  const guesses = document.getElementById("guesses");
  const form = document.getElementById("correct");
  const categoryInput = document.getElementById("category");
  const categoryList = document.getElementById("categories");
  const saveMessage = document.getElementById("save-message");

  const strokes = []; // [[{x, y}, ...], ...] in CSS pixels
  let current = null;
  let timer = null;
  let inFlight = false;
  let pending = false;
  let drawingVersion = 0; // bumps on every change, so stale answers are dropped
  let knownModelVersion = null;

  // --- backend calls -------------------------------------------------------
  async function call(path, options = {}) {
    const response = await fetch(BACKEND + path, {
      ...options,
      headers: { "Content-Type": "application/json" },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return { ok: response.ok, status: response.status, body };
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  async function checkHealth() {
    try {
      const { ok } = await call("/health");
      if (!ok) {
        setStatus("unavailable", "Model server unavailable, retrying\u2026");
        return;
      }
      const categories = await call("/categories");
      if (categories.ok) {
        setStatus("ready", `Model ready (version ${categories.body.model_version})`);
        if (categories.body.model_version !== knownModelVersion) {
          knownModelVersion = categories.body.model_version;
          showCategories(categories.body.categories);
        }
      }
    } catch {
      setStatus("unavailable", "Model server unavailable: backend unreachable, retrying\u2026");
    }
  }

  function showCategories(names) {
    categoryList.replaceChildren(...names.map((name) => new Option(name.replace(/_/g, " "), name)));
  }

  // --- drawing -----------------------------------------------------------
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    canvas.width = Math.round(rect.width * ratio);
    canvas.height = Math.round(rect.height * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    redraw();
  }

  function redraw() {
    const rect = canvas.getBoundingClientRect();
    ctx.clearRect(0, 0, rect.width, rect.height);
    ctx.strokeStyle = "#111";
    ctx.fillStyle = "#111";
    ctx.lineWidth = Math.max(3, rect.width / 90);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const stroke of strokes) {
      ctx.beginPath();
      ctx.moveTo(stroke[0].x, stroke[0].y);
      for (const p of stroke) ctx.lineTo(p.x, p.y);
      if (stroke.length === 1) ctx.lineTo(stroke[0].x + 0.01, stroke[0].y);
      ctx.stroke();
    }
  }

  function pointAt(event) {
    const rect = canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    current = [pointAt(event)];
    strokes.push(current);
    changed();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) current.push(pointAt(e));
    changed();
  });
  const endStroke = () => {
    if (!current) return;
    current = null;
    changed();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  function changed() {
    drawingVersion++;
    redraw();
    schedulePrediction();
  }

  function undo() {
    strokes.pop();
    current = null;
    changed();
  }

  function clear() {
    strokes.length = 0;
    current = null;
    saveMessage.textContent = "";
    saveMessage.dataset.state = "idle";
    changed();
  }

  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("clear").addEventListener("click", clear);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z" && event.target === document.body) {
      event.preventDefault();
      undo();
    }
  });

  // --- live guess --------------------------------------------------------
  function bitmap() {
    const raster = DoodleNormalize.render(strokes);
    return raster && DoodleNormalize.normalize(raster);
  }

  function schedulePrediction() {
    clearTimeout(timer);
    timer = setTimeout(predict, DEBOUNCE_MS);
  }

  async function predict() {
    if (inFlight) {
      pending = true; // at most one request in flight; ask again when it returns
      return;
    }
    const bytes = bitmap();
    if (!bytes) {
      showGuesses(null);
      return;
    }
    const version = drawingVersion;
    inFlight = true;
    try {
      const { ok, status: code, body } = await call("/invocations/", {
        method: "POST",
        body: JSON.stringify({ inputs: DoodleNormalize.toBase64(bytes) }),
      });
      if (ok && version === drawingVersion) showGuesses(body);
      if (!ok && code === 503) setStatus("unavailable", "Model server unavailable, retrying\u2026");
    } catch {
      setStatus("unavailable", "Model server unavailable: backend unreachable, retrying\u2026");
    } finally {
      inFlight = false;
      if (pending) {
        pending = false;
        predict();
      }
    }
  }

  function showGuesses(answer) {
    if (!answer) {
      guesses.replaceChildren(Object.assign(document.createElement("li"), { className: "hint", textContent: "Start drawing" }));
      return;
    }
    const items = answer.predictions.slice(0, 3).map((label, i) => {
      const percent = Math.round(100 * answer.probabilities[i]);
      const li = document.createElement("li");
      li.dataset.label = label;
      li.innerHTML = '<div class="label"><span></span><span></span></div><div class="bar"><span></span></div>';
      li.querySelector(".label span:first-child").textContent = label.replace(/_/g, " ");
      li.querySelector(".label span:last-child").textContent = `${percent}%`;
      li.querySelector(".bar span").style.width = `${percent}%`;
      return li;
    });
    guesses.replaceChildren(...items);
  }

  // --- correction --------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const bytes = bitmap();
    const showSave = (state, text) => {
      saveMessage.dataset.state = state;
      saveMessage.textContent = text;
    };
    if (!bytes) return showSave("error", "Draw something first.");
    const category = categoryInput.value.trim();
    if (!category) return showSave("error", "Type or pick what you drew.");
    try {
      const { ok, body } = await call("/save-image/", {
        method: "POST",
        body: JSON.stringify({ image: DoodleNormalize.toBase64(bytes), category }),
      });
      if (ok) showSave("saved", `Saved as \u201c${body.category}\u201d. Thank you! The next retraining will learn from it.`);
      else showSave("error", describeError(body));
    } catch {
      showSave("error", "Could not reach the backend. Try again in a moment.");
    }
  });

  function describeError(body) {
    if (!body || body.detail === undefined) return "The backend refused the drawing.";
    if (typeof body.detail === "string") return body.detail;
    return body.detail.map((item) => item.msg).join("; ");
  }

  // Hooks for tests and the curious: the strokes, their raster and the bytes sent.
  window.doodle = {
    strokes,
    raster: () => DoodleNormalize.render(strokes),
    bytes: () => Array.from(bitmap() || []),
    backend: BACKEND,
  };

  window.addEventListener("resize", resize);
  resize();
  checkHealth();
  setInterval(checkHealth, HEALTH_EVERY_MS);
})();
