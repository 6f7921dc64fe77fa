// Pure overlay logic: parsing detection results from the data channel
// and mapping result coordinates onto the displayed video (matching them to
// frames is playout.ts).
// Nothing here touches the DOM, so it is unit-tested under Node (overlay.test.ts).

export interface Detection {
  x: number;
  y: number;
  w: number;
  h: number;
  label?: string;
  score?: number;
  track_id?: number;
}

/** One message of the "results" data channel. */
export interface OverlayResult {
  /** RTP timestamp (90 kHz, uint32) of the video frame the detections belong to. */
  rtp_timestamp: number;
  pts?: number;
  /** Size of the frame the box coordinates refer to (pixels). */
  width: number;
  height: number;
  detections: Detection[];
}

/** Video RTP clock rate. */
export const RTP_CLOCK_HZ = 90_000;

/**
 * a − b on the 32-bit RTP timestamp circle, as a signed int32: positive when
 * a is after b, negative when before, correct across the 2^32 wrap-around.
 */
export function rtpDiff(a: number, b: number): number {
  return ((a >>> 0) - (b >>> 0)) | 0;
}

function finite(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/**
 * Validates one decoded data-channel message. Returns null for anything that
 * is not a usable result; malformed detections are dropped individually.
 */
export function parseResult(raw: unknown): OverlayResult | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const o = raw as Record<string, unknown>;
  if (!finite(o.rtp_timestamp) || !finite(o.width) || !finite(o.height)) return null;
  if (o.width <= 0 || o.height <= 0) return null;
  const dets: Detection[] = [];
  if (Array.isArray(o.detections)) {
    for (const d of o.detections as unknown[]) {
      if (typeof d !== 'object' || d === null) continue;
      const b = d as Record<string, unknown>;
      if (!finite(b.x) || !finite(b.y) || !finite(b.w) || !finite(b.h)) continue;
      const det: Detection = { x: b.x, y: b.y, w: b.w, h: b.h };
      if (typeof b.label === 'string') det.label = b.label;
      if (finite(b.score)) det.score = b.score;
      if (finite(b.track_id)) det.track_id = b.track_id;
      dets.push(det);
    }
  }
  const out: OverlayResult = {
    rtp_timestamp: o.rtp_timestamp >>> 0,
    width: o.width,
    height: o.height,
    detections: dets,
  };
  if (finite(o.pts)) out.pts = o.pts;
  return out;
}

/** Decodes a data-channel payload: one result object, or an array of them. */
export function parseMessage(text: string): OverlayResult[] {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return [];
  }
  const list = Array.isArray(v) ? v : [v];
  const out: OverlayResult[] = [];
  for (const item of list) {
    const r = parseResult(item);
    if (r) out.push(r);
  }
  return out;
}

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/**
 * Where a videoW×videoH picture lands inside an elemW×elemH element with
 * object-fit: contain (centered, letter- or pillar-boxed).
 */
export function containRect(elemW: number, elemH: number, videoW: number, videoH: number): Rect {
  if (elemW <= 0 || elemH <= 0) return { x: 0, y: 0, w: 0, h: 0 };
  if (videoW <= 0 || videoH <= 0) return { x: 0, y: 0, w: elemW, h: elemH };
  const scale = Math.min(elemW / videoW, elemH / videoH);
  const w = videoW * scale;
  const h = videoH * scale;
  return { x: (elemW - w) / 2, y: (elemH - h) / 2, w, h };
}

export interface ScreenBox extends Rect {
  label: string;
  detection: Detection;
}

/** Maps a result's boxes (pixels of result.width×height) into the displayed picture rect. */
export function scaleBoxes(result: OverlayResult, display: Rect): ScreenBox[] {
  const sx = display.w / result.width;
  const sy = display.h / result.height;
  return result.detections.map((d) => ({
    x: display.x + d.x * sx,
    y: display.y + d.y * sy,
    w: d.w * sx,
    h: d.h * sy,
    label: boxLabel(d),
    detection: d,
  }));
}

/** "person 90%" / "person #3 90%" */
export function boxLabel(d: Detection): string {
  const parts: string[] = [d.label && d.label.length > 0 ? d.label : 'object'];
  if (d.track_id !== undefined && d.track_id > 0) parts.push(`#${d.track_id}`);
  if (d.score !== undefined) parts.push(`${Math.round(d.score * 100)}%`);
  return parts.join(' ');
}
