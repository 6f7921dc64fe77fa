import { describe, expect, it } from 'vitest';
import type { OverlayResult } from './overlay';
import {
  DEFAULT_PLAYOUT,
  LagMatcher,
  LagEstimator,
  OverlayScheduler,
  moveByTracks,
  playoutSettingsFrom,
  playoutTargetMs,
} from './playout';

const U32 = 2 ** 32;
/** 90 kHz ticks of one 25 fps frame. */
const FRAME = 3600;

const res = (rtp: number, n = 1, track?: number, x = 10): OverlayResult => ({
  rtp_timestamp: rtp >>> 0,
  width: 640,
  height: 360,
  detections: Array.from({ length: n }, (_, i) => ({ x: x + i, y: 20, w: 10, h: 10, label: 'person', track_id: track })),
});

describe('LagEstimator', () => {
  it('is empty at first', () => {
    const e = new LagEstimator(10);
    expect(e.p95()).toBeNull();
    expect(e.count).toBe(0);
  });

  it('gives the nearest-rank 95th percentile', () => {
    const e = new LagEstimator(100);
    for (let i = 1; i <= 100; i++) e.add(i);
    expect(e.p95()).toBe(95);
    expect(e.percentile(50)).toBe(50);
    expect(e.percentile(100)).toBe(100);
  });

  it('is robust to a few outliers', () => {
    const e = new LagEstimator(100);
    for (let i = 0; i < 97; i++) e.add(30);
    for (let i = 0; i < 3; i++) e.add(900);
    expect(e.p95()).toBe(30);
  });

  it('forgets samples older than its window', () => {
    const e = new LagEstimator(20);
    for (let i = 0; i < 20; i++) e.add(500);
    for (let i = 0; i < 20; i++) e.add(40);
    expect(e.count).toBe(20);
    expect(e.p95()).toBe(40);
  });

  it('ignores non-finite samples', () => {
    const e = new LagEstimator(5);
    e.add(Number.NaN);
    e.add(Number.POSITIVE_INFINITY);
    expect(e.count).toBe(0);
  });
});

describe('playoutTargetMs', () => {
  const s = { ...DEFAULT_PLAYOUT, floorMs: 10, ceilingMs: 300, marginMs: 20, minSamples: 5 };
  it('is 0 when no results are expected', () => {
    expect(playoutTargetMs(false, { p95: 250, count: 100 }, s)).toBe(0);
  });
  it('is the floor until enough samples are in', () => {
    expect(playoutTargetMs(true, { p95: null, count: 0 }, s)).toBe(10);
    expect(playoutTargetMs(true, { p95: 200, count: 4 }, s)).toBe(10);
  });
  it('is p95 plus the margin within floor and ceiling', () => {
    expect(playoutTargetMs(true, { p95: 76, count: 50 }, s)).toBe(96);
    expect(playoutTargetMs(true, { p95: -30, count: 50 }, s)).toBe(20); // results ahead of their frames
    expect(playoutTargetMs(true, { p95: 0, count: 50 }, { ...s, floorMs: 40 })).toBe(40);
    expect(playoutTargetMs(true, { p95: 900, count: 50 }, s)).toBe(300);
  });
});

describe('playoutSettingsFrom', () => {
  it('reads overrides from the query string', () => {
    const s = playoutSettingsFrom('?playout_floor=50&playout_ceiling=250&playout_margin=5&late_max_age=100&overlay_hold=200');
    expect(s).toMatchObject({ floorMs: 50, ceilingMs: 250, marginMs: 5, lateMaxAgeMs: 100, holdMs: 200 });
  });
  it('ignores bad values and keeps the ceiling at or above the floor', () => {
    const s = playoutSettingsFrom('playout_floor=abc&playout_margin=-3&late_max_age=99999&playout_ceiling=');
    expect(s).toEqual(DEFAULT_PLAYOUT);
    expect(playoutSettingsFrom('playout_floor=500&playout_ceiling=100')).toMatchObject({ floorMs: 500, ceilingMs: 500 });
  });
});

describe('LagMatcher', () => {
  it('measures a result against its own frame, whichever comes first', () => {
    const m = new LagMatcher();
    // Held video: the result arrives before its frame is shown.
    expect(m.result(9000, 1030)).toBeNull();
    expect(m.frame(0, 900)).toBeNull();
    expect(m.frame(9000, 1000)).toBe(30);
    // Its frame shown first: matched when the result comes.
    expect(m.frame(18_000, 1100)).toBeNull();
    expect(m.result(18_000, 1180)).toBe(80);
  });
  it('does not count a stalled sender as lag', () => {
    const m = new LagMatcher();
    // Frame 9000 arrived 400 ms after frame 0 though the clock says 100 ms:
    // its result, 20 ms after it, lags 20 ms, not 320.
    m.frame(0, 1000);
    expect(m.result(9000, 1420)).toBeNull();
    expect(m.frame(9000, 1400)).toBe(20);
  });
  it('forgets old frames and results, and across the 32-bit wrap-around keys by the unsigned timestamp', () => {
    const m = new LagMatcher();
    for (let i = 0; i < 200; i++) m.result(i * 3000, i);
    expect(m.frame(0, 0)).toBeNull(); // forgotten
    expect(m.frame(199 * 3000, 500)).toBe(199 - 500);
    m.frame(U32 - 3000, 10);
    expect(m.result(-3000, 25)).toBe(15);
    m.clear();
    expect(m.result(U32 - 3000, 30)).toBeNull();
  });
});

