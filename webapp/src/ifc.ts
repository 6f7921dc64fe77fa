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
