// The live page's overlay timing: learns how far detection results lag
// behind their frames, sets the video receiver's jitter-buffer target to
// match (playout.ts decides the numbers), picks each presented frame's
// boxes, and reports the exact/late/dropped counts to the server's metrics.
import { cameraPath, client } from './api';
import type { OverlayResult } from './overlay';
import { LagEstimator, LagMatcher, OverlayScheduler, playoutTargetMs, type FrameDraw, type OutcomeCounts, type PlayoutSettings } from './playout';

/** A video receiver with the jitterBufferTarget attribute (ms; Chrome 114+, Firefox 131+). */
type TargetReceiver = RTCRtpReceiver & { jitterBufferTarget?: number | null };

/** Smaller target changes are not worth a playout rate change in the browser. */
const TARGET_STEP_MS = 10;

/** Lag samples the p95 is taken over (about 20 s of results at 5 fps). */
const LAG_WINDOW = 100;

export class LiveOverlay {
  readonly scheduler: OverlayScheduler;
  readonly lag = new LagEstimator(LAG_WINDOW);
  private readonly matcher = new LagMatcher();
  private receiver: TargetReceiver | null = null;
  private expected = false;
  private reported: OutcomeCounts = { exact: 0, late: 0, dropped: 0 };
  /** The target last asked of the browser (ms), null before any. */
  targetMs: number | null = null;
  /** The video's mean jitter-buffer delay over the last measurement (ms), null before one. */
  delayMs: number | null = null;
  private lastDelay = { sum: 0, count: 0 };

  constructor(readonly settings: PlayoutSettings) {
    this.scheduler = new OverlayScheduler(settings);
  }

  /** Takes the new session's video receiver and applies the current target to it. */
  attach(receiver: RTCRtpReceiver): void {
    this.receiver = receiver as TargetReceiver;
    this.scheduler.clear();
    this.matcher.clear();
    this.targetMs = null;
    this.delayMs = null;
    this.lastDelay = { sum: 0, count: 0 };
    this.update();
  }

  /** Whether results are coming: the camera has a pipeline and detection is shown. */
  setResultsExpected(on: boolean): void {
    if (on === this.expected) return;
    this.expected = on;
    if (!on) this.scheduler.clear();
    this.update();
  }

  /** A result from the data channel, arrived at arrivedMs (performance.now()). */
  onResult(r: OverlayResult, arrivedMs: number): void {
    const lag = this.matcher.result(r.rtp_timestamp, arrivedMs);
    if (lag !== null) this.lag.add(lag);
    if (this.expected) this.scheduler.add(r);
  }

  /**
   * A presented frame (requestVideoFrameCallback): its RTP timestamp and
   * when its last packet arrived; returns what to draw on it.
   */
  onFrame(rtp: number, receivedMs: number): FrameDraw | null {
    const lag = this.matcher.frame(rtp, receivedMs);
    if (lag !== null) this.lag.add(lag);
    return this.expected ? this.scheduler.frame(rtp) : null;
  }

  /** Recomputes the target from the lag seen so far and applies it when it moved. */
  update(): void {
    const want = playoutTargetMs(this.expected, { p95: this.lag.p95(), count: this.lag.count }, this.settings);
    if (this.targetMs !== null && Math.abs(want - this.targetMs) < TARGET_STEP_MS && !(want === 0 && this.targetMs !== 0)) return;
    this.targetMs = want;
    const r = this.receiver;
    if (r && 'jitterBufferTarget' in r) {
      try {
        r.jitterBufferTarget = want;
      } catch {
        /* out of the browser's range: it keeps its own */
      }
    }
  }

  /** The target the browser holds (its jitterBufferTarget), null when it has none. */
  appliedTargetMs(): number | null {
    const r = this.receiver;
    return r && typeof r.jitterBufferTarget === 'number' ? r.jitterBufferTarget : null;
  }

  /**
   * Measures the delay the browser actually holds frames (inbound-rtp
   * jitterBufferDelay per emitted frame since the last call): it follows a
   * new target gradually, so this says when it has caught up.
   */
  async measureDelay(): Promise<number | null> {
    const r = this.receiver;
    if (!r) return null;
    let sum = 0;
    let count = 0;
    try {
      (await r.getStats()).forEach((st: { type?: string; jitterBufferDelay?: number; jitterBufferEmittedCount?: number }) => {
        if (st.type === 'inbound-rtp' && typeof st.jitterBufferDelay === 'number' && typeof st.jitterBufferEmittedCount === 'number') {
          sum = st.jitterBufferDelay;
          count = st.jitterBufferEmittedCount;
        }
      });
    } catch {
      return this.delayMs;
    }
    const dSum = sum - this.lastDelay.sum;
    const dCount = count - this.lastDelay.count;
    this.lastDelay = { sum, count };
    if (dCount > 0 && dSum >= 0) this.delayMs = Math.round((1000 * dSum) / dCount);
    return this.delayMs;
  }

  /** Counts since the last call, for the server's metrics. */
  takeCounts(): OutcomeCounts {
    const c = this.scheduler.counts;
    const d = { exact: c.exact - this.reported.exact, late: c.late - this.reported.late, dropped: c.dropped - this.reported.dropped };
    this.reported = { ...c };
    return d;
  }
}

/** Sends a live page's counts and playout target to the server (POST …/overlay-stats). */
export async function reportOverlay(camera: string, counts: OutcomeCounts, targetMs: number | null): Promise<void> {
  const body = { ...counts, playout_target_ms: targetMs };
  const { response } = await client.POST('/api/v1/cameras/{id}/overlay-stats', { params: { path: { id: camera } }, body });
  if (!response.ok) throw new Error(`${cameraPath(camera)}/overlay-stats: ${response.status}`);
}
