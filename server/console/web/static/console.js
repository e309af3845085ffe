// The console: the session table, kept current by server-sent events, and
// the live view of one session (WHEP video plus error and latency charts).

import { TimeChart, format } from "./chart.js";
import { WhepPlayer } from "./live_view.js";

const table = document.querySelector("#sessions tbody");
const connection = document.getElementById("connection");
const live = {
  section: document.getElementById("live"),
  title: document.getElementById("live-session"),
  video: document.getElementById("live-video"),
  status: document.getElementById("live-status"),
  errorChart: new TimeChart(document.getElementById("error-chart"), {
    title: "tracking error", unit: "px", colour: "#ff4d6d",
  }),
  latencyChart: new TimeChart(document.getElementById("latency-chart"), {
    title: "latency", unit: "ms", colour: "#5aa9ff",
  }),
  sessionId: null,
  player: null,
  answers: null,
};

// -- the table -----------------------------------------------------------------

// One entry a column, in the order of index.html's header.
const columns = [
  { cell: (s) => s.id },
  { cell: (s) => s.state, state: true },
  { cell: (s) => s.scene ?? "–" },
  { cell: (s) => s.peer ?? "–" },
  { cell: (s) => (s.started_at ? new Date(s.started_at).toLocaleTimeString() : "–") },
  { cell: (s) => `${format(s.duration_s)} s`, numeric: true },
  { cell: (s) => String(s.frames_sent), numeric: true },
  { cell: (s) => percent(s.answered_ratio), numeric: true },
  { cell: (s) => `${format(s.error_mean_px)} / ${format(s.error_p95_px)} px`, numeric: true },
  {
    cell: (s) => `${format(s.error_at_arrival_mean_px)} / ${format(s.error_at_arrival_p95_px)} px`,
    numeric: true,
  },
  { cell: hiddenBall, numeric: true },
  { cell: (s) => `${format(s.latency_p50_ms)} / ${format(s.latency_p99_ms)} ms`, numeric: true },
  { cell: (s) => s.ice_path ?? "" },
  { cell: (s) => s.end_reason ?? "" },
];

function percent(ratio) {
  return ratio === null || ratio === undefined ? "–" : `${(100 * ratio).toFixed(1)} %`;
}

// Only once the ball has been hidden (the server sends null before, and for
// scenes that never hide it): found when visible, and false positives.
function hiddenBall(s) {
  if (s.found_when_visible_ratio === null || s.found_when_visible_ratio === undefined) return "–";
  return `${percent(s.found_when_visible_ratio)} / ${s.false_positives_when_hidden}`;
}

function renderTable(sessions) {
  document.getElementById("no-sessions").hidden = sessions.length > 0;
  table.replaceChildren(...sessions.map(renderRow));
}

function renderRow(session) {
  const row = document.createElement("tr");
  row.dataset.id = session.id;
  row.dataset.state = session.state;
  row.classList.toggle("live", session.state === "live");
  row.classList.toggle("watched", session.id === live.sessionId);
  let stateCell = null;
  for (const column of columns) {
    const td = document.createElement("td");
    td.textContent = column.cell(session);
    if (column.numeric) td.classList.add("number");
    if (column.state) {
      td.classList.add(`state-${session.state}`);
      stateCell = td;
    }
    row.append(td);
  }
  const reports = document.createElement("td");
  for (const [kind, href] of Object.entries(session.reports ?? {})) {
    const link = document.createElement("a");
    link.href = href;
    link.textContent = kind;
    reports.append(link, " ");
  }
  renderRecording(session, stateCell, reports);
  row.append(reports);
  if (session.state === "live") row.addEventListener("click", () => watch(session.id));
  return row;
}

// -- recordings (server --record) ------------------------------------------------

