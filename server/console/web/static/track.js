// The browser tracking client (/track): receives the server's ball over
// WebRTC (WHEP-style signalling, no trickle), finds the ball's centre in every
// decoded frame with ball_finder.js and answers on the "coordinates" data
// channel with {rtp_timestamp, x, y}, like client/client.py. The server scores
// each answer; its numbers come back over server-sent events.
//
// URL parameters:
//   ?seconds=N              stop after N seconds of tracking (default: until closed)
//   ?jitterBufferTarget=ms  the receiver's jitter buffer target: 0 unless given;
//                           "default" leaves Chromium's own
//   ?read=videoframe|canvas|offscreen  how the pixels are read (see READERS)
//   ?frames=video|processor where frames come from (see onFrame)
//   ?relay=1                only relayed ICE paths (ice.js)
//
// For tests: document.body.dataset.state is connecting | tracking | ended |
// failed; window.tracker holds the counters; window.trackingSummary the
// server's summary once the session has ended.

import { findBall } from "./ball_finder.js";
import { TimeChart, format } from "./chart.js";
import { gatheringComplete } from "./live_view.js";
import { iceConfiguration, iceFailure, selectedPath } from "./ice.js";

const params = new URLSearchParams(location.search);
const elements = Object.fromEntries(
  [
    "status", "session", "video", "overlay", "stop", "frames-seen", "frames-answered",
    "frames-skipped", "scored", "error", "latency", "detect", "read", "skip-reasons",
    "summary", "summary-rows", "ice-path", "frames-note",
  ].map((id) => [id, document.getElementById(id)]),
);
const video = elements.video;
const overlay = elements.overlay;
const charts = {
  error: new TimeChart(document.getElementById("error-chart"), {
    title: "tracking error", unit: "px", colour: "#ff4d6d",
  }),
  latency: new TimeChart(document.getElementById("latency-chart"), {
    title: "latency", unit: "ms", colour: "#5aa9ff",
  }),
};

// -- reading a decoded frame's luma -------------------------------------------------
//
// Measured in headless Chromium 156 (--disable-gpu) on this 2-core machine,
// 640x480 VP8 from aiortc at 30 fps, mean per frame over 10 s runs, each
// method run 2-3 times (the spread is the machine's other load):
//   videoframe  new VideoFrame(video) + copyTo (I420: Y plane as is)  0.17-0.21 ms
//   canvas      2d canvas, willReadFrequently, drawImage+getImageData  2.9-3.4 ms
//   offscreen   the same on an OffscreenCanvas                         2.9-6.1 ms
// so videoframe is the default. It also gives the codec's own luma rather
// than an RGB conversion of it, and the frame's own RTP timestamp.

class VideoFrameReader {
  name = "videoframe";
  buffer = new Uint8Array(0);
  fallback = null;

  async read(video) {
    if (this.fallback) return this.fallback.read(video);
    const frame = new VideoFrame(video);
    try {
      return await this.readFrame(frame);
    } finally {
      frame.close();
    }
  }

  // The luma of a VideoFrame, which the caller closes.
  async readFrame(frame) {
    if (this.fallback) return this.fallback.read(frame);
    const rect = frame.visibleRect;
    const format = frame.format;
    if (format === null) {
      // Pixels the page cannot map (on a GPU): a canvas can still read them.
      this.fallback = new CanvasReader(false);
      this.name = "videoframe→canvas";
      return this.fallback.read(frame);
    }
    const size = frame.allocationSize({ rect });
    if (this.buffer.length < size) this.buffer = new Uint8Array(size);
    const layout = await frame.copyTo(this.buffer, { rect });
    // The frame's own RTP timestamp (Chromium's VideoFrame.metadata()):
    // certain to name the pixels read, whatever the video element did since
    // the callback was scheduled.
    const rtpTimestamp = frame.metadata?.().rtpTimestamp;
    if (["I420", "I420A", "I422", "I444", "NV12", "I420P10"].includes(format)) {
      if (format === "I420P10") throw new Error("10-bit frames are not supported");
      return {
        luma: this.buffer.subarray(layout[0].offset),
        width: rect.width,
        height: rect.height,
        stride: layout[0].stride,
        rtpTimestamp,
      };
    }
    // RGBA, RGBX, BGRA, BGRX: grey content, so one colour channel is the luma.
    const channel = format.startsWith("RGB") ? 0 : 2;
    return { ...packedToLuma(this.buffer, layout[0], rect.width, rect.height, channel), rtpTimestamp };
  }
}

