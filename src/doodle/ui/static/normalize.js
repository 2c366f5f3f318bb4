// Strokes -> the 784 bytes the model expects, made the way the Quick Draw bitmaps were:
// the drawing is scaled to a 256 px box and rendered with a fixed line width, then
// cropped to its ink, area-resampled so its longer side is 26 px, centred in 28x28
// and contrast-stretched. The second half is an exact port of
// doodle.imaging.normalize_drawing (integer arithmetic), so both give the same bytes.
"use strict";

const DoodleNormalize = (() => {
  const SIDE = 28;
  const INK_SIDE = 26;
  const BOX = 255; // the drawing's longer side, in render pixels
  const LINE_WIDTH = 13; // in render pixels: traced Quick Draw strokes then carry the ink mass of the originals
  const PAD = LINE_WIDTH;

  // strokes: [[{x, y}, ...], ...] in any units -> {width, height, pixels: Uint8Array}, ink high.
  function render(strokes) {
    const points = strokes.flat();
    if (points.length === 0) return null;
    const xs = points.map((p) => p.x);
    const ys = points.map((p) => p.y);
    const minX = Math.min(...xs);
    const minY = Math.min(...ys);
    const extent = Math.max(Math.max(...xs) - minX, Math.max(...ys) - minY);
    const scale = extent > 0 ? BOX / extent : 1;
    // A lone dot is widened to the ink box, so the result never needs upscaling.
    const lineWidth = extent > 0 ? LINE_WIDTH : INK_SIDE;
    const size = BOX + 2 * PAD + 1;
    const canvas = document.createElement("canvas");
    canvas.width = size;
    canvas.height = size;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, size, size);
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = lineWidth;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const stroke of strokes) {
      const at = (p) => [PAD + (p.x - minX) * scale, PAD + (p.y - minY) * scale];
      if (stroke.length === 1) {
        const [x, y] = at(stroke[0]);
        ctx.beginPath();
        ctx.arc(x, y, lineWidth / 2, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.beginPath();
      ctx.moveTo(...at(stroke[0]));
      for (const p of stroke.slice(1)) ctx.lineTo(...at(p));
      ctx.stroke();
    }
    const rgba = ctx.getImageData(0, 0, size, size).data;
    const pixels = new Uint8Array(size * size);
    for (let i = 0; i < pixels.length; i++) pixels[i] = rgba[4 * i];
    return { width: size, height: size, pixels };
  }

  // floor((2n + d) / 2d) for non-negative integers, exact: rounding half up.
  function roundDiv(n, d) {
    const a = 2 * n + d;
    const b = 2 * d;
    let q = Math.floor(a / b);
    while (q * b > a) q--;
    while ((q + 1) * b <= a) q++;
    return q;
  }

  // Integer weights (INK_SIDE x length) that area-resample length pixels to INK_SIDE.
  function areaWeights(length) {
    const weights = [];
    for (let i = 0; i < INK_SIDE; i++) {
      const row = new Float64Array(length);
      for (let j = 0; j < length; j++) {
        const lo = Math.max(INK_SIDE * j, length * i);
        const hi = Math.min(INK_SIDE * (j + 1), length * (i + 1));
        row[j] = Math.max(0, hi - lo);
      }
      weights.push(row);
    }
    return weights;
  }

  // {width, height, pixels} -> Uint8Array(784), or null when there is no ink.
  function normalize({ width, height, pixels }) {
    let top = height, bottom = -1, left = width, right = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (pixels[y * width + x] > 0) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
      }
    }
    if (bottom < 0) return null;
    const h = bottom - top + 1;
    const w = right - left + 1;
    const length = Math.max(h, w);
    if (length < INK_SIDE) throw new Error("ink box smaller than 26 px: render() never makes one");
    const offY = Math.floor((length - h) / 2);
    const offX = Math.floor((length - w) / 2);
    const square = (y, x) => {
      const sy = y - offY;
      const sx = x - offX;
      return sy >= 0 && sy < h && sx >= 0 && sx < w ? pixels[(top + sy) * width + left + sx] : 0;
    };
    const weights = areaWeights(length);
    // columns first: (length x INK_SIDE) = square @ weights^T
    const half = [];
    for (let y = 0; y < length; y++) {
      const row = new Float64Array(INK_SIDE);
      for (let x = 0; x < length; x++) {
        const value = square(y, x);
        if (value === 0) continue;
        for (let j = 0; j < INK_SIDE; j++) row[j] += value * weights[j][x];
      }
      half.push(row);
    }
    const scaled = new Float64Array(INK_SIDE * INK_SIDE);
    let peak = 0;
    for (let i = 0; i < INK_SIDE; i++) {
      for (let j = 0; j < INK_SIDE; j++) {
        let sum = 0;
        for (let y = 0; y < length; y++) sum += weights[i][y] * half[y][j];
        const value = roundDiv(sum, length * length);
        scaled[i * INK_SIDE + j] = value;
        peak = Math.max(peak, value);
      }
    }
    if (peak === 0) return null;
    const out = new Uint8Array(SIDE * SIDE);
    for (let i = 0; i < INK_SIDE; i++) {
      for (let j = 0; j < INK_SIDE; j++) {
        out[(i + 1) * SIDE + j + 1] = roundDiv(scaled[i * INK_SIDE + j] * 255, peak);
      }
    }
    return out;
  }

  function toBase64(bytes) {
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }

  return { render, normalize, toBase64, SIDE };
})();
