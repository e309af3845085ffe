// Sub-pixel centre of a bright ball on a dark luma plane: the browser's twin
// of client/detection/detector.py (CentroidDetector), with its constants.
//
// The server draws the ball with a one-pixel linear coverage ramp,
// clip(radius + 0.5 - distance, 0, 1) * 255, pixel centres at integer
// coordinates, origin top-left. Its profile is radially symmetric about the
// true centre, so the intensity-weighted centroid of the whole ball is the
// centre; subtracting a constant FLOOR first keeps the profile symmetric while
// zeroing codec ringing and background noise.
//
// Steps:
// 1. The blob: pixels brighter than THRESHOLD, 8-connected; the largest
//    component over the whole frame wins (fewer than MIN_PIXELS pixels is a
//    speck, not a ball). No tracking window: one pass over a 640x480 frame
//    costs a fraction of a millisecond, and a stateless function cannot be
//    fooled by where the ball was before.
// 2. The weights: inside the blob's bounding box grown by PAD, only pixels
//    within PAD of the blob (its anti-aliased edge; other blobs are out),
//    each max(luma - FLOOR, 0).
// 3. The centre: the weighted centroid. A ball cut by the frame edge would
//    pull that centroid inwards (up to 0.4 radii), so when the ball's weight
//    reaches the outermost row or column, the partly covered edge pixels are
//    fitted with a circle instead (each one is a sub-pixel distance
//    measurement: |p - centre| = R - W c): an algebraic start, then a few
//    robust Gauss-Newton steps, as in client/detection/detector.py. A sliver too thin
//    to fit falls back to the centroid, which is then less accurate.
//
// Pure: findBall keeps no state between calls. Its scratch buffers are reused
// across calls for speed, so it is not re-entrant (JavaScript never is
// anyway, without workers sharing them).

export const THRESHOLD = 96; // blob membership only: luma > THRESHOLD
export const FLOOR = 28; // removed from every intensity before weighting
export const PAD = 3; // px the weights reach beyond the blob (its edge ramp)
// A blob needs this many pixels to be a ball. client/detection/detector.py asks for a
// contour area of 3 px², which a 2x4 block (8 pixels) just reaches.
export const MIN_PIXELS = 8;

const MIN_FIT_POINTS = 5; // fewer cannot pin a circle (three unknowns) down
const FREE_WIDTH_POINTS = 24; // from this many edge pixels on, the ramp width is fitted
const REFINE_ITERATIONS = 8;
const NOISE_FLOOR_PX = 0.05;

// -- scratch buffers, grown on demand ------------------------------------------

let labels = new Uint32Array(0); // per pixel: the component stamp that claimed it
let nextStamp = 1; // stamps >= frameBase belong to the current call
let stack = new Int32Array(0);
let mask = new Uint8Array(0);
let spread = new Uint8Array(0);

function ensureScratch(pixels, roiPixels) {
  if (labels.length < pixels) {
    labels = new Uint32Array(pixels);
    stack = new Int32Array(pixels);
    nextStamp = 1;
  }
  if (mask.length < roiPixels) {
    mask = new Uint8Array(roiPixels);
    spread = new Uint8Array(roiPixels);
  }
}

/**
 * The ball's centre {x, y} in pixel coordinates (pixel centres at integer
 * coordinates, origin top-left), or null when there is no ball.
 * `method` says how: "centroid" or "circle" (cut by the frame edge).
 *
 * luma: Uint8Array or Uint8ClampedArray, row r starting at r * stride.
 */
export function findBall(luma, width, height, stride = width) {
  if (!(width > 0 && height > 0 && stride >= width)) throw new RangeError("bad frame size");
  if (luma.length < (height - 1) * stride + width) throw new RangeError("luma too short");
  ensureScratch(width * height, 0);
  // Stamps only grow; wrap before they could overflow a uint32.
  if (nextStamp > 0xffffffff - width * height - 2) {
    labels.fill(0);
    nextStamp = 1;
  }
  const blob = largestBlob(luma, width, height, stride);
  if (blob === null) return null;
  return measure(luma, width, height, stride, blob);
}