class CanvasReader {
  constructor(offscreen) {
    this.name = offscreen ? "offscreen" : "canvas";
    this.canvas = offscreen ? new OffscreenCanvas(1, 1) : document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
  }

  // source: the video element, or a VideoFrame
  read(source) {
    const width = source.videoWidth ?? source.displayWidth;
    const height = source.videoHeight ?? source.displayHeight;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.drawImage(source, 0, 0);
    const image = this.context.getImageData(0, 0, width, height);
    const rtpTimestamp = source.metadata?.().rtpTimestamp; // a VideoFrame's
    return { ...packedToLuma(image.data, { offset: 0, stride: 4 * width }, width, height, 0), rtpTimestamp };
  }
}

let lumaScratch = new Uint8Array(0);

// One channel of four-byte pixels (grey content: R = G = B) as a luma plane.
function packedToLuma(bytes, plane, width, height, channel) {
  if (lumaScratch.length < width * height) lumaScratch = new Uint8Array(width * height);
  const aligned = (bytes.byteOffset + plane.offset) % 4 === 0 && plane.stride % 4 === 0;
  const shift = 8 * channel; // little-endian: channel 0 is the low byte
  for (let y = 0; y < height; y++) {
    const out = y * width;
    if (aligned) {
      const words = new Uint32Array(bytes.buffer, bytes.byteOffset + plane.offset + y * plane.stride, width);
      for (let x = 0; x < width; x++) lumaScratch[out + x] = (words[x] >>> shift) & 0xff;
    } else {
      const row = plane.offset + y * plane.stride + channel;
      for (let x = 0; x < width; x++) lumaScratch[out + x] = bytes[row + 4 * x];
    }
  }
  return { luma: lumaScratch, width, height, stride: width };
}

const READERS = {
  videoframe: () => new VideoFrameReader(),
  canvas: () => new CanvasReader(false),
  offscreen: () => new CanvasReader(true),
};
const DEFAULT_READER = "videoframe";
// Measured against the real server (5-8 s runs, this machine): frames from a
// MediaStreamTrackProcessor were answered 99.6-100 % with a latency p50 of
// 13-14 ms; from requestVideoFrameCallback 96-99 % and 44-46 ms, since a frame
// waits for the element's next rendering step and some are never presented.
const DEFAULT_FRAMES = typeof MediaStreamTrackProcessor === "function" ? "processor" : "video";

// -- state shown to the user and to tests --------------------------------------------

const tracker = {
  state: "connecting",
  sessionId: null,
  readMethod: null,
  frameSource: null, // "video" (requestVideoFrameCallback) or "processor"
  icePath: null, // the candidate pair in use (ice.js selectedPath)
  jitterBufferTarget: undefined, // read back from the receiver; null: Chromium's default
  framesSeen: 0, // frames decoded and presented (requestVideoFrameCallback)
  framesAnswered: 0, // answers this page sent
  framesSkipped: 0, // frames this page could not answer, by reason below
  // noRtpTimestamp: the frame came without one; channelNotOpen: nowhere to
  // send yet (or any more); busy: the previous frame was still being read;
  // readFailed: its pixels could not be read; alreadyAnswered: the frame read
  // was one answered before (the element had not moved on yet).
  skipped: { noRtpTimestamp: 0, channelNotOpen: 0, busy: 0, readFailed: 0, alreadyAnswered: 0 },
  framesNotPresented: 0, // gaps in metadata.presentedFrames: decoded, never shown to us
  framesRaced: 0, // the frame read was not the one the callback announced
  framesNoBall: 0, // answers that said "no ball"
  detectMsMean: null, // findBall alone
  readMsMean: null, // getting the luma plane
  answersScored: 0, // answers the server reported scoring
  errorMean: null,
  errorLast: null,
  latencyP50: null,
  endReason: null,
  message: null,
};
window.tracker = tracker;
window.trackingSummary = null;

let detectTotal = 0, readTotal = 0, detectCount = 0;
let errorSum = 0, errorCount = 0;
const latencies = [];

function setState(state, message) {
  tracker.state = state;
  document.body.dataset.state = state;
  if (message !== undefined) {
    tracker.message = message;
    elements.status.textContent = message;
  }
}

function skip(reason) {
  tracker.framesSkipped++;
  tracker.skipped[reason]++;
}

