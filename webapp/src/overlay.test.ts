import { describe, expect, it } from 'vitest';
import {
  MAX_RESULT_AGE_TICKS,
  ResultBuffer,
  boxLabel,
  containRect,
  parseMessage,
  parseResult,
  pickResult,
  rtpDiff,
  scaleBoxes,
  type OverlayResult,
} from './overlay';

const res = (rtp: number, n = 1): OverlayResult => ({
  rtp_timestamp: rtp >>> 0,
  width: 640,
  height: 360,
  detections: Array.from({ length: n }, (_, i) => ({ x: i, y: 0, w: 10, h: 10, label: 'person', score: 0.9 })),
});

const U32 = 2 ** 32;

describe('rtpDiff', () => {
  it('is a signed difference', () => {
    expect(rtpDiff(1000, 400)).toBe(600);
    expect(rtpDiff(400, 1000)).toBe(-600);
    expect(rtpDiff(5, 5)).toBe(0);
  });
  it('handles 32-bit wrap-around', () => {
    expect(rtpDiff(100, U32 - 100)).toBe(200);
    expect(rtpDiff(U32 - 100, 100)).toBe(-200);
    expect(rtpDiff(0, U32 - 1)).toBe(1);
  });
});

describe('pickResult', () => {
  it('returns null for no results', () => {
    expect(pickResult([], 1234)).toBeNull();
  });

  it('prefers the exact timestamp even when a closer-looking one exists', () => {
    const exact = res(90_000);
    const list = [res(87_000), exact, res(89_999)];
    expect(pickResult(list, 90_000)).toBe(exact);
  });

  it('falls back to the newest result not after the frame', () => {
    const a = res(10_000);
    const b = res(13_000);
    const later = res(20_000);
    expect(pickResult([a, later, b], 15_000)).toBe(b);
  });

  it('ignores results after the frame', () => {
    expect(pickResult([res(15_001), res(30_000)], 15_000)).toBeNull();
  });

  it('hides stale results (older than 500 ms at 90 kHz)', () => {
    const r = res(100_000);
    expect(pickResult([r], 100_000 + MAX_RESULT_AGE_TICKS)).toBe(r);
    expect(pickResult([r], 100_000 + MAX_RESULT_AGE_TICKS + 1)).toBeNull();
  });

  it('matches across the wrap-around (result before 2^32, frame after)', () => {
    const r = res(U32 - 3000);
    expect(pickResult([r], 3000)).toBe(r); // 6000 ticks later
    const exact = res(0);
    expect(pickResult([r, exact], 0)).toBe(exact);
  });

  it('does not treat a result just after the wrap as older than a frame before it', () => {
    // frame at 2^32-3000, result at 3000 is 6000 ticks in the future
    expect(pickResult([res(3000)], U32 - 3000)).toBeNull();
  });

  it('picks the newest across the wrap-around', () => {
    const before = res(U32 - 9000);
    const after = res(1000);
    expect(pickResult([after, before], 4000)).toBe(after);
    expect(pickResult([before, after], 4000)).toBe(after);
  });

  it('honours a custom max age', () => {
    expect(pickResult([res(0)], 3001, 3000)).toBeNull();
    expect(pickResult([res(0)], 3000, 3000)).not.toBeNull();
  });
});

describe('ResultBuffer', () => {
  it('looks up exact and fallback results', () => {
    const buf = new ResultBuffer(8);
    buf.add(res(1000));
    buf.add(res(4000));
    expect(buf.pick(4000)?.rtp_timestamp).toBe(4000);
    expect(buf.pick(5000)?.rtp_timestamp).toBe(4000);
    expect(buf.pick(500)).toBeNull();
    expect(buf.latest()?.rtp_timestamp).toBe(4000);
  });

  it('evicts the oldest arrivals beyond capacity', () => {
    const buf = new ResultBuffer(3);
    for (const t of [1, 2, 3, 4, 5]) buf.add(res(t * 1000));
    expect(buf.size).toBe(3);
    expect(buf.pick(1000)).toBeNull();
    expect(buf.pick(2000)).toBeNull();
    expect(buf.pick(3000)?.rtp_timestamp).toBe(3000);
  });

  it('replaces a result with the same timestamp', () => {
    const buf = new ResultBuffer(4);
    buf.add(res(7000, 1));
    buf.add(res(7000, 3));
    expect(buf.size).toBe(1);
    expect(buf.pick(7000)?.detections).toHaveLength(3);
  });

  it('normalises timestamps to uint32 keys', () => {
    const buf = new ResultBuffer(4);
    buf.add({ ...res(0), rtp_timestamp: U32 - 1 });
    expect(buf.pick(-1)?.rtp_timestamp).toBe(U32 - 1);
  });
});

describe('parsing', () => {
  it('accepts the data-channel format', () => {
    const msg = JSON.stringify({
      rtp_timestamp: 3_000_000_000,
      pts: 123,
      width: 640,
      height: 360,
      detections: [{ x: 1, y: 2, w: 3, h: 4, label: 'person', score: 0.9, track_id: 0 }],
    });
    const [r] = parseMessage(msg);
    expect(r.rtp_timestamp).toBe(3_000_000_000);
    expect(r.detections[0]).toEqual({ x: 1, y: 2, w: 3, h: 4, label: 'person', score: 0.9, track_id: 0 });
  });

  it('rejects malformed messages and drops bad boxes', () => {
    expect(parseMessage('not json')).toEqual([]);
    expect(parseResult({ width: 1, height: 1, detections: [] })).toBeNull();
    expect(parseResult({ rtp_timestamp: 1, width: 0, height: 1 })).toBeNull();
    const r = parseResult({ rtp_timestamp: 1, width: 10, height: 10, detections: [{ x: 'a' }, null, { x: 1, y: 1, w: 1, h: 1 }] });
    expect(r?.detections).toHaveLength(1);
  });

  it('accepts a batch (array) message', () => {
    expect(parseMessage(JSON.stringify([res(1), res(2), { bogus: true }]))).toHaveLength(2);
  });
});

describe('geometry', () => {
  it('computes the object-fit: contain rect', () => {
    expect(containRect(1280, 720, 640, 360)).toEqual({ x: 0, y: 0, w: 1280, h: 720 });
    expect(containRect(1000, 1000, 1000, 500)).toEqual({ x: 0, y: 250, w: 1000, h: 500 });
    expect(containRect(1000, 500, 500, 500)).toEqual({ x: 250, y: 0, w: 500, h: 500 });
  });

  it('scales boxes from result size to the display rect', () => {
    const r: OverlayResult = { rtp_timestamp: 0, width: 320, height: 180, detections: [{ x: 32, y: 18, w: 64, h: 36, label: 'car', score: 0.5 }] };
    const [b] = scaleBoxes(r, { x: 10, y: 20, w: 640, h: 360 });
    expect(b).toMatchObject({ x: 74, y: 56, w: 128, h: 72, label: 'car 50%' });
  });

  it('labels boxes', () => {
    expect(boxLabel({ x: 0, y: 0, w: 1, h: 1, label: 'person', score: 0.874, track_id: 3 })).toBe('person #3 87%');
    expect(boxLabel({ x: 0, y: 0, w: 1, h: 1 })).toBe('object');
  });
});
