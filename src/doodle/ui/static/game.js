// The game, as in Quick, Draw!: six rounds, each asking for a known category, won when the live
// guess names it in time. Drawings are given for training only when the player opted in.
"use strict";

(() => {
  const ROUNDS = 6;
  const RESULTS_AFTER_MS = 1200;
  const askedSeconds = Number(new URLSearchParams(location.search).get("round_seconds")); // for tests
  const roundSeconds = askedSeconds > 0 ? askedSeconds : 20;
  const OPT_IN_KEY = "doodle.give-game-drawings";
  const doodle = window.doodle;

  const $ = (id) => document.getElementById(id);
  const game = $("game");
  const drawTab = $("mode-draw");
  const playTab = $("mode-play");
  const outcomeLine = $("round-outcome");
  const optIn = $("opt-in");
  const give = $("give");
  const giveMessage = $("give-message");
  const resultList = $("result-list");

  let prompts = []; // this game's categories, in play order
  let played = []; // per round: {prompt, outcome, thumbnail, image}
  let deadline = 0;
  let ticker = null;
  let resultsTimer = null;

  const withArticle = (name) => `${/^[aeiou]/i.test(name) ? "an" : "a"} ${doodle.human(name)}`;
  const stage = () => game.dataset.stage;

  // --- modes and stages --------------------------------------------------
  function setMode(mode) {
    document.body.dataset.mode = mode;
    game.hidden = mode !== "game";
    drawTab.setAttribute("aria-pressed", String(mode === "draw"));
    playTab.setAttribute("aria-pressed", String(mode === "game"));
  }

  // card: the next prompt and its Start button; drawing: the round runs; over: the last round ended;
  // results: the drawings.
  function setStage(name) {
    game.dataset.stage = name;
    $("card").hidden = name !== "card";
    $("round-bar").hidden = name !== "drawing";
    $("results").hidden = $("results-actions").hidden = name !== "results";
    $("opt-in-label").hidden = name === "drawing";
    outcomeLine.hidden = name !== "card" && name !== "over"; // a round's outcome shows until the next starts
    showBoard(name !== "results");
  }

  // The canvas, its tools and the guesses; the results page takes their place.
  function showBoard(shown) {
    for (const selector of [".stage", ".tools", ".side"]) document.querySelector(selector).hidden = !shown;
  }

  function play() {
    const categories = [...doodle.model().categories];
    for (let i = categories.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [categories[i], categories[j]] = [categories[j], categories[i]];
    }
    prompts = categories.slice(0, ROUNDS);
    played = [];
    stopTimer();
    setOutcome("", "");
    doodle.clear();
    setMode("game");
    showCard();
  }

  function backToDrawing() {
    stopTimer();
    game.dataset.stage = "";
    showBoard(true);
    setMode("draw");
    doodle.clear();
    drawTab.focus();
  }

  // --- rounds ------------------------------------------------------------
  function showCard() {
    const round = played.length + 1;
    const prompt = prompts[played.length];
    game.dataset.round = round;
    game.dataset.prompt = prompt;
    $("card-round").textContent = `Round ${round} of ${prompts.length}`;
    $("card-prompt").textContent = `Draw ${withArticle(prompt)}`;
    $("card-time").textContent = `in under ${roundSeconds} seconds`;
    $("bar-round").textContent = `${round}/${prompts.length}`;
    $("bar-prompt").replaceChildren("Draw ", Object.assign(document.createElement("strong"), { textContent: withArticle(prompt) }));
    setStage("card");
    $("start-round").focus();
  }

  function startRound() {
    doodle.clear();
    deadline = performance.now() + roundSeconds * 1000;
    tick();
    ticker = setInterval(tick, 200);
    setStage("drawing");
    $("skip").focus();
  }

  function tick() {
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    $("timer").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    if (left === 0) endRound("timeout");
  }

  function stopTimer() {
    clearInterval(ticker);
    clearTimeout(resultsTimer);
    ticker = resultsTimer = null;
  }

  function setOutcome(outcome, text) {
    outcomeLine.dataset.outcome = outcome;
    outcomeLine.textContent = text;
  }

  function endRound(outcome) {
    if (stage() !== "drawing") return;
    stopTimer();
    const prompt = game.dataset.prompt;
    played.push({ prompt, outcome, thumbnail: doodle.snapshot(), image: doodle.image() });
    const said = {
      recognised: `I know, it's ${withArticle(prompt)}!`,
      timeout: `Time's up: I didn't guess ${withArticle(prompt)}.`,
      skipped: `Skipped ${withArticle(prompt)}.`,
    };
    setOutcome(outcome, said[outcome]);
    if (played.length < prompts.length) {
      showCard();
    } else {
      // A moment to read the last outcome; a pen still moving meanwhile lands on the canvas, not the results.
      setStage("over");
      resultsTimer = setTimeout(showResults, RESULTS_AFTER_MS);
    }
  }

  document.addEventListener("doodle:guess", (event) => {
    if (stage() === "drawing" && event.detail.predictions[0] === game.dataset.prompt) endRound("recognised");
  });

  // --- results -----------------------------------------------------------
  function showResults() {
    const recognised = played.filter((round) => round.outcome === "recognised").length;
    $("results-title").textContent = `I recognised ${recognised} of your ${played.length} drawings`;
    resultList.replaceChildren(...played.map(resultRow));
    giveMessage.dataset.state = "idle";
    setStage("results");
    showGiveState();
    $("results-title").focus();
  }

  function resultRow(round) {
    const row = document.createElement("li");
    row.dataset.prompt = round.prompt;
    row.dataset.recognised = String(round.outcome === "recognised");
    const thumbnail = Object.assign(document.createElement("img"), {
      src: round.thumbnail,
      alt: `Your drawing of ${withArticle(round.prompt)}`,
    });
    const verdict = Object.assign(document.createElement("span"), {
      className: "verdict",
      textContent: { recognised: "Recognised", timeout: "Time's up", skipped: "Skipped" }[round.outcome],
    });
    const box = Object.assign(document.createElement("input"), {
      type: "checkbox",
      checked: round.outcome === "recognised" && round.image !== null,
      disabled: round.image === null,
    });
    box.addEventListener("change", showGiveState);
    const label = document.createElement("label");
    label.append(box, ` ${doodle.human(round.prompt)}`);
    row.append(thumbnail, label, verdict);
    return row;
  }

  const selectedRows = () =>
    [...resultList.children].filter((row) => row.querySelector("input").checked && !row.dataset.given);

  function showGiveState() {
    give.disabled = !optIn.checked || selectedRows().length === 0;
    if (giveMessage.dataset.state !== "idle") return;
    giveMessage.textContent = optIn.checked
      ? "The ticked drawings are saved, labelled with what I asked for."
      : "Nothing is saved unless you tick \u201cGive my game drawings to help doodle learn\u201d.";
  }

  async function giveSelected() {
    if (!optIn.checked) return;
    give.disabled = true;
    let given = 0;
    let waiting = null;
    for (const row of selectedRows()) {
      const round = played[[...resultList.children].indexOf(row)];
      const saved = await doodle.save(round.image, round.prompt, "game");
      if (!saved.ok) {
        giveMessage.dataset.state = "error";
        giveMessage.textContent = saved.error;
        showGiveState();
        return;
      }
      row.dataset.given = "true";
      row.querySelector("input").disabled = true;
      row.querySelector(".verdict").textContent += ", given";
      given++;
      waiting = saved.body.waiting;
    }
    giveMessage.dataset.state = "saved";
    giveMessage.textContent = `Thank you for ${given === 1 ? "1 drawing" : `${given} drawings`}! ${doodle.waitingText(waiting)}`;
    showGiveState();
  }

  // --- wiring ------------------------------------------------------------
  // Browsers that block storage throw: the choice then lasts as long as the page.
  try {
    optIn.checked = localStorage.getItem(OPT_IN_KEY) === "yes";
  } catch {
    optIn.checked = false;
  }
  optIn.addEventListener("change", () => {
    try {
      localStorage.setItem(OPT_IN_KEY, optIn.checked ? "yes" : "no");
    } catch {
      // not remembered
    }
    if (stage() === "results") showGiveState();
  });
  document.addEventListener("doodle:model", () => {
    playTab.disabled = false;
  });
  playTab.addEventListener("click", () => {
    if (document.body.dataset.mode !== "game") play();
  });
  drawTab.addEventListener("click", () => {
    if (document.body.dataset.mode !== "draw") backToDrawing();
  });
  $("start-round").addEventListener("click", startRound);
  $("skip").addEventListener("click", () => endRound("skipped"));
  give.addEventListener("click", giveSelected);
  $("play-again").addEventListener("click", play);
  $("back-to-drawing").addEventListener("click", backToDrawing);
})();