// -- 1. the blob ---------------------------------------------------------------

function largestBlob(luma, width, height, stride) {
  const frameBase = nextStamp;
  let best = null;
  const visit = (x, y) => {
    if (labels[y * width + x] >= frameBase) return;
    const blob = flood(luma, width, height, stride, x, y, nextStamp++);
    if (best === null || blob.pixels > best.pixels) best = blob;
  };
  // Four pixels at a time where the rows allow it: a frame is almost all
  // black. Measured in Chromium 156 on the server's 640x480 frame: findBall
  // takes 0.2 ms with this, 0.7 ms reading byte by byte.
  const words = luma.byteOffset % 4 === 0 && stride % 4 === 0;
  const packed = words ? new Uint32Array(luma.buffer, luma.byteOffset, (stride * height) >> 2) : null;
  const wordsPerRow = stride >> 2;
  const fullWords = width >> 2;
  for (let y = 0; y < height; y++) {
    const row = y * stride;
    let x = 0;
    if (words) {
      const first = y * wordsPerRow;
      for (let k = 0; k < fullWords; k++) {
        const word = packed[first + k];
        // Some byte > 96: bytes >= 128 have their top bit set; 97..127 get it
        // by adding 31 to the low seven bits (no carry between bytes).
        if ((((word & 0x7f7f7f7f) + 0x1f1f1f1f) | word) & 0x80808080) {
          const at = k << 2;
          for (let i = at; i < at + 4; i++) if (luma[row + i] > THRESHOLD) visit(i, y);
        }
      }
      x = fullWords << 2;
    }
    for (; x < width; x++) if (luma[row + x] > THRESHOLD) visit(x, y);
  }
  return best !== null && best.pixels >= MIN_PIXELS ? best : null;
}

function flood(luma, width, height, stride, x0, y0, id) {
  let top = 0;
  stack[top++] = y0 * width + x0;
  labels[y0 * width + x0] = id;
  let pixels = 0;
  let left = x0, right = x0, upper = y0, lower = y0;
  while (top > 0) {
    const at = stack[--top];
    const y = (at / width) | 0;
    const x = at - y * width;
    pixels++;
    if (x < left) left = x;
    if (x > right) right = x;
    if (y < upper) upper = y;
    if (y > lower) lower = y;
    const yFrom = y > 0 ? y - 1 : 0, yTo = y < height - 1 ? y + 1 : y;
    const xFrom = x > 0 ? x - 1 : 0, xTo = x < width - 1 ? x + 1 : x;
    for (let ny = yFrom; ny <= yTo; ny++) {
      const row = ny * stride, labelRow = ny * width;
      for (let nx = xFrom; nx <= xTo; nx++) {
        if (labels[labelRow + nx] !== id && luma[row + nx] > THRESHOLD) {
          labels[labelRow + nx] = id;
          stack[top++] = labelRow + nx;
        }
      }
    }
  }
  // right and lower are half-open, like client/detection/detector.py's rects
  return { id, pixels, left, top: upper, right: right + 1, bottom: lower + 1 };
}

// -- 2. and 3. the centre ------------------------------------------------------

