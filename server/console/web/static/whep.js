// WHEP (draft-ietf-wish-whep) as both pages speak it: POST an SDP offer with
// every candidate inside (no trickle), get 201 with the answer and a
// Location, DELETE that Location to stop. The console's live views and the
// /track page differ only in what they add to the connection and do with
// the answer.

import { iceConfiguration } from "./ice.js";

// The one place the pages build their peer connection: with the server's ICE
// servers (ice.js; none unless it is given --ice-server), or with
// ``configuration`` when the caller already fetched them.
export async function createPeerConnection(configuration = null) {
  return new RTCPeerConnection(configuration ?? (await iceConfiguration()));
}

// The server's refusal of an offer: its status and the reason it gave.
export class WhepRefused extends Error {
  constructor(status, reason) {
    super(`${status}: ${reason}`);
    this.name = "WhepRefused";
    this.status = status;
    this.reason = reason;
  }
}

// Offer what `pc` has been given to `endpoint`. Resolves with the resource to
// DELETE, the answer's SDP and the response (for its other headers); throws
// WhepRefused for anything but 201, and fetch's own error when the server
// cannot be reached. The answer is not applied: see accept().
export async function postOffer(pc, endpoint) {
  const url = new URL(endpoint, location.href).href;
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc); // aiortc takes every candidate inside the SDP
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  const body = (await response.text()).trim();
  if (response.status !== 201) throw new WhepRefused(response.status, body);
  return {
    resource: new URL(response.headers.get("Location"), url).href,
    answer: body + "\r\n",
    response,
  };
}

// Apply the answer postOffer() got.
export function accept(pc, answer) {
  return pc.setRemoteDescription({ type: "answer", sdp: answer });
}

// End the resource on the server. keepalive: it also goes out from a page
// being closed. Never throws: the server times a silent viewer out anyway.
export async function deleteResource(resource) {
  if (!resource) return;
  try {
    await fetch(resource, { method: "DELETE", keepalive: true });
  } catch (error) {
    console.warn("DELETE failed:", error);
  }
}

// Resolves once ICE gathering is complete (WHEP here has no trickle), or after 2 s.
export function gatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000); // whatever was gathered by then
  });
}
