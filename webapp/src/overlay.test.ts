import { describe, expect, it } from 'vitest';
import {
  boxLabel,
  containRect,
  parseMessage,
  parseResult,
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
