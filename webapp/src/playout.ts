// Pure playout logic of the live page: how long the browser holds video so a
// frame's detection result has arrived when the frame is shown (the p95 of
// the results' lag behind their frames, plus a margin), and which result is
// drawn on a presented frame: exact (the frame it carries), late (its frame
// was already shown; drawn marked, moved by its track's motion) or dropped.
// Nothing here touches the DOM, so it is unit-tested under Node (playout.test.ts).
import { RTP_CLOCK_HZ, rtpDiff, type Detection, type OverlayResult } from './overlay';

/** Milliseconds per 90 kHz RTP tick. */
const MS_PER_TICK = 1000 / RTP_CLOCK_HZ;

/** Tunables of the adaptive playout delay and of late results. */
export interface PlayoutSettings {
  /** Smallest jitter-buffer target while results are expected (ms). */
  floorMs: number;
  /** Largest jitter-buffer target, however late results come (ms). */
  ceilingMs: number;
  /** Added to the p95 result lag (ms). */
  marginMs: number;
  /** Lag samples needed before the target follows them; until then it is floorMs. */
  minSamples: number;
  /** A result whose frame is older than this behind the presented frame is dropped, not drawn late (ms). */
  lateMaxAgeMs: number;
  /** How long a drawn result stays on the following frames, until the next one (ms). */
  holdMs: number;
}

/**
 * Defaults: the demo's detector publishes within ~60-80 ms, so the target
 * settles near 110-130 ms. The margin is wide because Chromium holds video
 * some 30 ms less than the jitterBufferTarget asked for (measured with
 * scripts/bench/glass-to-glass.sh: target 84 ms, held 54 ms): with 20 ms,
 * 14% of the boxes came after their frame.
 */
export const DEFAULT_PLAYOUT: PlayoutSettings = {
  floorMs: 0,
  ceilingMs: 400,
  marginMs: 50,
  minSamples: 5,
  lateMaxAgeMs: 300,
  holdMs: 500,
};

const SETTING_PARAMS: Record<string, keyof PlayoutSettings> = {
  playout_floor: 'floorMs',
  playout_ceiling: 'ceilingMs',
  playout_margin: 'marginMs',
  late_max_age: 'lateMaxAgeMs',
  overlay_hold: 'holdMs',
};

/** Upper bound of every setting: the browser's jitterBufferTarget range ends at 4 s. */
const MAX_SETTING_MS = 4000;

/**
 * Reads overrides from a page's query string (?playout_floor=50&playout_ceiling=300
 * &playout_margin=20&late_max_age=300&overlay_hold=500, in ms); values that are not
 * numbers in 0…4000 are ignored, and a ceiling below the floor is raised to it.
 */
export function playoutSettingsFrom(query: string, base: PlayoutSettings = DEFAULT_PLAYOUT): PlayoutSettings {
  const out = { ...base };
  const params = new URLSearchParams(query);
  for (const [param, key] of Object.entries(SETTING_PARAMS)) {
    const raw = params.get(param);
    if (raw === null || raw.trim() === '') continue;
    const v = Number(raw);
    if (Number.isFinite(v) && v >= 0 && v <= MAX_SETTING_MS) out[key] = v;
  }
  if (out.ceilingMs < out.floorMs) out.ceilingMs = out.floorMs;
  return out;
}

/** Sliding window of lag samples (ms) with its 95th percentile. */
export class LagEstimator {
  private readonly samples: number[];
  private readonly sorted: number[];
  private next = 0;
  private n = 0;

  constructor(readonly window = 100) {
    this.samples = new Array<number>(Math.max(1, window)).fill(0);
    this.sorted = [];
  }

  add(ms: number): void {
    if (!Number.isFinite(ms)) return;
    this.samples[this.next] = ms;
    this.next = (this.next + 1) % this.samples.length;
    if (this.n < this.samples.length) this.n++;
  }

  get count(): number {
    return this.n;
  }

  /** Nearest-rank percentile p (0…100) of the window, null when empty. */
  percentile(p: number): number | null {
    if (this.n === 0) return null;
    this.sorted.length = 0;
    for (let i = 0; i < this.n; i++) this.sorted.push(this.samples[i]);
    this.sorted.sort((a, b) => a - b);
    const rank = Math.min(this.n, Math.max(1, Math.ceil((p / 100) * this.n)));
    return this.sorted[rank - 1];
  }

  p95(): number | null {
    return this.percentile(95);
  }

  clear(): void {
    this.n = 0;
    this.next = 0;
  }
}

