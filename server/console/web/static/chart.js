// A small time-series chart on a canvas: the last `windowSeconds` of one
// measure, with a labelled y axis. No library: the console must work offline.

export class TimeChart {
  constructor(canvas, { title, unit, colour, windowSeconds = 30 }) {
    this.canvas = canvas;
    this.title = title;
    this.unit = unit;
    this.colour = colour;
    this.windowSeconds = windowSeconds;
    this.points = []; // [t seconds, value], oldest first
  }

  add(t, value) {
    if (value === null || value === undefined) return;
    this.points.push([t, value]);
    const oldest = t - this.windowSeconds;
    while (this.points.length && this.points[0][0] < oldest) this.points.shift();
  }

  clear() {
    this.points = [];
    this.draw();
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    const left = 56, right = 10, top = 24, bottom = 24;
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#e6e9ee";
    const last = this.points.at(-1);
    const latest = last ? ` — now ${format(last[1])} ${this.unit}` : "";
    ctx.fillText(`${this.title} (${this.unit}), last ${this.windowSeconds} s${latest}`, left, 15);

    const values = this.points.map(([, v]) => v);
    const top_value = niceCeiling(Math.max(...values, 0));
    const newest = last ? last[0] : 0;
    const x = (t) => left + ((t - (newest - this.windowSeconds)) / this.windowSeconds) * (width - left - right);
    const y = (v) => height - bottom - (v / top_value) * (height - top - bottom);

    ctx.strokeStyle = "#2c333d";
    ctx.fillStyle = "#8b95a3";
    for (const fraction of [0, 0.5, 1]) {
      const value = top_value * fraction;
      ctx.beginPath();
      ctx.moveTo(left, y(value));
      ctx.lineTo(width - right, y(value));
      ctx.stroke();
      ctx.fillText(format(value), 4, y(value) + 4);
    }
    ctx.fillText(`-${this.windowSeconds} s`, left, height - 6);
    ctx.fillText("now", width - right - 22, height - 6);

    ctx.strokeStyle = this.colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    this.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
  }
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

export function format(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 100) return value.toFixed(0);
  if (value >= 1) return value.toFixed(1);
  return value.toFixed(3);
}
