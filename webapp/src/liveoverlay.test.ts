import { describe, expect, it } from 'vitest';
import { LiveOverlay } from './liveoverlay';
import type { OverlayResult } from './overlay';
import { DEFAULT_PLAYOUT } from './playout';

/** A stand-in for the video RTCRtpReceiver: only the attribute the page sets. */
const receiver = () => ({ jitterBufferTarget: null as number | null }) as unknown as RTCRtpReceiver & { jitterBufferTarget: number | null };

const res = (rtp: number): OverlayResult => ({ rtp_timestamp: rtp, width: 640, height: 360, detections: [{ x: 1, y: 1, w: 5, h: 5 }] });

describe('LiveOverlay', () => {
  it('asks for no hold when no results are expected', () => {
    const o = new LiveOverlay(DEFAULT_PLAYOUT);
    const r = receiver();
    o.attach(r);
    expect(r.jitterBufferTarget).toBe(0);
    expect(o.appliedTargetMs()).toBe(0);
  });

  it('follows the results lag once results are expected, and drops to 0 without them', () => {
    const o = new LiveOverlay({ ...DEFAULT_PLAYOUT, floorMs: 30, marginMs: 20 });
    const r = receiver();
    o.attach(r);
    o.setResultsExpected(true);
    expect(r.jitterBufferTarget).toBe(30); // the floor until samples are in
    // Frames every 40 ms (3600 ticks); each result arrives 80 ms after its frame.
    for (let i = 0; i < 20; i++) {
      o.onFrame(i * 3600, 1000 + i * 40);
      o.onResult(res(i * 3600), 1000 + i * 40 + 80);
    }
    o.update();
    expect(r.jitterBufferTarget).toBe(100);
    o.setResultsExpected(false);
    expect(r.jitterBufferTarget).toBe(0);
  });

  it('leaves small changes alone', () => {
    const o = new LiveOverlay({ ...DEFAULT_PLAYOUT, marginMs: 0, minSamples: 1 });
    const r = receiver();
    o.attach(r);
    o.setResultsExpected(true);
    o.onFrame(0, 1000);
    o.onResult(res(0), 1100);
    o.update();
    expect(r.jitterBufferTarget).toBe(100);
    o.onResult(res(3600), 1040 + 105); // 105 ms: within the step
    o.update();
    expect(r.jitterBufferTarget).toBe(100);
  });

  it('counts boxes once for the metrics report', () => {
    const o = new LiveOverlay(DEFAULT_PLAYOUT);
    o.attach(receiver());
    o.setResultsExpected(true);
    o.onResult(res(3600), 0);
    o.onFrame(3600, 0);
    expect(o.takeCounts()).toEqual({ exact: 1, late: 0, dropped: 0 });
    expect(o.takeCounts()).toEqual({ exact: 0, late: 0, dropped: 0 });
  });
});
