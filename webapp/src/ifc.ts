// The window.__ifc object read by automated browser tests.

export interface LiveIfc {
  page: 'live';
  camera: string;
  /** Frames presented so far (VideoFrameCallbackMetadata.presentedFrames, else callbacks counted). */
  framesDecoded: number;
  /** RTP timestamp of the last presented frame, null when the browser does not report it. */
  lastFrameRtp: number | null;
  /** Boxes drawn so far, summed over frames. */
  boxesDrawn: number;
  /** Frames whose boxes came from the result of exactly that frame. */
  exactFrames: number;
  /** The last frame that had a result drawn on it. */
  lastDrawn: { frameRtp: number; resultRtp: number; count: number } | null;
  /** Valid result messages received on the "results" data channel. */
  resultsReceived: number;
  /** The last 300 results received: their RTP timestamp and when they arrived (performance.now() ms), for latency probes. */
  arrivals: Array<{ rtp: number; at: number }>;
  /** Boxes by outcome, each result counted once: drawn on its own frame, drawn later marked late, never drawn. */
  boxesExact: number;
  boxesLate: number;
  boxesDropped: number;
  /** Frames drawn with late (marked) boxes. */
  lateFrames: number;
  /** The last 300 frames drawn with boxes: the frame's and the result's RTP timestamps, and the late mark. */
  draws: Array<{ frameRtp: number; resultRtp: number; late: boolean }>;
  /** The jitter-buffer target the page asked for (ms), and the one the receiver reports (null: unsupported). */
  playoutTargetMs: number | null;
  jitterBufferTarget: number | null;
  /** The mean delay frames actually spent in the jitter buffer over the last second (ms; getStats). */
  jitterBufferDelayMs: number | null;
  /** p95 of the results' lag behind their frames (ms), and the samples it is taken over. */
  lagP95Ms: number | null;
  lagSamples: number;
  /** Whether the page expects results (the camera has a pipeline and detection is shown). */
  resultsExpected: boolean;
  /** True once the stream's audio track has received sound (the camera sends audio). */
  audioTrack: boolean;
  /** new | connecting | connected | disconnected | failed | retrying | closed */
  state: string;
  /** Last error text, if any. */
  error: string | null;
}

export interface PublishIfc {
  page: 'publish';
  camera: string;
  /** idle | unsupported | starting | connecting | publishing | disconnected | failed | stopped | error */
  state: string;
  /** Sum of outbound-rtp video framesEncoded, sampled every second. */
  framesSent: number;
  error: string | null;
}

export interface ExecutionIfc {
  page: 'execution';
  id: string;
  /** queued | running | done | failed | cancelled, as last reported by the server. */
  state: string;
  done: number;
  failed: number;
  total: number;
  /** Progress messages received on the event stream. */
  events: number;
  error: string | null;
}

declare global {
  interface Window {
    __ifc?: LiveIfc | PublishIfc | ExecutionIfc;
  }
}

export function initLiveIfc(camera: string): LiveIfc {
  const o: LiveIfc = {
    page: 'live',
    camera,
    framesDecoded: 0,
    lastFrameRtp: null,
    boxesDrawn: 0,
    exactFrames: 0,
    lastDrawn: null,
    resultsReceived: 0,
    arrivals: [],
    boxesExact: 0,
    boxesLate: 0,
    boxesDropped: 0,
    lateFrames: 0,
    draws: [],
    playoutTargetMs: null,
    jitterBufferTarget: null,
    jitterBufferDelayMs: null,
    lagP95Ms: null,
    lagSamples: 0,
    resultsExpected: false,
    audioTrack: false,
    state: 'new',
    error: null,
  };
  window.__ifc = o;
  return o;
}

export function initPublishIfc(camera: string): PublishIfc {
  const o: PublishIfc = { page: 'publish', camera, state: 'idle', framesSent: 0, error: null };
  window.__ifc = o;
  return o;
}

export function initExecutionIfc(id: string): ExecutionIfc {
  const o: ExecutionIfc = { page: 'execution', id, state: 'loading', done: 0, failed: 0, total: 0, events: 0, error: null };
  window.__ifc = o;
  return o;
}