function showNumbers() {
  elements["frames-seen"].textContent = String(tracker.framesSeen);
  elements["frames-answered"].textContent = String(tracker.framesAnswered);
  elements["frames-skipped"].textContent = String(tracker.framesSkipped);
  elements.scored.textContent = String(tracker.answersScored);
  elements.error.textContent = `${format(tracker.errorMean)} / ${format(tracker.errorLast)} px`;
  tracker.latencyP50 = median(latencies);
  elements.latency.textContent = `${format(tracker.latencyP50)} ms`;
  elements.detect.textContent = `${format(tracker.detectMsMean)} ms`;
  elements.read.textContent =
    `${format(tracker.readMsMean)} ms (${tracker.readMethod ?? "–"}, frames from ${tracker.frameSource ?? "–"})`;
  const reasons = Object.entries(tracker.skipped).filter(([, n]) => n > 0);
  if (tracker.framesNotPresented) reasons.push(["never presented to the page", tracker.framesNotPresented]);
  elements["skip-reasons"].textContent = reasons.map(([r, n]) => `${r}: ${n}`).join(", ");
}

function median(values) {
  if (!values.length) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[sorted.length >> 1];
}

// -- the session ----------------------------------------------------------------------

const session = {
  pc: null,
  channel: null,
  resource: null, // the URL to DELETE
  events: null,
  reader: null,
  running: false,
  busy: false,
  lastPresented: null,
  track: null,
  frames: null, // the processor's reader, with ?frames=processor
  lastAnswered: null, // the RTP timestamp of the last frame answered
  stopTimer: null,
  ending: null,
};

async function start() {
  setState("connecting", "connecting…");
  const readName = params.get("read") ?? DEFAULT_READER;
  if (!(readName in READERS)) return fail(`unknown ?read=${readName}: one of ${Object.keys(READERS)}`);
  session.reader = READERS[readName]();
  tracker.readMethod = session.reader.name;
  const frameSource = params.get("frames") ?? DEFAULT_FRAMES;
  if (!["video", "processor"].includes(frameSource)) return fail(`unknown ?frames=${frameSource}: video or processor`);
  if (frameSource === "processor" && typeof MediaStreamTrackProcessor !== "function") {
    return fail("this browser has no MediaStreamTrackProcessor: use ?frames=video");
  }
  if (frameSource === "processor" && !(session.reader instanceof VideoFrameReader)) {
    session.reader = new CanvasReader(readName === "offscreen"); // reads VideoFrames too
  }
  tracker.frameSource = frameSource;
  if (frameSource === "video" && typeof MediaStreamTrackProcessor !== "function") {
    elements["frames-note"].hidden = false; // the fallback, said on the page
  }

  let configuration;
  try {
    configuration = await iceConfiguration(params);
  } catch (error) {
    return fail(`cannot get the ICE servers: ${error.message}`);
  }
  const pc = new RTCPeerConnection(configuration);
  session.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  session.channel = pc.createDataChannel("coordinates", { ordered: false, maxPacketLifeTime: 300 });
  pc.ontrack = (event) => {
    setJitterBufferTarget(event.receiver);
    session.track = event.track;
    video.srcObject = new MediaStream([event.track]);
  };
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    if (state === "connected") {
      selectedPath(pc).then((path) => {
        tracker.icePath = path;
        elements["ice-path"].textContent = path?.path ?? "–";
      });
    }
    if ((state === "failed" || state === "closed") && session.running) {
      const why = tracker.icePath ? `connection ${state}` : iceFailure(pc, configuration);
      end(why, false);
    }
  };

  let response;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc); // the server takes every candidate inside the SDP
    response = await fetch("/api/track/whep", {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
  } catch (error) {
    return fail(`cannot reach the server: ${error.message}`);
  }
  const body = (await response.text()).trim();
  if (response.status !== 201) {
    const why = response.status === 503 ? "the server is busy" : "the server refused";
    return fail(`${why} (${response.status}): ${body}`);
  }
  session.resource = new URL(response.headers.get("Location"), location.href).href;
  tracker.sessionId = response.headers.get("X-Session-Id");
  elements.session.textContent = tracker.sessionId ?? "(no id)";
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: body + "\r\n" });
  } catch (error) {
    deleteResource();
    return fail(`the server's answer does not fit: ${error.message}`);
  }
  if (tracker.sessionId) followScores(tracker.sessionId);
  session.running = true;
  elements.stop.disabled = false;
  elements.status.textContent = "waiting for the first frame…";
  if (tracker.frameSource === "processor") pumpFrames(session.track);
  else video.requestVideoFrameCallback(onFrame);
  setTimeout(() => {
    if (tracker.state === "connecting" && session.running) end("no video within 15 s", true);
  }, 15000);
}