function measure(luma, width, height, stride, blob) {
  const x0 = Math.max(blob.left - PAD, 0), y0 = Math.max(blob.top - PAD, 0);
  const x1 = Math.min(blob.right + PAD, width), y1 = Math.min(blob.bottom + PAD, height);
  const w = x1 - x0, h = y1 - y0;
  ensureScratch(0, w * h);
  blobMask(w, h, x0, y0, width, blob.id);

  let m00 = 0, m10 = 0, m01 = 0;
  let touchesEdge = false;
  for (let j = 0; j < h; j++) {
    const row = (y0 + j) * stride + x0;
    let rowSum = 0, rowMoment = 0;
    for (let i = 0; i < w; i++) {
      if (!mask[j * w + i]) continue;
      const v = luma[row + i] - FLOOR;
      if (v <= 0) continue;
      rowSum += v;
      rowMoment += v * i;
    }
    if (rowSum > 0) {
      m00 += rowSum;
      m10 += rowMoment;
      m01 += rowSum * j;
      if ((j === 0 && y0 === 0) || (j === h - 1 && y1 === height)) touchesEdge = true;
    }
  }
  if (m00 === 0) return null; // cannot happen: every blob pixel is above FLOOR
  if (!touchesEdge && (x0 === 0 || x1 === width)) {
    for (let j = 0; j < h && !touchesEdge; j++) {
      const row = (y0 + j) * stride + x0;
      if (x0 === 0 && mask[j * w] && luma[row] > FLOOR) touchesEdge = true;
      if (x1 === width && mask[j * w + w - 1] && luma[row + w - 1] > FLOOR) touchesEdge = true;
    }
  }
  if (touchesEdge) {
    const centre = fitCircle(luma, stride, blob, x0, y0, x1, y1, width, height);
    if (centre !== null) return { x: centre[0], y: centre[1], method: "circle" };
  }
  return { x: x0 + m10 / m00, y: y0 + m01 / m00, method: "centroid" };
}

// mask[j * w + i] = 1 for ROI pixels within PAD (a square, like OpenCV's
// MORPH_RECT) of a pixel of the blob: a separable max filter.
function blobMask(w, h, x0, y0, width, id) {
  for (let j = 0; j < h; j++) {
    const labelRow = (y0 + j) * width + x0;
    let run = -1; // ROI column of the last blob pixel seen, looking left
    for (let i = 0; i < w; i++) {
      if (labels[labelRow + i] === id) run = i;
      spread[j * w + i] = run >= 0 && i - run <= PAD ? 1 : 0;
    }
    run = -1;
    for (let i = w - 1; i >= 0; i--) {
      if (labels[labelRow + i] === id) run = i;
      if (run >= 0 && run - i <= PAD) spread[j * w + i] = 1;
    }
  }
  for (let i = 0; i < w; i++) {
    let run = -1;
    for (let j = 0; j < h; j++) {
      if (spread[j * w + i]) run = j;
      mask[j * w + i] = run >= 0 && j - run <= PAD ? 1 : 0;
    }
    run = -1;
    for (let j = h - 1; j >= 0; j--) {
      if (spread[j * w + i]) run = j;
      if (run >= 0 && run - j <= PAD) mask[j * w + i] = 1;
    }
  }
}

// -- the circle fit for a ball cut by the frame edge --------------------------

