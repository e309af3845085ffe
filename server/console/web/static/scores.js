// The server's scores of this page's answers: per-answer points pushed as
// server-sent events while the session runs, and its summary at the end.

import { format } from "./chart.js";

// Running figures over the points received: what the page shows and
// window.tracker reports.
export class ScoreTally {
  answersScored = 0;
  errorMean = null;
  errorLast = null;
  errorSum = 0;
  errorCount = 0;
  latencies = [];

  add(point) {
    this.answersScored++;
    if (point.error_px !== null && point.error_px !== undefined) {
      this.errorSum += point.error_px;
      this.errorCount++;
      this.errorMean = this.errorSum / this.errorCount;
    }
    this.errorLast = point.error_px ?? null;
    if (point.latency_ms !== null && point.latency_ms !== undefined) this.latencies.push(point.latency_ms);
  }

  latencyP50() {
    if (!this.latencies.length) return null;
    const sorted = Float64Array.from(this.latencies).sort();
    return sorted[sorted.length >> 1];
  }
}

// Follow session `sessionId`'s scores: onPoints(points) for every batch,
// onEnded(summary) once. Returns the EventSource, for close().
export function followScores(sessionId, { onPoints, onEnded, quiet }) {
  const events = new EventSource(`/api/sessions/${encodeURIComponent(sessionId)}/events`);
  events.addEventListener("answers", (event) => onPoints(JSON.parse(event.data)));
  events.addEventListener("ended", (event) => {
    events.close();
    onEnded(JSON.parse(event.data));
  });
  events.onerror = () => {
    // EventSource retries by itself unless the server refused the stream.
    if (events.readyState === EventSource.CLOSED && !quiet()) {
      console.warn("the score stream was refused");
    }
  };
  return events;
}

const SUMMARY_ROWS = [
  ["frames sent", (s) => s.frames_sent],
  ["frames answered", (s) => s.frames_answered],
  ["answered", (s) => answeredPercent(s)],
  ["error mean / p50 / p95 / max (px)", (s) => figures(s.error_px, ["mean", "p50", "p95", "max"])],
  ["latency p50 / p95 / p99 (ms)", (s) => figures(s.latency_ms, ["p50", "p95", "p99"])],
  ["end reason", (s) => s.end_reason],
];

// "99.5 %", or null when the summary has no ratio.
export function answeredPercent(summary) {
  return summary.answered_ratio == null ? null : `${(100 * summary.answered_ratio).toFixed(1)} %`;
}

function figures(group, keys) {
  if (!group) return null;
  return keys.map((k) => format(group[k])).join(" / ");
}

// The summary as rows of a table body.
export function summaryRows(summary) {
  return SUMMARY_ROWS.map(([label, value]) => {
    const row = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = label;
    const td = document.createElement("td");
    const shown = value(summary);
    td.textContent = shown === null || shown === undefined ? "–" : String(shown);
    row.append(th, td);
    return row;
  });
}