function setJitterBufferTarget(receiver) {
  const wanted = params.get("jitterBufferTarget");
  if (wanted !== "default") {
    // "default" keeps Chromium's own adaptive target (null).
    const ms = wanted === null ? 0 : Number(wanted);
    try {
      receiver.jitterBufferTarget = ms;
    } catch (error) {
      console.warn(`jitterBufferTarget=${wanted} refused:`, error.message);
    }
  }
  tracker.jitterBufferTarget = receiver.jitterBufferTarget ?? null;
}

// -- every decoded frame ---------------------------------------------------------------

// Frames come either from a MediaStreamTrackProcessor on the track, which
// hands over every decoded frame as soon as it is decoded, whether or not it
// is ever shown (the default where Chromium has it), or, with ?frames=video,
// from the video element as it presents them (requestVideoFrameCallback).

async function onFrame(now, metadata) {
  if (!session.running) return;
  video.requestVideoFrameCallback(onFrame);
  tracker.framesSeen++;
  if (session.lastPresented !== null && metadata.presentedFrames > session.lastPresented + 1) {
    tracker.framesNotPresented += metadata.presentedFrames - session.lastPresented - 1;
  }
  session.lastPresented = metadata.presentedFrames;
  if (tracker.state === "connecting") beginTracking();
  await answerFrame(() => session.reader.read(video), metadata.rtpTimestamp);
}

async function pumpFrames(track) {
  // A short queue: a stall of up to 100 ms is caught up on, not dropped,
  // and never turns into a growing backlog (the processor drops the oldest).
  const processor = new MediaStreamTrackProcessor({ track, maxBufferSize: 3 });
  const frames = processor.readable.getReader();
  session.frames = frames;
  while (session.running) {
    let next;
    try {
      next = await frames.read();
    } catch {
      break; // cancelled at the end
    }
    if (next.done) break;
    const frame = next.value;
    try {
      if (!session.running) break;
      tracker.framesSeen++;
      if (tracker.state === "connecting") beginTracking();
      await answerFrame(() => session.reader.readFrame(frame), undefined);
    } finally {
      frame.close();
    }
  }
}

// Read one frame's luma, find the ball, answer.
async function answerFrame(readPlane, announcedRtp) {
  const channel = session.channel;
  if (channel.readyState !== "open") return skip("channelNotOpen");
  if (session.busy) return skip("busy"); // the previous frame is still being read

  session.busy = true;
  let plane;
  const readStart = performance.now();
  try {
    plane = await readPlane();
  } catch (error) {
    console.warn("reading the frame failed:", error);
    session.busy = false;
    return skip("readFailed");
  }
  const detectStart = performance.now();
  const found = findBall(plane.luma, plane.width, plane.height, plane.stride);
  const detectEnd = performance.now();
  session.busy = false;
  if (!session.running || channel.readyState !== "open") return skip("channelNotOpen");
  const rtpTimestamp = plane.rtpTimestamp ?? announcedRtp;
  if (rtpTimestamp === undefined) return skip("noRtpTimestamp");
  if (plane.rtpTimestamp !== undefined && announcedRtp !== undefined && plane.rtpTimestamp !== announcedRtp) {
    // The video element had already moved on (or not yet): the answer is for
    // the frame read, which the server would count twice if sent twice.
    tracker.framesRaced++;
  }
  if (rtpTimestamp === session.lastAnswered) return skip("alreadyAnswered");
  session.lastAnswered = rtpTimestamp;

  channel.send(
    JSON.stringify({ rtp_timestamp: rtpTimestamp, x: found?.x ?? null, y: found?.y ?? null }),
  );
  tracker.framesAnswered++;
  if (found === null) tracker.framesNoBall++;
  readTotal += detectStart - readStart;
  detectTotal += detectEnd - detectStart;
  detectCount++;
  tracker.readMsMean = readTotal / detectCount;
  tracker.detectMsMean = detectTotal / detectCount;
  drawOverlay(found, plane.width, plane.height);
}

function beginTracking() {
  setState("tracking", "tracking");
  const seconds = Number(params.get("seconds"));
  if (params.has("seconds") && Number.isFinite(seconds) && seconds > 0) {
    session.stopTimer = setTimeout(() => end(`${seconds} s are over`, true), seconds * 1000);
    elements.status.textContent = `tracking for ${seconds} s`;
  }
}

