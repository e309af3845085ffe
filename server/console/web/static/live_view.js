// The console's live view of one session: a WHEP player (whep.js). The
// server burns the true centre and the client's answer into the video
// itself, so what is seen is exactly what was scored.

import { accept, createPeerConnection, deleteResource, postOffer } from "./whep.js";

export class WhepPlayer {
  constructor(endpoint, video) {
    this.endpoint = endpoint;
    this.video = video;
    this.pc = null;
    this.location = null;
  }

  async start() {
    const pc = await createPeerConnection();
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      this.video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    };
    const { resource, answer } = await postOffer(pc, this.endpoint);
    this.location = resource;
    await accept(pc, answer);
  }

  async stop() {
    const location = this.location;
    this.location = null;
    this.pc?.close();
    this.pc = null;
    this.video.srcObject = null;
    await deleteResource(location);
  }
}