// A live session says it is being recorded; an ended one gets a button that
// plays its annotated video (<session>.mp4) in the page.
function renderRecording(session, stateCell, reportsCell) {
  const recording = session.recording;
  if (!recording) return;
  if (recording.state === "recording") {
    const badge = document.createElement("span");
    badge.className = "recording-badge";
    badge.textContent = " ● recording";
    badge.title = "this session is being recorded";
    stateCell.append(badge);
  } else if (recording.video) {
    const play = document.createElement("button");
    play.type = "button";
    play.className = "play-recording";
    play.textContent = "▶ play";
    play.addEventListener("click", (event) => {
      event.stopPropagation();
      playRecording(session.id, recording.video);
    });
    reportsCell.append(play);
  }
}

let recordingPlayer = null;

function recordingSection() {
  if (recordingPlayer) return recordingPlayer;
  const section = document.createElement("section");
  section.id = "recording";
  section.setAttribute("aria-labelledby", "recording-title");
  const title = document.createElement("h2");
  title.id = "recording-title";
  const video = document.createElement("video");
  video.id = "recording-video";
  video.controls = true;
  video.muted = true;
  video.playsInline = true;
  const status = document.createElement("p");
  status.className = "hint";
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Close";
  close.addEventListener("click", () => {
    video.pause();
    video.removeAttribute("src");
    video.load();
    section.hidden = true;
  });
  video.addEventListener("error", () => {
    status.textContent = "cannot play this recording (is it still being written, or was it removed?)";
  });
  section.append(title, video, status, close);
  document.querySelector("main").append(section);
  recordingPlayer = { section, title, video, status };
  return recordingPlayer;
}

function playRecording(sessionId, href) {
  const player = recordingSection();
  player.section.hidden = false;
  player.title.textContent = `Recording: ${sessionId}`;
  player.status.textContent = "";
  player.video.src = href;
  player.video.play().catch(() => {
    // Autoplay refused: the controls still play it.
  });
}

function followTable() {
  const events = new EventSource("/api/events");
  events.addEventListener("sessions", (event) => {
    renderTable(JSON.parse(event.data).sessions);
  });
  events.onopen = () => setConnection("live", "ok");
  // EventSource reconnects by itself; say so meanwhile.
  events.onerror = () => setConnection("reconnecting…", "down");
}

function setConnection(text, state) {
  connection.textContent = text;
  connection.className = `status ${state}`;
}

// -- the live view ---------------------------------------------------------------

async function watch(sessionId) {
  await stopWatching();
  live.sessionId = sessionId;
  live.section.hidden = false;
  live.title.textContent = sessionId;
  live.status.textContent = "connecting…";
  live.errorChart.clear();
  live.latencyChart.clear();
  document.querySelectorAll("#sessions tr").forEach((row) => {
    row.classList.toggle("watched", row.dataset.id === sessionId);
  });

  const base = `/api/sessions/${encodeURIComponent(sessionId)}`;
  live.answers = new EventSource(`${base}/events`);
  live.answers.addEventListener("answers", (event) => {
    for (const point of JSON.parse(event.data)) {
      live.errorChart.add(point.t, point.error_px);
      live.latencyChart.add(point.t, point.latency_ms);
    }
    live.errorChart.draw();
    live.latencyChart.draw();
  });
  live.answers.addEventListener("ended", () => {
    live.status.textContent = "the session has ended";
    live.answers.close();
    live.player?.stop();
  });

  live.player = new WhepPlayer(new URL(`${base}/whep`, location.href).href, live.video);
  try {
    await live.player.start();
    live.status.textContent = "playing";
  } catch (error) {
    live.status.textContent = `cannot watch: ${error.message}`;
  }
}

async function stopWatching() {
  live.answers?.close();
  live.answers = null;
  const player = live.player;
  live.player = null;
  live.sessionId = null;
  await player?.stop();
}

document.getElementById("live-close").addEventListener("click", async () => {
  await stopWatching();
  live.section.hidden = true;
});
// A closed tab must not leave a viewer behind on the server.
window.addEventListener("pagehide", () => live.player?.stop());

followTable();
