import { useEffect, useRef, useState } from 'react';
import { cameraPath, cameraStatus, errorMessage, formatBitrate, getCamera, type Camera } from '../api';
import { RecordingPlayer } from '../components/RecordingPlayer';
import { drawOverlay } from '../draw';
import { initLiveIfc, type LiveIfc } from '../ifc';
import { LiveOverlay, reportOverlay } from '../liveoverlay';
import { parseMessage, type OverlayResult } from '../overlay';
import { playoutSettingsFrom, type FrameDraw } from '../playout';
import { Link, publishURL } from '../router';
import { deleteSession, exchangeSdp, waitIceGathering } from '../webrtc';
import { RecentEvents } from '../components/RecentEvents';
import { ZoneEditor } from '../components/ZoneEditor';
import { StateBadge } from './common';

const RETRY_MS = 3000;
const POLL_MS = 2000;
/** Without a frame RTP timestamp (browsers that do not report it), show the newest result for this long. */
const FALLBACK_MAX_AGE_MS = 500;
/** How often the playout target follows the measured result lag. */
const PLAYOUT_UPDATE_MS = 1000;
/** How often the page reports its box counts to the server's metrics. */
const REPORT_MS = 5000;
/** Frames kept in window.__ifc.draws for tests. */
const DRAWS_KEPT = 300;

