// What the /track page shows: its status, the numbers, the charts, the
// cross on the ball and the server's summary. The page's state is also
// document.body.dataset.state, for tests.

import { TimeChart, format } from "./chart.js";
import { summaryRows } from "./scores.js";

const elements = Object.fromEntries(
  [
    "status", "session", "video", "overlay", "stop", "frames-seen", "frames-answered",
    "frames-skipped", "scored", "error", "latency", "detect", "read", "skip-reasons",
    "summary", "summary-rows", "ice-path", "frames-note",
  ].map((id) => [id, document.getElementById(id)]),
);
const charts = {
  error: new TimeChart(document.getElementById("error-chart"), {
    title: "tracking error", unit: "px", colour: "#ff4d6d",
  }),
  latency: new TimeChart(document.getElementById("latency-chart"), {
    title: "latency", unit: "ms", colour: "#5aa9ff",
  }),
};

export const video = elements.video;
export const stopButton = elements.stop;

export function showState(state, message) {
  document.body.dataset.state = state;
  if (message !== undefined) showStatus(message);
}

export function showStatus(message) {
  elements.status.textContent = message;
}

export function showSession(sessionId) {
  elements.session.textContent = sessionId ?? "(no id)";
}

// tracker: the counters of track.js (window.tracker).
export function showNumbers(tracker) {
  elements["frames-seen"].textContent = String(tracker.framesSeen);
  elements["frames-answered"].textContent = String(tracker.framesAnswered);
  elements["frames-skipped"].textContent = String(tracker.framesSkipped);
  elements.scored.textContent = String(tracker.answersScored);
  elements.error.textContent = `${format(tracker.errorMean)} / ${format(tracker.errorLast)} px`;
  elements.latency.textContent = `${format(tracker.latencyP50)} ms`;
  elements.detect.textContent = `${format(tracker.detectMsMean)} ms`;
  elements.read.textContent =
    `${format(tracker.readMsMean)} ms (${tracker.readMethod ?? "–"}, frames from ${tracker.frameSource ?? "–"})`;
  const reasons = Object.entries(tracker.skipped).filter(([, n]) => n > 0);
  if (tracker.framesNotPresented) reasons.push(["never presented to the page", tracker.framesNotPresented]);
  elements["skip-reasons"].textContent = reasons.map(([r, n]) => `${r}: ${n}`).join(", ");
}

// Points of the server's scores, onto the charts.
export function chartPoints(points) {
  for (const point of points) {
    charts.error.add(point.t, point.error_px);
    charts.latency.add(point.t, point.latency_ms);
  }
  charts.error.draw();
  charts.latency.draw();
}

export function showSummary(summary) {
  elements["summary-rows"].replaceChildren(...summaryRows(summary));
  elements.summary.hidden = false;
}

// A cross where the ball was found in a width x height frame; nothing for null.
export function drawOverlay(found, width, height) {
  const overlay = elements.overlay;
  if (overlay.width !== width || overlay.height !== height) {
    overlay.width = width;
    overlay.height = height;
  }
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (found === null) return;
  // Pixel centres are at integer coordinates; the canvas puts them at +0.5.
  const x = found.x + 0.5, y = found.y + 0.5, arm = 8;
  ctx.strokeStyle = "#ff4d6d";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x - arm, y - arm);
  ctx.lineTo(x + arm, y + arm);
  ctx.moveTo(x + arm, y - arm);
  ctx.lineTo(x - arm, y + arm);
  ctx.stroke();
}

export function clearOverlay() {
  const overlay = elements.overlay;
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
}

export function showIcePath(path) {
  elements["ice-path"].textContent = path?.path ?? "–";
}

// Frames come from requestVideoFrameCallback because this browser has no
// MediaStreamTrackProcessor: said on the page, not silently.
export function showFramesFallback() {
  elements["frames-note"].hidden = false;
}
