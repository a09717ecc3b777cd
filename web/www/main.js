// The sparsett demo page: a video source (webcam or file), a box drawn with pointer events, and
// the tracker's box, score and frames/s drawn over the video. Everything runs locally.
//
// URL parameters: ?weights=URL (default: sparsett-demo.safetensors next to the page),
// ?preset=got10k|otb|uav (default: the preset stored with the weights, else got10k; key=value
// overrides as `sparsett track --preset` takes them also work). The page's state is on `window.sparsettDemo` for scripts and tests.

import init, { Tracker, adapterInfo } from "./pkg/sparsett_web.js";

const params = new URLSearchParams(location.search);
const DEFAULT_WEIGHTS = params.get("weights") || "sparsett-demo.safetensors";
const MIN_BOX = 4; // pixels: smaller drags are taken as clicks

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const video = $("video");

/** What the page shows and what tests read. `phase`: starting → ready (a model is loaded) →
 *  source (a video is open, waiting for a box) → tracking → stopped; `failed` when no WebGPU. */
const state = {
  phase: "starting",
  tracker: null,
  weightsName: "",
  source: null, // "webcam" | "file"
  drawing: null, // {x0, y0, x1, y1} in video pixels while the pointer is down
  box: null, // the last tracked {x, y, w, h, score}
  results: [], // one {frame, time, x, y, w, h, score, ms} per update
  fps: 0,
  loop: 0, // generation counter: a new box or source ends the previous tracking loop
};
window.sparsettDemo = state;

function setStatus(text) {
  $("status").textContent = text;
}

/** A message box over the page: `kind` "error" or "info"; an empty text hides it. */
function showMessage(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind;
  m.hidden = !text;
}

function errorText(e) {
  return e && e.message ? e.message : String(e);
}

// --- model -------------------------------------------------------------------------------------

async function loadWeights(source, name) {
  const previous = state.tracker;
  stopTracking();
  setStatus(`Loading weights ${name}…`);
  try {
    const tracker = await Tracker.create(source, $("preset").value);
    if (previous) previous.free();
    state.tracker = tracker;
    state.weightsName = name;
    $("weights").textContent = name;
    showMessage("");
    state.phase = state.source ? "source" : "ready";
    setStatus(
      (state.source ? "Drag a box around the target." : "Weights loaded: open a video or the webcam.") +
        ` Preset: ${tracker.preset}.`,
    );
    return true;
  } catch (e) {
    state.tracker = previous;
    const msg = errorText(e);
    if (/^could not load weights from .*HTTP 404/.test(msg) && source === DEFAULT_WEIGHTS) {
      showMessage(
        `No model is served next to this page (${DEFAULT_WEIGHTS}). Load a weights file with ` +
          "“Load weights”: a SparseTT .safetensors (e.g. from `sparsett convert` or " +
          "`sparsett init-weights`) or an official .pth checkpoint.",
        "info",
      );
    } else {
      showMessage(`The weights ${name} could not be used. ${msg}`);
    }
    setStatus(state.tracker ? `Still using ${state.weightsName}.` : "No weights loaded.");
    if (state.phase === "starting") state.phase = "ready";
    return false;
  }
}

// --- video sources -----------------------------------------------------------------------------

function stopSource() {
  stopTracking();
  const stream = video.srcObject;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
  if (video.src) URL.revokeObjectURL(video.src);
  video.removeAttribute("src");
  state.source = null;
}

async function openWebcam() {
  stopSource();
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage("This browser gives the page no camera access (it needs https or localhost).");
    return;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    showMessage(`Could not open the webcam: ${e.name}: ${e.message}`);
    return;
  }
  await video.play();
  sourceReady("webcam");
}

async function openFile(file) {
  stopSource();
  video.src = URL.createObjectURL(file);
  video.loop = false;
  try {
    await new Promise((ok, fail) => {
      video.onloadeddata = ok;
      video.onerror = () => fail(video.error);
    });
  } catch (e) {
    showMessage(`The browser cannot play ${file.name}: ${e?.message || "unsupported format"}.`);
    return;
  }
  // The first frame stays on screen until a box is drawn.
  video.pause();
  sourceReady("file");
}

function sourceReady(kind) {
  state.source = kind;
  view.width = video.videoWidth;
  view.height = video.videoHeight;
  state.box = null;
  state.phase = state.tracker ? "source" : "ready";
  setStatus(
    state.tracker
      ? "Drag a box around the target."
      : "Load weights first, then drag a box around the target.",
  );
}

// --- drawing the initial box (pointer events: mouse, pen and touch alike) ----------------------

function toVideo(ev) {
  const r = view.getBoundingClientRect();
  const x = ((ev.clientX - r.left) * view.width) / r.width;
  const y = ((ev.clientY - r.top) * view.height) / r.height;
  return [Math.min(Math.max(x, 0), view.width), Math.min(Math.max(y, 0), view.height)];
}

view.addEventListener("pointerdown", (ev) => {
  if (!state.source || ev.button !== 0) return;
  stopTracking();
  // Freeze the frame the box is drawn on: it is the one the tracker starts from.
  video.pause();
  const [x, y] = toVideo(ev);
  state.drawing = { x0: x, y0: y, x1: x, y1: y };
  view.setPointerCapture(ev.pointerId);
  ev.preventDefault();
});

view.addEventListener("pointermove", (ev) => {
  if (!state.drawing) return;
  [state.drawing.x1, state.drawing.y1] = toVideo(ev);
});