function fitCircle(luma, stride, blob, x0, y0, x1, y1, width, height) {
  const w = x1 - x0, h = y1 - y0;
  // The edge band: mask pixels within PAD of a background pixel (which
  // leaves out the ball's interior along the frame edge).
  const band = new Uint8Array(w * h);
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      if (!mask[j * w + i]) continue;
      let near = false;
      for (let dj = -PAD; dj <= PAD && !near; dj++) {
        const jj = j + dj;
        if (jj < 0 || jj >= h) continue;
        const row = (y0 + jj) * stride + x0;
        for (let di = -PAD; di <= PAD; di++) {
          const ii = i + di;
          if (ii >= 0 && ii < w && luma[row + ii] <= THRESHOLD) {
            near = true;
            break;
          }
        }
      }
      band[j * w + i] = near ? 1 : 0;
    }
  }
  let topLevel = 0;
  for (let j = 0; j < h; j++) {
    const row = (y0 + j) * stride + x0;
    for (let i = 0; i < w; i++) if (band[j * w + i] && luma[row + i] > topLevel) topLevel = luma[row + i];
  }
  if (topLevel <= 2 * FLOOR) return null;

  const points = edgePoints(luma, stride, band, topLevel, x0, y0, x1, y1, width, height);
  if (points === null) return null;
  const n = points.length / 2;
  const cx0 = (w - 1) / 2, cy0 = (h - 1) / 2;
  const scale = Math.max(w, h) / 2;
  const u = new Float64Array(n), v = new Float64Array(n), c = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const i = points[2 * k], j = points[2 * k + 1];
    u[k] = (i - cx0) / scale;
    v[k] = (j - cy0) / scale;
    c[k] = luma[(y0 + j) * stride + x0 + i] / topLevel;
  }
  const onePixel = 1 / scale;
  let freeWidth = n >= FREE_WIDTH_POINTS;
  let start = algebraicCircle(u, v, c, freeWidth ? null : onePixel);
  if (start === null && freeWidth) {
    freeWidth = false;
    start = algebraicCircle(u, v, c, onePixel);
  }
  if (start === null) return null;
  const params = refineCircle(u, v, c, start, onePixel, freeWidth, NOISE_FLOOR_PX * onePixel);
  if (params === null) return null;
  const x = x0 + cx0 + params[0] * scale;
  const y = y0 + cy0 + params[1] * scale;
  const radius = params[2] * scale;
  // A sliver in a corner can let the fit run off to a huge or far-away
  // circle; the blob bounds what is plausible.
  const reach = radius + 1;
  const size = Math.max(blob.right - blob.left, blob.bottom - blob.top);
  if (
    !(radius >= 0.5 && radius <= 4 * size + 4) ||
    !(x >= blob.left - reach && x <= blob.right + reach) ||
    !(y >= blob.top - reach && y <= blob.bottom + reach)
  ) {
    return null;
  }
  return [x, y];
}

// ROI coordinates [i0, j0, i1, j1, ...] of the partly covered pixels in the
// band. Pixels within FLOOR of either level are left out (noise alone puts
// pixels there; a tiny arc gets half that margin). The frame's outermost rows
// and columns go while there are enough others: codecs treat borders apart.
function edgePoints(luma, stride, band, topLevel, x0, y0, x1, y1, width, height) {
  const w = x1 - x0, h = y1 - y0;
  for (const margin of [FLOOR, FLOOR >> 1]) {
    const low = margin + 1, high = topLevel - margin - 1;
    for (const inner of [true, false]) {
      const points = [];
      for (let j = 0; j < h; j++) {
        if (inner && ((j === 0 && y0 === 0) || (j === h - 1 && y1 === height))) continue;
        const row = (y0 + j) * stride + x0;
        for (let i = 0; i < w; i++) {
          if (inner && ((i === 0 && x0 === 0) || (i === w - 1 && x1 === width))) continue;
          const value = luma[row + i];
          if (band[j * w + i] && value >= low && value <= high) points.push(i, j);
        }
      }
      if (points.length / 2 >= MIN_FIT_POINTS) return points;
    }
  }
  return null;
}

// A starting centre from (u-cu)^2 + (v-cv)^2 = (R - W c)^2, linearised: with
// W free, linear in cu, cv, K = R^2 - cu^2 - cv^2, P = 2RW, Q = W^2; with W
// given, u^2 + v^2 - (W c)^2 = 2u cu + 2v cv + K - 2R (W c).
function algebraicCircle(u, v, c, ramp) {
  const m = ramp === null ? 5 : 4;
  const ata = new Float64Array(m * m), atb = new Float64Array(m);
  const row = new Float64Array(m);
  for (let k = 0; k < u.length; k++) {
    let target = u[k] * u[k] + v[k] * v[k];
    row[0] = 2 * u[k];
    row[1] = 2 * v[k];
    row[2] = 1;
    if (ramp === null) {
      row[3] = -c[k];
      row[4] = c[k] * c[k];
    } else {
      const wc = ramp * c[k];
      target -= wc * wc;
      row[3] = -2 * wc;
    }
    accumulate(ata, atb, row, target, 1, m);
  }
  const params = solve(ata, atb, m);
  return params === null ? null : [params[0], params[1]];
}