/**
 * The jitter-buffer target (ms) for the live video: 0 (the browser's own
 * minimum) when no results are coming (no pipeline, or detection switched
 * off), else the p95 lag plus the margin, kept within floor and ceiling; the
 * floor until enough lag samples are in.
 */
export function playoutTargetMs(
  resultsExpected: boolean,
  lag: { p95: number | null; count: number },
  s: PlayoutSettings = DEFAULT_PLAYOUT,
): number {
  if (!resultsExpected) return 0;
  if (lag.p95 === null || lag.count < s.minSamples) return s.floorMs;
  const want = Math.max(0, lag.p95) + s.marginMs;
  return Math.round(Math.min(s.ceilingMs, Math.max(s.floorMs, want)));
}

/** Presented frames and unmatched results remembered by LagMatcher. */
const LAG_MATCH_KEPT = 64;

/**
 * Measures each result's lag exactly: its arrival minus the arrival of its
 * own frame (the receiveTime the browser reports when it presents the frame
 * with that RTP timestamp). A result that arrives before its frame is shown
 * (the normal case while video is held) waits for the frame; one whose frame
 * was shown already is matched at once. Unlike an estimate from the RTP
 * clock rate this does not depend on the sender's clock keeping pace with the wall clock:
 * a stalled sender or a burst of frames would otherwise count as lag, and a
 * larger target would hold more such error (the estimate fed on itself).
 */
export class LagMatcher {
  private readonly frames = new Map<number, number>();
  private readonly results = new Map<number, number>();

  /** A presented frame; returns the lag of the result that waited for it, else null. */
  frame(rtp: number, receivedMs: number): number | null {
    const key = rtp >>> 0;
    remember(this.frames, key, receivedMs);
    const arrived = this.results.get(key);
    if (arrived === undefined) return null;
    this.results.delete(key);
    return arrived - receivedMs;
  }

  /** A result for the frame rtp, arrived at arrivedMs; its lag when its frame was shown already, else null (it waits). */
  result(rtp: number, arrivedMs: number): number | null {
    const key = rtp >>> 0;
    const received = this.frames.get(key);
    if (received !== undefined) return arrivedMs - received;
    remember(this.results, key, arrivedMs);
    return null;
  }

  clear(): void {
    this.frames.clear();
    this.results.clear();
  }
}

/** Sets m[key] = v, forgetting the oldest entry beyond LAG_MATCH_KEPT. */
function remember(m: Map<number, number>, key: number, v: number): void {
  m.delete(key);
  m.set(key, v);
  if (m.size > LAG_MATCH_KEPT) m.delete(m.keys().next().value as number);
}

/** How a result's boxes reached the screen. */
export type Outcome = 'exact' | 'late' | 'dropped';

/** Boxes counted once per result, by outcome. */
export interface OutcomeCounts {
  exact: number;
  late: number;
  dropped: number;
}

/** What to draw on one presented frame. */
export interface FrameDraw {
  result: OverlayResult;
  /** The boxes, moved by their tracks' motion for a late result. */
  detections: Detection[];
  /** The result's own frame was shown before it arrived (or never shown). */
  late: boolean;
  /** This frame is the result's own (its RTP timestamp). */
  exact: boolean;
}

interface Entry {
  result: OverlayResult;
  state: 'pending' | Outcome;
}

/**
 * Decides, per presented frame, which result's boxes are drawn and counts
 * each result's boxes once: exact when first drawn on the frame whose RTP
 * timestamp it carries, late when its frame was shown before it arrived
 * (drawn on the current frame, marked), dropped when it came too late
 * (lateMaxAgeMs), was superseded by a newer result before being drawn, or
 * is older than what is already on screen. A drawn result stays on the
 * following frames for holdMs or until the next one.
 */
export class OverlayScheduler {
  readonly counts: OutcomeCounts = { exact: 0, late: 0, dropped: 0 };
  private pending: Entry[] = [];
  private shown: Entry | null = null;
  private lastFrame: number | null = null;
  /** Each track's box in the newest drawn result, with that result's RTP timestamp. */
  private tracks = new Map<number, { rtp: number; det: Detection }>();
  /** The previous positions of the tracks of the result on screen (for motion). */
  private prevTracks = new Map<number, { rtp: number; det: Detection }>();
  private readonly lateTicks: number;
  private readonly holdTicks: number;

  constructor(
    s: Pick<PlayoutSettings, 'lateMaxAgeMs' | 'holdMs'> = DEFAULT_PLAYOUT,
    private readonly capacity = 64,
  ) {
    this.lateTicks = Math.round(s.lateMaxAgeMs / MS_PER_TICK);
    this.holdTicks = Math.round(s.holdMs / MS_PER_TICK);
  }

