// The browser tracking client (/track): receives the server's ball over
// WebRTC (WHEP-style signalling, no trickle: whep.js), finds the ball's
// centre in every decoded frame (frame_readers.js, ball_finder.js) and
// answers on the "coordinates" data channel with {rtp_timestamp, x, y}, like
// client/client.py. The server scores each answer; its numbers come back
// over server-sent events (scores.js). What the page shows: track_view.js.
//
// URL parameters:
//   ?seconds=N              stop after N seconds of tracking (default: until closed)
//   ?jitterBufferTarget=ms  the receiver's jitter buffer target: 0 unless given;
//                           "default" leaves Chromium's own
//   ?read=videoframe|canvas|offscreen  how the pixels are read (frame_readers.js)
//   ?frames=video|processor where frames come from (see onFrame)
//   ?relay=1                only relayed ICE paths (ice.js)
//
// For tests: document.body.dataset.state is connecting | tracking | ended |
// failed; window.tracker holds the counters; window.trackingSummary the
// server's summary once the session has ended.

import { findBall } from "./ball_finder.js";
import { format } from "./chart.js";
import { CanvasReader, DEFAULT_READER, READERS, VideoFrameReader } from "./frame_readers.js";
import { ScoreTally, answeredPercent, followScores } from "./scores.js";
import {
  chartPoints, clearOverlay, drawOverlay, showFramesFallback, showIcePath, showNumbers,
  showSession, showState, showStatus, showSummary, stopButton, video,
} from "./track_view.js";
import { iceConfiguration, iceFailure, selectedPath } from "./ice.js";
import {
  WhepRefused, accept, createPeerConnection, deleteResource, postOffer,
} from "./whep.js";

const params = new URLSearchParams(location.search);

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
const scores = new ScoreTally();

function setState(state, message) {
  tracker.state = state;
  if (message !== undefined) tracker.message = message;
  showState(state, message);
}

function skip(reason) {
  tracker.framesSkipped++;
  tracker.skipped[reason]++;
}

// The server's scores so far, into the counters.
function takeScores() {
  tracker.answersScored = scores.answersScored;
  tracker.errorMean = scores.errorMean;
  tracker.errorLast = scores.errorLast;
}

function refreshNumbers() {
  takeScores();
  tracker.latencyP50 = scores.latencyP50();
  showNumbers(tracker);
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
    showFramesFallback();
  }

  let configuration;
  try {
    configuration = await iceConfiguration(params);
  } catch (error) {
    return fail(`cannot get the ICE servers: ${error.message}`);
  }
  const pc = await createPeerConnection(configuration);
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
        showIcePath(path);
      });
    }
    if ((state === "failed" || state === "closed") && session.running) {
      const why = tracker.icePath ? `connection ${state}` : iceFailure(pc, configuration);
      end(why, false);
    }
  };

  let offered;
  try {
    offered = await postOffer(pc, "/api/track/whep");
  } catch (error) {
    if (!(error instanceof WhepRefused)) return fail(`cannot reach the server: ${error.message}`);
    const why = error.status === 503 ? "the server is busy" : "the server refused";
    return fail(`${why} (${error.status}): ${error.reason}`);
  }
  session.resource = offered.resource;
  tracker.sessionId = offered.response.headers.get("X-Session-Id");
  showSession(tracker.sessionId);
  try {
    await accept(pc, offered.answer);
  } catch (error) {
    endResource();
    return fail(`the server's answer does not fit: ${error.message}`);
  }
  if (tracker.sessionId) followTheScores(tracker.sessionId);
  session.running = true;
  stopButton.disabled = false;
  showStatus("waiting for the first frame…");
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
    showStatus(`tracking for ${seconds} s`);
  }
}

// -- the server's scores ---------------------------------------------------------------

function followTheScores(sessionId) {
  session.events = followScores(sessionId, {
    onPoints(points) {
      for (const point of points) scores.add(point);
      takeScores();
      chartPoints(points);
    },
    onEnded(summary) {
      window.trackingSummary = summary;
      showSummary(summary);
      // The server ended it (its duration, shutdown) or confirms our DELETE.
      end(summary.end_reason ?? "the session has ended", false);
    },
    quiet: () => session.ending !== null,
  });
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
    stopButton.disabled = true;
    tracker.endReason = reason;
    refreshNumbers();
    const tracked = tracker.state === "tracking";
    showStatus(`ending: ${reason}…`);
    if (weEndIt) await endResource();
    session.pc?.close();
    clearOverlay();
    if (window.trackingSummary === null && session.events) {
      await waitFor(() => window.trackingSummary !== null, 5000);
    }
    session.events?.close();
    refreshNumbers();
    const summary = window.trackingSummary;
    if (summary) {
      const ratio = answeredPercent(summary) ?? "–";
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

// DELETE the session's resource, once.
function endResource() {
  const resource = session.resource;
  session.resource = null;
  return deleteResource(resource);
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

stopButton.addEventListener("click", () => end("stopped by the user", true));
// A closed tab must not leave a session behind on the server.
window.addEventListener("pagehide", () => {
  session.running = false;
  endResource();
});
setInterval(() => {
  if (tracker.state === "tracking") refreshNumbers();
}, 250);

start().catch((error) => fail(`unexpected: ${error.message}`));
