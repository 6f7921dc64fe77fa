// Recordings: the API calls of the camera page's player and the pure
// timeline arithmetic it draws with (tested in recordings.test.ts).
import { cameraPath, client, getToken, unwrap, type Schemas } from './api';

export type RecordingList = Schemas['RecordingList'];
export type RecordingSegment = Schemas['RecordingSegment'];

/** A continuous recorded stretch, in epoch milliseconds. */
export interface Span {
  start: number;
  end: number;
}

/** Segments closer than this are one span (the server's gap tolerance). */
const JOIN_MS = 500;

export async function listRecordings(id: string, since: Date, until: Date): Promise<RecordingList> {
  return unwrap(
    await client.GET('/api/v1/cameras/{id}/recordings', {
      params: { path: { id }, query: { since: since.toISOString(), until: until.toISOString() } },
    }),
  );
}

/** The export URL of a range; it carries the token because a <video> element or a download link cannot send headers. */
export function exportURL(id: string, since: number, until: number): string {
  const q = new URLSearchParams({ since: new Date(since).toISOString(), until: new Date(until).toISOString() });
  const token = getToken();
  if (token) q.set('token', token);
  return `${cameraPath(id)}/recordings/export?${q.toString()}`;
}

/** Joins segments (sorted by start) into continuous spans. */
export function spansOf(segments: Pick<RecordingSegment, 'start' | 'end'>[]): Span[] {
  const out: Span[] = [];
  for (const s of segments) {
    const start = Date.parse(s.start);
    const end = Date.parse(s.end);
    if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start) continue;
    const last = out[out.length - 1];
    if (last && start - last.end <= JOIN_MS) last.end = Math.max(last.end, end);
    else out.push({ start, end });
  }
  return out;
}

/** The recorded span holding t, or the next one after it; null past the last. */
export function spanAtOrAfter(spans: Span[], t: number): Span | null {
  for (const s of spans) if (t < s.end) return s;
  return null;
}

/**
 * The range to play when the user picks time t: from t (or the start of the
 * next recorded span) up to maxMs later, within that span.
 */
export function playRange(spans: Span[], t: number, maxMs: number): Span | null {
  const s = spanAtOrAfter(spans, t);
  if (!s) return null;
  const start = Math.max(t, s.start);
  const end = Math.min(s.end, start + maxMs);
  return end > start ? { start, end } : null;
}

/** Position of t on a timeline of width 1 covering [from, to]. */
export function fraction(t: number, from: number, to: number): number {
  if (to <= from) return 0;
  return Math.min(1, Math.max(0, (t - from) / (to - from)));
}

export function formatClock(t: number): string {
  const d = new Date(t);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