view.addEventListener("pointerup", (ev) => {
  if (!state.drawing) return;
  [state.drawing.x1, state.drawing.y1] = toVideo(ev);
  const d = state.drawing;
  state.drawing = null;
  const box = {
    x: Math.min(d.x0, d.x1),
    y: Math.min(d.y0, d.y1),
    w: Math.abs(d.x1 - d.x0),
    h: Math.abs(d.y1 - d.y0),
  };
  if (box.w < MIN_BOX || box.h < MIN_BOX) {
    setStatus("That box is too small: drag across the target.");
    if (state.source === "webcam") video.play();
    return;
  }
  startTracking(box);
});

view.addEventListener("pointercancel", () => {
  state.drawing = null;
});

// --- tracking ----------------------------------------------------------------------------------

function stopTracking() {
  state.loop++;
  if (state.phase === "tracking") state.phase = "stopped";
  $("stop").disabled = true;
}

async function startTracking(box) {
  if (!state.tracker) {
    showMessage("Load weights first (“Load weights”): there is no model to track with.");
    return;
  }
  try {
    state.tracker.init(video, box);
  } catch (e) {
    showMessage(`Could not start tracking: ${errorText(e)}`);
    return;
  }
  showMessage("");
  state.box = { ...box, score: 1 };
  state.results = [];
  state.fps = 0;
  state.phase = "tracking";
  $("stop").disabled = false;
  setStatus("Tracking… drag a new box to restart, or press Stop.");
  const loop = ++state.loop;
  await video.play();
  trackLoop(loop);
}

async function trackLoop(loop) {
  const times = []; // wall-clock end of recent updates, for frames/s over a sliding window
  let lastTime = -1;
  while (loop === state.loop) {
    if (video.ended) {
      stopTracking();
      setStatus(`The video ended: ${state.results.length} frames tracked at ${state.fps.toFixed(2)} frames/s.`);
      return;
    }
    // A file's frame that was already tracked is not tracked twice (webcam time always moves).
    if (video.currentTime === lastTime || video.readyState < 2) {
      await new Promise(requestAnimationFrame);
      continue;
    }
    lastTime = video.currentTime;
    const start = performance.now();
    let r;
    try {
      r = await state.tracker.update(video);
    } catch (e) {
      if (loop !== state.loop) return;
      stopTracking();
      showMessage(`Tracking stopped: ${errorText(e)}`);
      return;
    }
    if (loop !== state.loop) return;
    const end = performance.now();
    times.push(end);
    if (times.length > 10) times.shift();
    state.fps = times.length > 1 ? ((times.length - 1) * 1000) / (times.at(-1) - times[0]) : 1000 / (end - start);
    state.box = r;
    state.results.push({ frame: state.results.length + 1, time: lastTime, ...r, ms: end - start });
    $("fps").textContent = state.fps.toFixed(2);
    $("score").textContent = r.score.toFixed(3);
    $("frames").textContent = String(state.results.length);
  }
}

// --- rendering ---------------------------------------------------------------------------------

function render() {
  if (state.source && video.readyState >= 2) {
    ctx.drawImage(video, 0, 0, view.width, view.height);
  } else {
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, view.width, view.height);
  }
  const lw = Math.max(2, view.width / 320);
  if (state.drawing) {
    const d = state.drawing;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#4cc3ff";
    ctx.lineWidth = lw;
    ctx.strokeRect(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.abs(d.x1 - d.x0), Math.abs(d.y1 - d.y0));
    ctx.setLineDash([]);
  } else if (state.box) {
    const b = state.box;
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = lw;
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    const label = `${b.score.toFixed(2)}`;
    ctx.font = `${Math.round(lw * 7)}px system-ui, sans-serif`;
    const tw = ctx.measureText(label).width;
    ctx.fillStyle = "#ffd400";
    ctx.fillRect(b.x, Math.max(0, b.y - lw * 9), tw + lw * 3, lw * 9);
    ctx.fillStyle = "#000";
    ctx.fillText(label, b.x + lw * 1.5, Math.max(lw * 7.5, b.y - lw * 1.5));
  }
  if (state.phase === "tracking" && state.fps > 0) {
    const text = `${state.fps.toFixed(1)} frames/s`;
    ctx.font = `${Math.round(lw * 7)}px system-ui, sans-serif`;
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    ctx.fillRect(0, 0, ctx.measureText(text).width + lw * 4, lw * 10);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, lw * 2, lw * 7.5);
  }
  requestAnimationFrame(render);
}

// --- start-up ----------------------------------------------------------------------------------

$("webcam").addEventListener("click", openWebcam);
$("video-file").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  if (f) openFile(f);
});
$("weights-file").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  if (f) loadWeights(f, f.name);
});
$("preset").addEventListener("change", () => {
  if (state.tracker) setStatus("The preset applies to the next weights loaded.");
});
$("stop").addEventListener("click", () => {
  stopTracking();
  video.pause();
  setStatus(`Stopped after ${state.results.length} frames.`);
});
if (params.get("preset")) {
  const p = params.get("preset");
  // A value the menu lacks (key=value overrides) becomes an extra option, so it is what is used.
  if (![...$("preset").options].some((o) => o.value === p)) $("preset").add(new Option(p, p));
  $("preset").value = p;
}

async function main() {
  requestAnimationFrame(render);
  try {
    await init();
  } catch (e) {
    state.phase = "failed";
    showMessage(`The tracker's WebAssembly module could not start: ${errorText(e)}`);
    return;
  }
  // WebGPU first: without it no weights file helps, so that is the message to show.
  try {
    $("adapter").textContent = (await adapterInfo()).split("\n")[0];
  } catch (e) {
    state.phase = "failed";
    showMessage(errorText(e));
    setStatus("This browser cannot run the tracker.");
    for (const id of ["webcam", "video-file", "weights-file"]) $(id).disabled = true;
    return;
  }
  await loadWeights(DEFAULT_WEIGHTS, DEFAULT_WEIGHTS);
}

main();