  /** Takes a result from the data channel. */
  add(r: OverlayResult): void {
    const rtp = r.rtp_timestamp >>> 0;
    const ref = this.shown ? this.shown.result.rtp_timestamp : null;
    if (ref !== null && rtpDiff(rtp, ref) <= 0) {
      // Older than (or a repeat of) what is on screen: drawing it would step back.
      this.count(r, 'dropped');
      return;
    }
    if (this.lastFrame !== null && rtpDiff(this.lastFrame, rtp) > this.lateTicks) {
      this.count(r, 'dropped');
      return;
    }
    const same = this.pending.findIndex((e) => e.result.rtp_timestamp >>> 0 === rtp);
    if (same >= 0) this.pending.splice(same, 1);
    this.pending.push({ result: r, state: 'pending' });
    while (this.pending.length > this.capacity) {
      const e = this.pending.shift();
      if (e) this.count(e.result, 'dropped');
    }
  }

  /** The result to draw on the presented frame with RTP timestamp frameRtp, or null. */
  frame(frameRtp: number): FrameDraw | null {
    const f = frameRtp >>> 0;
    this.lastFrame = f;
    // The newest pending result not after this frame is the candidate; the
    // older ones were superseded before they could be drawn.
    let best: Entry | null = null;
    let bestAge = Number.POSITIVE_INFINITY;
    for (const e of this.pending) {
      const age = rtpDiff(f, e.result.rtp_timestamp);
      if (age >= 0 && age < bestAge) {
        best = e;
        bestAge = age;
      }
    }
    if (best !== null) {
      const keep: Entry[] = [];
      for (const e of this.pending) {
        const age = rtpDiff(f, e.result.rtp_timestamp);
        if (e === best) continue;
        if (age >= 0) this.count(e.result, 'dropped');
        else keep.push(e); // a frame still to come
      }
      this.pending = keep;
      if (bestAge === 0) this.show(best, 'exact');
      else if (bestAge <= this.lateTicks) this.show(best, 'late');
      else this.count(best.result, 'dropped');
    }
    const s = this.shown;
    if (s === null) return null;
    const age = rtpDiff(f, s.result.rtp_timestamp);
    if (age < 0 || age > this.holdTicks) {
      // Expired, or the stream restarted on another timestamp base.
      this.shown = null;
      return null;
    }
    const late = s.state === 'late';
    return {
      result: s.result,
      detections: late ? this.moved(s.result, f) : s.result.detections,
      late,
      exact: age === 0,
    };
  }

  /** The newest result taken, for browsers that report no frame timestamps. */
  latest(): OverlayResult | null {
    const p = this.pending[this.pending.length - 1];
    return p ? p.result : (this.shown?.result ?? null);
  }

  clear(): void {
    this.pending = [];
    this.shown = null;
    this.lastFrame = null;
    this.tracks.clear();
    this.prevTracks.clear();
  }

  private show(e: Entry, outcome: 'exact' | 'late'): void {
    e.state = outcome;
    this.count(e.result, outcome);
    this.shown = e;
    const rtp = e.result.rtp_timestamp >>> 0;
    this.prevTracks = new Map(this.tracks);
    for (const d of e.result.detections) {
      if (d.track_id !== undefined && d.track_id > 0) this.tracks.set(d.track_id, { rtp, det: d });
    }
  }

  private moved(r: OverlayResult, frameRtp: number): Detection[] {
    return moveByTracks(r, this.prevTracks, frameRtp);
  }

  private count(r: OverlayResult, o: Outcome): void {
    this.counts[o] += r.detections.length;
  }
}

/**
 * A late result's boxes moved to frame frameRtp: a box with a track id that
 * was seen before (prev) moves on at the velocity between the two sightings;
 * other boxes stay where they were. Boxes stay inside the result's picture.
 */
export function moveByTracks(
  r: OverlayResult,
  prev: ReadonlyMap<number, { rtp: number; det: Detection }>,
  frameRtp: number,
): Detection[] {
  const ahead = rtpDiff(frameRtp, r.rtp_timestamp);
  if (ahead <= 0) return r.detections;
  return r.detections.map((d) => {
    if (d.track_id === undefined || d.track_id <= 0) return d;
    const p = prev.get(d.track_id);
    if (!p) return d;
    const span = rtpDiff(r.rtp_timestamp, p.rtp);
    if (span <= 0) return d;
    const k = ahead / span;
    const x = clamp(d.x + (d.x - p.det.x) * k, 0, Math.max(0, r.width - d.w));
    const y = clamp(d.y + (d.y - p.det.y) * k, 0, Math.max(0, r.height - d.h));
    return { ...d, x, y };
  });
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}