function drawOverlay(found, width, height) {
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

// -- the server's scores ---------------------------------------------------------------

function followScores(sessionId) {
  const events = new EventSource(`/api/sessions/${encodeURIComponent(sessionId)}/events`);
  session.events = events;
  events.addEventListener("answers", (event) => {
    for (const point of JSON.parse(event.data)) {
      tracker.answersScored++;
      if (point.error_px !== null && point.error_px !== undefined) {
        errorSum += point.error_px;
        errorCount++;
        tracker.errorMean = errorSum / errorCount;
      }
      tracker.errorLast = point.error_px ?? null;
      if (point.latency_ms !== null && point.latency_ms !== undefined) latencies.push(point.latency_ms);
      charts.error.add(point.t, point.error_px);
      charts.latency.add(point.t, point.latency_ms);
    }
    charts.error.draw();
    charts.latency.draw();
  });
  events.addEventListener("ended", (event) => {
    events.close();
    window.trackingSummary = JSON.parse(event.data);
    showSummary(window.trackingSummary);
    // The server ended it (its duration, shutdown) or confirms our DELETE.
    end(window.trackingSummary.end_reason ?? "the session has ended", false);
  });
  events.onerror = () => {
    // EventSource retries by itself unless the server refused the stream.
    if (events.readyState === EventSource.CLOSED && !session.ending) {
      console.warn("the score stream was refused");
    }
  };
}

const SUMMARY_ROWS = [
  ["frames sent", (s) => s.frames_sent],
  ["frames answered", (s) => s.frames_answered],
  ["answered", (s) => (s.answered_ratio == null ? null : `${(100 * s.answered_ratio).toFixed(1)} %`)],
  ["error mean / p50 / p95 / max (px)", (s) => figures(s.error_px, ["mean", "p50", "p95", "max"])],
  ["latency p50 / p95 / p99 (ms)", (s) => figures(s.latency_ms, ["p50", "p95", "p99"])],
  ["end reason", (s) => s.end_reason],
];

function figures(group, keys) {
  if (!group) return null;
  return keys.map((k) => format(group[k])).join(" / ");
}

function showSummary(summary) {
  elements["summary-rows"].replaceChildren(
    ...SUMMARY_ROWS.map(([label, value]) => {
      const row = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = label;
      const td = document.createElement("td");
      const shown = value(summary);
      td.textContent = shown === null || shown === undefined ? "–" : String(shown);
      row.append(th, td);
      return row;
    }),
  );
  elements.summary.hidden = false;
}

// -- ending ---------------------------------------------------------------------------

// Stop answering, tell the server (DELETE) unless it ended the session, close
// the connection, then wait a little for the server's summary.
function end(reason, weEndIt) {
  if (session.ending) return session.ending;
  session.ending = (async () => {
    session.running = false;
    session.frames?.cancel().catch(() => {});
    clearTimeout(session.stopTimer);
    elements.stop.disabled = true;
    tracker.endReason = reason;
    showNumbers();
    const tracked = tracker.state === "tracking";
    elements.status.textContent = `ending: ${reason}…`;
    if (weEndIt) await deleteResource();
    session.pc?.close();
    overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
    if (window.trackingSummary === null && session.events) {
      await waitFor(() => window.trackingSummary !== null, 5000);
    }
    session.events?.close();
    showNumbers();
    const summary = window.trackingSummary;
    if (summary) {
      const ratio = summary.answered_ratio == null ? "–" : `${(100 * summary.answered_ratio).toFixed(1)} %`;
      const mean = summary.error_px ? format(summary.error_px.mean) : "–";
      setState("ended", `ended (${reason}): ${ratio} answered, mean error ${mean} px`);
    } else if (tracked) {
      setState("ended", `ended (${reason}); the server sent no summary`);
    } else {
      setState("failed", `failed: ${reason}`);
    }
  })();
  return session.ending;
}

async function deleteResource() {
  const resource = session.resource;
  session.resource = null;
  if (!resource) return;
  try {
    await fetch(resource, { method: "DELETE", keepalive: true });
  } catch (error) {
    console.warn("DELETE failed:", error);
  }
}

function waitFor(condition, timeoutMs) {
  return new Promise((resolve) => {
    const started = performance.now();
    const poll = () => {
      if (condition() || performance.now() - started > timeoutMs) resolve();
      else setTimeout(poll, 50);
    };
    poll();
  });
}

function fail(message) {
  session.running = false;
  session.pc?.close();
  setState("failed", message);
}

elements.stop.addEventListener("click", () => end("stopped by the user", true));
// A closed tab must not leave a session behind on the server.
window.addEventListener("pagehide", () => {
  session.running = false;
  if (session.resource) {
    fetch(session.resource, { method: "DELETE", keepalive: true }).catch(() => {});
    session.resource = null;
  }
});
setInterval(() => {
  if (tracker.state === "tracking") showNumbers();
}, 250);

start().catch((error) => fail(`unexpected: ${error.message}`));
