// The drawing page: pointer strokes, a live guess while drawing, label correction, and what the
// model knows and what waits for training (polled from GET /model, which is also the health check).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const BACKEND = (params.get("backend") || (window.DOODLE_CONFIG || {}).backendUrl || "http://localhost:8000")
    .replace(/\/$/, "");
  const DEBOUNCE_MS = 150;
  const POLL_EVERY_MS = 3000;
  const REQUEST_TIMEOUT_MS = 5000;

  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("status");
  const guesses = document.getElementById("guesses");
  const form = document.getElementById("correct");
  const categoryInput = document.getElementById("category");
  const categoryList = document.getElementById("categories");
  const saveMessage = document.getElementById("save-message");
  const modelVersion = document.getElementById("model-version");
  const knownCategories = document.getElementById("known-categories");
  const newCategories = document.getElementById("new-categories");
  const waitingLine = document.getElementById("waiting");
  const announcement = document.getElementById("announcement");

  const strokes = []; // [[{x, y}, ...], ...] in CSS pixels
  let current = null;
  let timer = null;
  let inFlight = false;
  let pending = false;
  let drawingVersion = 0; // bumps on every change, so stale answers are dropped
  let model = null; // the last GET /model answer

  // --- backend calls -------------------------------------------------------
  async function call(path, options = {}) {
    // GETs carry no Content-Type, so the browser needs no CORS preflight for them.
    const headers = options.body ? { "Content-Type": "application/json" } : {};
    const response = await fetch(BACKEND + path, { ...options, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
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

  async function checkModel() {
    try {
      const { ok, body } = await call("/model");
      if (ok) {
        setStatus("ready", `Model ready (version ${body.version})`);
        showModel(body);
      } else {
        setStatus("unavailable", "Model server unavailable, retrying\u2026");
      }
    } catch {
      setStatus("unavailable", "Model server unavailable: backend unreachable, retrying\u2026");
    } finally {
      setTimeout(checkModel, POLL_EVERY_MS);
    }
  }

  // --- what the model knows, and what waits ------------------------------
  const human = (name) => name.replace(/_/g, " ");
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  function showModel(answer) {
    const changed = !model || answer.version !== model.version;
    if (model && changed) announce(answer);
    model = answer;
    showWaiting(answer.waiting);
    if (changed) {
      modelVersion.textContent = answer.version;
      categoryList.replaceChildren(...answer.categories.map((name) => new Option(human(name), name)));
      knownCategories.replaceChildren(
        ...answer.categories.map((name) => {
          const chip = Object.assign(document.createElement("li"), { textContent: human(name) });
          chip.dataset.category = name;
          chip.classList.toggle("new", answer.added_categories.includes(name));
          return chip;
        }),
      );
      newCategories.hidden = answer.added_categories.length === 0;
      newCategories.textContent = `New: ${answer.added_categories.map(human).join(", ")} (${versionAndDate(answer)})`;
    }
    document.dispatchEvent(new CustomEvent("doodle:model", { detail: answer }));
  }

  function versionAndDate({ version, added_on: addedOn }) {
    if (!addedOn) return `version ${version}`;
    const date = new Date(`${addedOn}T00:00:00Z`);
    return `version ${version}, ${date.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" })}`;
  }

  function announce(answer) {
    announcement.dataset.version = answer.version;
    announcement.textContent = answer.added_categories.length
      ? `I just learned: ${answer.added_categories.map(human).join(", ")}`
      : `I was updated to version ${answer.version}`;
  }

  const waits = (total) => plural(total, "drawing waits", "drawings wait");
  const stillNeeded = ({ total, training_starts_at: startsAt }) =>
    total >= startsAt ? "" : `, ${startsAt - total} more to go`;

  // "12 drawings wait (3 of car); training starts at 10." with the category only when given.
  function waitingText(waiting, category) {
    const ofCategory = category ? ` (${waiting.categories[category] || 0} of ${human(category)})` : "";
    return `${waits(waiting.total)}${ofCategory}; training starts at ${waiting.training_starts_at}${stillNeeded(waiting)}.`;
  }

  function showWaiting(waiting) {
    waitingLine.dataset.total = waiting.total;
    waitingLine.textContent =
      `${waits(waiting.total)} for training; a run starts at ${waiting.training_starts_at}${stillNeeded(waiting)}.`;
  }

  // --- drawing -----------------------------------------------------------
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    if (rect.width === 0) return; // hidden (the game's results)
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
    event.preventDefault(); // drawing keeps the keyboard focus where it was (e.g. on the game's Skip)
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
      if (ok && version === drawingVersion) {
        showGuesses(body);
        document.dispatchEvent(new CustomEvent("doodle:guess", { detail: body }));
      }
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
      li.querySelector(".label span:first-child").textContent = human(label);
      li.querySelector(".label span:last-child").textContent = `${percent}%`;
      li.querySelector(".bar span").style.width = `${percent}%`;
      return li;
    });
    guesses.replaceChildren(...items);
  }

  // --- correction --------------------------------------------------------
  // Stores a drawing (base64 of its 784 bytes) under `category`; the answer says what now waits.
  async function save(image, category, source) {
    try {
      const { ok, body } = await call("/save-image/", {
        method: "POST",
        body: JSON.stringify({ image, category, source }),
      });
      if (!ok) return { ok, error: describeError(body) };
      showWaiting(body.waiting);
      return { ok, body };
    } catch {
      return { ok: false, error: "Could not reach the backend. Try again in a moment." };
    }
  }

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
    const saved = await save(DoodleNormalize.toBase64(bytes), category, "ui");
    if (!saved.ok) return showSave("error", saved.error);
    const { category: label, waiting } = saved.body;
    showSave("saved", `Saved as \u201c${label}\u201d. ${waitingText(waiting, label)}`);
  });

  function describeError(body) {
    if (!body || body.detail === undefined) return "The backend refused the drawing.";
    if (typeof body.detail === "string") return body.detail;
    return body.detail.map((item) => item.msg).join("; ");
  }

  // Hooks for the game (game.js), tests and the curious: the strokes, their raster and the bytes sent.
  window.doodle = {
    strokes,
    raster: () => DoodleNormalize.render(strokes),
    bytes: () => Array.from(bitmap() || []),
    image: () => {
      const bytes = bitmap();
      return bytes && DoodleNormalize.toBase64(bytes);
    },
    snapshot: () => canvas.toDataURL("image/png"),
    model: () => model,
    clear,
    save,
    human,
    waitingText,
    backend: BACKEND,
  };

  new ResizeObserver(resize).observe(canvas);
  checkModel();
})();
