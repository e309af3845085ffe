// A WHEP player (draft-ietf-wish-whep): POST an SDP offer, get 201 with the
// answer and a Location, DELETE that Location to stop. The server burns the
// true centre and the client's answer into the video itself, so what is seen
// is exactly what was scored.

import { iceConfiguration } from "./ice.js";

export class WhepPlayer {
  constructor(endpoint, video) {
    this.endpoint = endpoint;
    this.video = video;
    this.pc = null;
    this.location = null;
  }

  async start() {
    // The server's ICE servers (none unless it is given --ice-server).
    const pc = new RTCPeerConnection(await iceConfiguration());
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      this.video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc); // aiortc takes every candidate inside the SDP
    const response = await fetch(this.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      throw new Error(`${response.status}: ${(await response.text()).trim()}`);
    }
    this.location = new URL(response.headers.get("Location"), this.endpoint).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  }

  async stop() {
    const location = this.location;
    this.location = null;
    this.pc?.close();
    this.pc = null;
    this.video.srcObject = null;
    if (location) await fetch(location, { method: "DELETE", keepalive: true }).catch(() => {});
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
