// Reading a decoded frame's luma: what findBall() (ball_finder.js) looks at.
//
// Measured in headless Chromium 156 (--disable-gpu) on this 2-core machine,
// 640x480 VP8 from aiortc at 30 fps, mean per frame over 10 s runs, each
// method run 2-3 times (the spread is the machine's other load):
//   videoframe  new VideoFrame(video) + copyTo (I420: Y plane as is)  0.17-0.21 ms
//   canvas      2d canvas, willReadFrequently, drawImage+getImageData  2.9-3.4 ms
//   offscreen   the same on an OffscreenCanvas                         2.9-6.1 ms
// so videoframe is the default. It also gives the codec's own luma rather
// than an RGB conversion of it, and the frame's own RTP timestamp.
//
// Every reader resolves with { luma, width, height, stride, rtpTimestamp };
// rtpTimestamp is undefined where the source has none.

export class VideoFrameReader {
  name = "videoframe";
  buffer = new Uint8Array(0);
  luma = new PackedLuma(); // for RGB-like formats
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
    return { ...this.luma.extract(this.buffer, layout[0], rect.width, rect.height, channel), rtpTimestamp };
  }
}

export class CanvasReader {
  constructor(offscreen) {
    this.name = offscreen ? "offscreen" : "canvas";
    this.canvas = offscreen ? new OffscreenCanvas(1, 1) : document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true, alpha: false });
    this.luma = new PackedLuma();
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
    const plane = { offset: 0, stride: 4 * width };
    return { ...this.luma.extract(image.data, plane, width, height, 0), rtpTimestamp };
  }
}

// One channel of four-byte pixels (grey content: R = G = B) as a luma
// plane, in a buffer kept from frame to frame.
class PackedLuma {
  buffer = new Uint8Array(0);

  extract(bytes, plane, width, height, channel) {
    if (this.buffer.length < width * height) this.buffer = new Uint8Array(width * height);
    const luma = this.buffer;
    const aligned = (bytes.byteOffset + plane.offset) % 4 === 0 && plane.stride % 4 === 0;
    const shift = 8 * channel; // little-endian: channel 0 is the low byte
    for (let y = 0; y < height; y++) {
      const out = y * width;
      if (aligned) {
        const words = new Uint32Array(bytes.buffer, bytes.byteOffset + plane.offset + y * plane.stride, width);
        for (let x = 0; x < width; x++) luma[out + x] = (words[x] >>> shift) & 0xff;
      } else {
        const row = plane.offset + y * plane.stride + channel;
        for (let x = 0; x < width; x++) luma[out + x] = bytes[row + 4 * x];
      }
    }
    return { luma, width, height, stride: width };
  }
}

// ?read=NAME: how the pixels are read.
export const READERS = {
  videoframe: () => new VideoFrameReader(),
  canvas: () => new CanvasReader(false),
  offscreen: () => new CanvasReader(true),
};
export const DEFAULT_READER = "videoframe";