export function CameraLive({ id }: { id: string }) {
  const videoRef = useRef<HTMLVideoElement>(null);
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const ifcRef = useRef<LiveIfc | null>(null);
  // Playout delay and late-result tunables: ?playout_floor=…&playout_ceiling=…&playout_margin=…&late_max_age=…&overlay_hold=… (ms).
  const overlayRef = useRef<LiveOverlay | null>(null);
  if (overlayRef.current === null) overlayRef.current = new LiveOverlay(playoutSettingsFrom(window.location.search));
  const lastDrawRef = useRef<FrameDraw | null>(null);
  const lastResultAtRef = useRef(0);
  const overlayOnRef = useRef(true);

  const [conn, setConn] = useState('new');
  const [connError, setConnError] = useState<string | null>(null);
  const [camera, setCamera] = useState<Camera | null>(null);
  const [cameraError, setCameraError] = useState<string | null>(null);
  const [muted, setMuted] = useState(true);
  const [hasAudio, setHasAudio] = useState(false);
  const [overlayOn, setOverlayOn] = useState(true);
  const [stats, setStats] = useState({ frames: 0, results: 0, boxes: 0, rtp: null as number | null, exact: 0, late: 0, dropped: 0, target: null as number | null, held: null as number | null });
  const [attempt, setAttempt] = useState(0);

  if (ifcRef.current === null || ifcRef.current.camera !== id) ifcRef.current = initLiveIfc(id);

  overlayOnRef.current = overlayOn;
  const hasPipeline = !!camera?.pipeline;

  // Hold video only while results are coming: the camera has a pipeline and detection is shown.
  useEffect(() => {
    const ov = overlayRef.current;
    if (!ov) return;
    ov.setResultsExpected(hasPipeline && overlayOn);
    if (ifcRef.current) ifcRef.current.resultsExpected = hasPipeline && overlayOn;
  }, [hasPipeline, overlayOn]);

  // Camera state, refreshed every 2 s.
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      try {
        const c = await getCamera(id);
        if (!stop) {
          setCamera(c);
          setCameraError(null);
        }
      } catch (e) {
        if (!stop) setCameraError(errorMessage(e));
      }
      if (!stop) timer = setTimeout(poll, POLL_MS);
    };
    void poll();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [id]);

  // WHEP session: connect, retry on failure, DELETE the session on leave.
  useEffect(() => {
    const ifc = ifcRef.current ?? initLiveIfc(id);
    window.__ifc = ifc;
    const overlay = overlayRef.current;
    let cancelled = false;
    let pc: RTCPeerConnection | null = null;
    let location: string | null = null;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;

    const setState = (s: string) => {
      ifc.state = s;
      if (!cancelled) setConn(s);
    };
    const setError = (msg: string | null) => {
      ifc.error = msg;
      if (!cancelled) setConnError(msg);
    };
    const teardown = () => {
      if (location) void deleteSession(location);
      location = null;
      if (pc) {
        pc.ontrack = null;
        pc.onconnectionstatechange = null;
        pc.close();
      }
      pc = null;
    };
    const scheduleRetry = () => {
      if (cancelled) return;
      teardown();
      setState('retrying');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => void connect(), RETRY_MS);
    };

    const connect = async () => {
      if (cancelled) return;
      setState('connecting');
      ifc.audioTrack = false;
      setHasAudio(false);
      const p = new RTCPeerConnection();
      pc = p;
      const video = p.addTransceiver('video', { direction: 'recvonly' });
      // Frames are held in the jitter buffer about as long as results lag
      // behind them (learned, 0 without a pipeline), so a frame's result has
      // arrived when the frame is shown and its boxes are drawn on it.
      overlay?.attach(video.receiver);
      p.addTransceiver('audio', { direction: 'recvonly' });

      // Created before the offer so that the SDP carries an application m-line.
      // Unordered and never retransmitted: a lost result is not worth
      // stalling the ones behind it, which are newer.
      const dc = p.createDataChannel('results', { ordered: false, maxRetransmits: 0 });
      dc.binaryType = 'arraybuffer';
      const decoder = new TextDecoder();
      dc.onmessage = (ev: MessageEvent) => {
        const text = typeof ev.data === 'string' ? ev.data : ev.data instanceof ArrayBuffer ? decoder.decode(ev.data) : '';
        const now = performance.now();
        for (const r of parseMessage(text)) {
          overlay?.onResult(r, now);
          ifc.resultsReceived++;
          ifc.arrivals.push({ rtp: r.rtp_timestamp >>> 0, at: now });
          if (ifc.arrivals.length > DRAWS_KEPT) ifc.arrivals.splice(0, ifc.arrivals.length - DRAWS_KEPT);
          lastResultAtRef.current = now;
        }
      };

      const stream = new MediaStream();
      p.ontrack = (ev) => {
        stream.addTrack(ev.track);
        if (ev.track.kind === 'audio') {
          // The answer always has an audio section; sound is there once its
          // first packets arrive (the track unmutes).
          const heard = () => {
            ifc.audioTrack = true;
            if (!cancelled && pc === p) setHasAudio(true);
          };
          if (!ev.track.muted) heard();
          else ev.track.addEventListener('unmute', heard, { once: true });
        }
        const v = videoRef.current;
        if (v && v.srcObject !== stream) {
          v.srcObject = stream;
          v.play().catch(() => {
            /* autoplay refused: the muted video normally plays; controls let the user start it */
          });
        }
      };
      p.onconnectionstatechange = () => {
        if (pc !== p) return;
        switch (p.connectionState) {
          case 'connected':
            setError(null);
            setState('connected');
            break;
          case 'disconnected':
            setState('disconnected'); // may recover by itself; 'failed' follows otherwise
            break;
          case 'failed':
            setError('WebRTC connection failed');
            scheduleRetry();
            break;
          default:
            break;
        }
      };

      try {
        await p.setLocalDescription(await p.createOffer());
        await waitIceGathering(p, 2000);
        if (cancelled || pc !== p) return;
        const answer = await exchangeSdp(`${cameraPath(id)}/whep`, p.localDescription?.sdp ?? '');
        if (cancelled || pc !== p) {
          if (answer.location) void deleteSession(answer.location);
          return;
        }
        location = answer.location;
        await p.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      } catch (e) {
        if (cancelled || pc !== p) return;
        setError(errorMessage(e));
        scheduleRetry();
      }
    };

    void connect();
    const onPageHide = () => teardown();
    window.addEventListener('pagehide', onPageHide);
    return () => {
      cancelled = true;
      clearTimeout(retryTimer);
      window.removeEventListener('pagehide', onPageHide);
      teardown();
      ifc.state = 'closed';
    };
  }, [id, attempt]);

  // Overlay: on every presented frame pick the result for that frame's RTP timestamp.
  useEffect(() => {
    const video = videoRef.current;
    const canvas = canvasRef.current;
    if (!video || !canvas) return;
    const overlay = overlayRef.current;
    let stopped = false;
    let vfcHandle: number | null = null;
    let rafHandle: number | null = null;

    // Draws a frame's boxes: those of its own result, a late one marked as
    // such, or none; never another frame's boxes silently.
    const render = (frameRtp: number | null, receivedMs: number) => {
      const ifc = ifcRef.current;
      if (!ifc || !overlay) return;
      let draw: FrameDraw | null = null;
      if (frameRtp !== null) draw = overlay.onFrame(frameRtp, receivedMs);
      else if (overlayOnRef.current && performance.now() - lastResultAtRef.current <= FALLBACK_MAX_AGE_MS) {
        // No frame timestamps: the newest result, marked, since its frame is unknown.
        const latest = overlay.scheduler.latest();
        draw = latest ? { result: latest, detections: latest.detections, late: true, exact: false } : null;
      }
      if (!overlayOnRef.current) draw = null;
      lastDrawRef.current = draw;
      const n = paint(draw);
      if (draw) {
        const resultRtp = draw.result.rtp_timestamp;
        ifc.boxesDrawn += n;
        ifc.lastDrawn = { frameRtp: frameRtp ?? -1, resultRtp, count: n };
        if (frameRtp === resultRtp) ifc.exactFrames++;
        if (draw.late) ifc.lateFrames++;
        if (n > 0) {
          ifc.draws.push({ frameRtp: frameRtp ?? -1, resultRtp, late: draw.late });
          if (ifc.draws.length > DRAWS_KEPT) ifc.draws.splice(0, ifc.draws.length - DRAWS_KEPT);
        }
      }
      const c = overlay.scheduler.counts;
      ifc.boxesExact = c.exact;
      ifc.boxesLate = c.late;
      ifc.boxesDropped = c.dropped;
    };
    const paint = (draw: FrameDraw | null): number =>
      drawOverlay(canvas, video, draw ? (draw.result as OverlayResult) : null, draw ? { detections: draw.detections, late: draw.late } : {});

    const supportsVFC = typeof video.requestVideoFrameCallback === 'function';
    if (supportsVFC) {
      let callbacks = 0;
      const onFrame: VideoFrameRequestCallback = (_now, meta) => {
        if (stopped) return;
        const ifc = ifcRef.current;
        callbacks++;
        const rtp = typeof meta.rtpTimestamp === 'number' ? meta.rtpTimestamp >>> 0 : null;
        if (ifc) {
          ifc.framesDecoded = typeof meta.presentedFrames === 'number' ? meta.presentedFrames : callbacks;
          ifc.lastFrameRtp = rtp;
        }
        // When the frame's last packet arrived; without it, when it is shown minus the hold.
        const received = typeof meta.receiveTime === 'number' ? meta.receiveTime : meta.expectedDisplayTime - (overlay?.targetMs ?? 0);
        render(rtp, received);
        vfcHandle = video.requestVideoFrameCallback(onFrame);
      };
      vfcHandle = video.requestVideoFrameCallback(onFrame);
    } else {
      // No per-frame callback: redraw each animation frame from the newest fresh result.
      let lastTime = -1;
      const tick = () => {
        if (stopped) return;
        const ifc = ifcRef.current;
        if (ifc && video.currentTime !== lastTime) {
          lastTime = video.currentTime;
          ifc.framesDecoded++;
        }
        render(null, performance.now());
        rafHandle = requestAnimationFrame(tick);
      };
      rafHandle = requestAnimationFrame(tick);
    }

    // The playout target follows the result lag; human-readable counters.
    const statsTimer = setInterval(() => {
      const ifc = ifcRef.current;
      if (!ifc || !overlay) return;
      overlay.update();
      ifc.playoutTargetMs = overlay.targetMs;
      ifc.jitterBufferTarget = overlay.appliedTargetMs();
      void overlay.measureDelay().then((d) => {
        ifc.jitterBufferDelayMs = d;
      });
      ifc.lagP95Ms = overlay.lag.p95();
      ifc.lagSamples = overlay.lag.count;
      const c = overlay.scheduler.counts;
      setStats({ frames: ifc.framesDecoded, results: ifc.resultsReceived, boxes: ifc.boxesDrawn, rtp: ifc.lastFrameRtp, exact: c.exact, late: c.late, dropped: c.dropped, target: overlay.targetMs, held: overlay.delayMs });
    }, PLAYOUT_UPDATE_MS);

    // The counts go to the server's metrics (imageflow_live_overlay_boxes_total).
    const reportTimer = setInterval(() => {
      if (!overlay) return;
      const d = overlay.takeCounts();
      reportOverlay(id, d, overlay.targetMs).catch(() => {
        /* metrics only: a failed report is not worth bothering the viewer */
      });
    }, REPORT_MS);

    // Redraw the last frame's boxes when the element resizes between frames.
    const ro = typeof ResizeObserver === 'function' ? new ResizeObserver(() => paint(overlayOnRef.current ? lastDrawRef.current : null)) : null;
    ro?.observe(video);

    return () => {
      stopped = true;
      if (vfcHandle !== null && typeof video.cancelVideoFrameCallback === 'function') video.cancelVideoFrameCallback(vfcHandle);
      if (rafHandle !== null) cancelAnimationFrame(rafHandle);
      clearInterval(statsTimer);
      clearInterval(reportTimer);
      ro?.disconnect();
    };
  }, [id]);

  useEffect(() => {
    const v = videoRef.current;
    const c = canvasRef.current;
    if (v && c && !overlayOn) drawOverlay(c, v, null);
  }, [overlayOn]);

  const st = cameraStatus(camera);
  const title = camera?.name || id;

  return (
    <div className="page live" data-testid="live-page">
      <div className="page-head">
        <div>
          <Link to="/" className="back">
            ← Cameras
          </Link>
          <h1 data-testid="camera-title">{title}</h1>
          <div className="muted mono">{id}</div>
        </div>
        <div className="head-actions">
          <span className="muted">Stream</span>
          <StateBadge state={conn} testId="connection-state" />
        </div>
      </div>

      <div className="live-layout">
        <section className="player-col">
          <div className="player" data-testid="player">
            <video ref={videoRef} data-testid="live-video" autoPlay playsInline muted={muted} />
            <canvas ref={canvasRef} className="overlay" data-testid="overlay-canvas" />
            {conn !== 'connected' && (
              <div className="player-msg" data-testid="player-message">
                {conn === 'retrying' ? 'Reconnecting…' : conn === 'disconnected' ? 'Connection interrupted…' : 'Connecting…'}
              </div>
            )}
          </div>
          {connError && (
            <div className="error" data-testid="connection-error">
              {connError}{' '}
              <button className="link-button" onClick={() => setAttempt((a) => a + 1)}>
                Retry now
              </button>
            </div>
          )}
          <div className="toolbar">
            <button
              onClick={() => setMuted((m) => !m)}
              disabled={!hasAudio}
              title={hasAudio ? undefined : 'This camera sends no audio'}
              data-testid="mute-toggle"
            >
              {muted ? 'Unmute' : 'Mute'}
            </button>
            <label className="check">
              <input type="checkbox" checked={overlayOn} onChange={(e) => setOverlayOn(e.target.checked)} data-testid="overlay-toggle" />
              Show detections
            </label>
            <span className="muted small" data-testid="overlay-stats">
              frames {stats.frames} · results {stats.results} · boxes {stats.boxes}
              {stats.rtp !== null ? ` · rtp ${stats.rtp}` : ''}
            </span>
            <span className="muted small" data-testid="playout-stats">
              boxes exact {stats.exact} · late {stats.late} · dropped {stats.dropped} · delay target {stats.target ?? 0} ms
              {stats.held !== null ? `, held ${stats.held} ms` : ''}
            </span>
          </div>
          {camera && <ZoneEditor key={camera.id} camera={camera} video={videoRef} onSaved={setCamera} />}
        </section>

        <aside className="card info-card" data-testid="camera-info">
          <h2>Camera</h2>
          {cameraError && <div className="error" data-testid="camera-error">{cameraError}</div>}
          <dl className="kv">
            <dt>State</dt>
            <dd>
              <StateBadge state={st.state ?? 'unknown'} testId="camera-state" />
            </dd>
            <dt>Codec</dt>
            <dd data-testid="camera-codec">{st.codec || '—'}</dd>
            <dt>Resolution</dt>
            <dd data-testid="camera-resolution">{st.width && st.height ? `${st.width}×${st.height}` : '—'}</dd>
            <dt>Frame rate</dt>
            <dd data-testid="camera-fps">{st.fps !== undefined ? `${st.fps.toFixed(1)} fps` : '—'}</dd>
            <dt>Bitrate</dt>
            <dd data-testid="camera-bitrate">{formatBitrate(st.bitrate)}</dd>
            <dt>Source</dt>
            <dd className="mono wrap">{camera?.source || '—'}</dd>
            <dt>Pipeline</dt>
            <dd className="mono">{camera?.pipeline || '—'}</dd>
          </dl>
          {st.last_error && (
            <div className="error" data-testid="camera-last-error">
              <strong>Last error:</strong> {st.last_error}
            </div>
          )}
          <p className="muted small">
            Publishing from a browser? Open <Link to={publishURL(id)}>the publish page</Link> on the sending device.
          </p>
          <RecentEvents camera={id} />
        </aside>
      </div>
      <RecordingPlayer id={id} />
    </div>
  );
}
