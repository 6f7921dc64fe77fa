// Canvas drawing of detection boxes over the video.
import { containRect, scaleBoxes, type Detection, type OverlayResult } from './overlay';

const COLORS = ['#22d3ee', '#f59e0b', '#a3e635', '#f472b6', '#818cf8', '#fb7185', '#34d399', '#facc15'];

function colorFor(key: string): string {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
  return COLORS[Math.abs(h) % COLORS.length];
}

/** How a result is drawn: its boxes (moved, for a late result) and whether they are late. */
export interface DrawOptions {
  detections?: Detection[];
  /** The result's frame was shown before it arrived: dashed boxes labelled "late". */
  late?: boolean;
}

/**
 * Sizes the canvas to the video element (in device pixels), clears it and
 * draws result's boxes (if any) onto the displayed picture. Returns the
 * number of boxes drawn.
 */
export function drawOverlay(canvas: HTMLCanvasElement, video: HTMLVideoElement, result: OverlayResult | null, opts: DrawOptions = {}): number {
  const cssW = video.clientWidth;
  const cssH = video.clientHeight;
  const dpr = window.devicePixelRatio || 1;
  const pw = Math.max(1, Math.round(cssW * dpr));
  const ph = Math.max(1, Math.round(cssH * dpr));
  if (canvas.width !== pw) canvas.width = pw;
  if (canvas.height !== ph) canvas.height = ph;
  const ctx = canvas.getContext('2d');
  if (!ctx) return 0;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, pw, ph);
  if (!result) return 0;
  const shown = opts.detections ? { ...result, detections: opts.detections } : result;
  if (shown.detections.length === 0) return 0;

  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const rect = containRect(cssW, cssH, video.videoWidth, video.videoHeight);
  const boxes = scaleBoxes(shown, rect);
  const font = 13;
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  ctx.lineWidth = 2;
  ctx.setLineDash(opts.late ? [6, 4] : []);
  for (const b of boxes) {
    const key = b.detection.track_id ? `t${b.detection.track_id}` : (b.detection.label ?? '');
    const color = colorFor(key);
    ctx.strokeStyle = color;
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    const label = opts.late ? `late · ${b.label}` : b.label;
    const tw = ctx.measureText(label).width + 8;
    const th = font + 6;
    const ly = b.y - th >= rect.y ? b.y - th : b.y; // above the box, inside when at the top edge
    ctx.fillStyle = color;
    ctx.fillRect(b.x - 1, ly, tw, th);
    ctx.fillStyle = '#0b1020';
    ctx.fillText(label, b.x + 3, ly + 3);
  }
  return boxes.length;
}