describe('OverlayScheduler', () => {
  const settings = { lateMaxAgeMs: 300, holdMs: 500 };

  it('draws a result that arrived in time exactly on its frame, and holds it', () => {
    const s = new OverlayScheduler(settings);
    s.add(res(10 * FRAME, 2));
    expect(s.frame(9 * FRAME)).toBeNull(); // frame before the result's
    const d = s.frame(10 * FRAME);
    expect(d).toMatchObject({ late: false, exact: true });
    expect(d?.detections).toHaveLength(2);
    const held = s.frame(11 * FRAME);
    expect(held).toMatchObject({ late: false, exact: false });
    expect(s.counts).toEqual({ exact: 2, late: 0, dropped: 0 });
  });

  it('stops holding after holdMs', () => {
    const s = new OverlayScheduler({ lateMaxAgeMs: 300, holdMs: 100 });
    s.add(res(0));
    s.frame(0);
    expect(s.frame(9000)).not.toBeNull();
    expect(s.frame(9001)).toBeNull();
  });

  it('marks a result whose frame was already shown as late', () => {
    const s = new OverlayScheduler(settings);
    s.frame(10 * FRAME);
    s.frame(11 * FRAME);
    s.add(res(10 * FRAME, 3));
    const d = s.frame(12 * FRAME);
    expect(d).toMatchObject({ late: true, exact: false });
    expect(s.counts).toEqual({ exact: 0, late: 3, dropped: 0 });
    // Held frames keep the mark, and it is counted once.
    expect(s.frame(13 * FRAME)?.late).toBe(true);
    expect(s.counts.late).toBe(3);
  });

  it('counts a result as late when its own frame was never presented', () => {
    const s = new OverlayScheduler(settings);
    s.add(res(10 * FRAME));
    expect(s.frame(11 * FRAME)).toMatchObject({ late: true });
    expect(s.counts).toEqual({ exact: 0, late: 1, dropped: 0 });
  });

  it('drops a result older than lateMaxAgeMs behind the presented frame', () => {
    const s = new OverlayScheduler(settings);
    s.frame(100_000);
    s.add(res(100_000 - 27_001, 2)); // 300.01 ms behind
    expect(s.frame(100_000 + FRAME)).toBeNull();
    expect(s.counts).toEqual({ exact: 0, late: 0, dropped: 2 });
  });

  it('drops a result superseded before it was drawn, and one older than what is shown', () => {
    const s = new OverlayScheduler(settings);
    s.frame(0);
    s.add(res(FRAME));
    s.add(res(2 * FRAME));
    expect(s.frame(2 * FRAME)).toMatchObject({ exact: true });
    expect(s.counts).toEqual({ exact: 1, late: 0, dropped: 1 });
    s.add(res(FRAME + 1)); // reordered on the unordered channel
    expect(s.counts.dropped).toBe(2);
    expect(s.frame(3 * FRAME)?.result.rtp_timestamp).toBe(2 * FRAME);
  });

  it('never draws a result on a frame before its own', () => {
    const s = new OverlayScheduler(settings);
    s.add(res(5 * FRAME));
    for (let f = 0; f < 5; f++) expect(s.frame(f * FRAME)).toBeNull();
    expect(s.frame(5 * FRAME)?.exact).toBe(true);
  });

  it('moves late boxes by their tracks motion', () => {
    const s = new OverlayScheduler(settings);
    s.add(res(0, 1, 7, 100));
    s.frame(0);
    s.frame(FRAME);
    s.frame(2 * FRAME);
    s.add(res(2 * FRAME, 1, 7, 120)); // arrives after its frame: late
    const d = s.frame(3 * FRAME);
    expect(d?.late).toBe(true);
    // 20 px per two frames → 10 px one frame on.
    expect(d?.detections[0].x).toBeCloseTo(130);
    expect(s.frame(4 * FRAME)?.detections[0].x).toBeCloseTo(140);
  });

  it('handles the RTP wrap-around', () => {
    const s = new OverlayScheduler(settings);
    s.add(res(U32 - FRAME));
    s.add(res(FRAME));
    expect(s.frame(U32 - FRAME)?.exact).toBe(true);
    expect(s.frame(0)?.exact).toBe(false);
    expect(s.frame(FRAME)?.exact).toBe(true);
    expect(s.counts).toEqual({ exact: 2, late: 0, dropped: 0 });
  });

  it('recovers when the stream restarts on another timestamp base', () => {
    const s = new OverlayScheduler(settings);
    s.add(res(2_000_000_000));
    s.frame(2_000_000_000);
    s.frame(1000); // restart: far before the shown result
    s.add(res(1000 + FRAME));
    expect(s.frame(1000 + FRAME)?.exact).toBe(true);
  });

  it('bounds its pending results', () => {
    const s = new OverlayScheduler(settings, 4);
    for (let i = 1; i <= 6; i++) s.add(res(i * FRAME));
    expect(s.counts.dropped).toBe(2);
  });
});

describe('moveByTracks', () => {
  it('leaves boxes without a track or a previous sighting in place', () => {
    const r = res(FRAME, 1, undefined, 50);
    expect(moveByTracks(r, new Map(), 2 * FRAME)[0].x).toBe(50);
    const t = res(FRAME, 1, 3, 50);
    expect(moveByTracks(t, new Map(), 2 * FRAME)[0].x).toBe(50);
  });
  it('keeps moved boxes inside the picture', () => {
    const r = res(FRAME, 1, 3, 600);
    const prev = new Map([[3, { rtp: 0, det: { x: 300, y: 20, w: 10, h: 10 } }]]);
    expect(moveByTracks(r, prev, 10 * FRAME)[0].x).toBe(630);
  });
});