// Geometric fit of |p - centre| = R - W c by robust (Tukey) Gauss-Newton;
// returns [cu, cv, R].
function refineCircle(u, v, c, start, ramp, freeWidth, noiseFloor) {
  const n = u.length;
  let [cu, cv] = start;
  let w = ramp;
  const scratch = new Float64Array(n);
  for (let k = 0; k < n; k++) scratch[k] = Math.hypot(u[k] - cu, v[k] - cv) + w * c[k];
  let r = median(scratch);
  const m = freeWidth ? 4 : 3;
  const residual = new Float64Array(n);
  const ata = new Float64Array(m * m), atb = new Float64Array(m);
  const row = new Float64Array(m);
  for (let iteration = 0; iteration < REFINE_ITERATIONS; iteration++) {
    for (let k = 0; k < n; k++) {
      const dist = Math.max(Math.hypot(u[k] - cu, v[k] - cv), 1e-12);
      residual[k] = dist - (r - w * c[k]);
      scratch[k] = Math.abs(residual[k]);
    }
    const sigma = Math.max(1.4826 * median(scratch), noiseFloor);
    ata.fill(0);
    atb.fill(0);
    let voters = 0;
    for (let k = 0; k < n; k++) {
      const t = residual[k] / (4.685 * sigma);
      const weight = t * t < 1 ? (1 - t * t) ** 2 : 0;
      if (weight === 0) continue;
      voters++;
      const dx = u[k] - cu, dy = v[k] - cv;
      const dist = Math.max(Math.hypot(dx, dy), 1e-12);
      row[0] = -dx / dist;
      row[1] = -dy / dist;
      row[2] = -1;
      if (freeWidth) row[3] = c[k];
      accumulate(ata, atb, row, -residual[k], weight, m);
    }
    if (voters < MIN_FIT_POINTS) return null;
    const step = solve(ata, atb, m);
    if (step === null) return null;
    cu += step[0];
    cv += step[1];
    r += step[2];
    if (freeWidth) w += step[3];
    if (Math.abs(step[0]) + Math.abs(step[1]) < 1e-4 * ramp) break;
  }
  if (!(Number.isFinite(cu) && Number.isFinite(cv) && Number.isFinite(r)) || r <= 0) return null;
  return [cu, cv, r];
}

function accumulate(ata, atb, row, target, weight, m) {
  for (let a = 0; a < m; a++) {
    const wa = weight * row[a];
    atb[a] += wa * target;
    for (let b = 0; b < m; b++) ata[a * m + b] += wa * row[b];
  }
}

// The (upper) median; reorders `values`.
function median(values) {
  values.sort();
  return values[values.length >> 1];
}

// Gaussian elimination with partial pivoting; null if singular or not finite.
export function solve(matrix, rhs, m) {
  const a = Float64Array.from(matrix), b = Float64Array.from(rhs);
  for (let col = 0; col < m; col++) {
    let pivot = col;
    for (let r = col + 1; r < m; r++) if (Math.abs(a[r * m + col]) > Math.abs(a[pivot * m + col])) pivot = r;
    const p = a[pivot * m + col];
    if (!(Math.abs(p) > 1e-300)) return null;
    if (pivot !== col) {
      for (let k = 0; k < m; k++) [a[col * m + k], a[pivot * m + k]] = [a[pivot * m + k], a[col * m + k]];
      [b[col], b[pivot]] = [b[pivot], b[col]];
    }
    for (let r = col + 1; r < m; r++) {
      const f = a[r * m + col] / p;
      if (f === 0) continue;
      for (let k = col; k < m; k++) a[r * m + k] -= f * a[col * m + k];
      b[r] -= f * b[col];
    }
  }
  const x = new Float64Array(m);
  for (let r = m - 1; r >= 0; r--) {
    let s = b[r];
    for (let k = r + 1; k < m; k++) s -= a[r * m + k] * x[k];
    x[r] = s / a[r * m + r];
    if (!Number.isFinite(x[r])) return null;
  }
  return x;
}
