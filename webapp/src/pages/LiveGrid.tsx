// The live grid: every camera at once with its detections drawn, tiles sized
// to fill the window; a click focuses one tile. A tile plays (holds a WHEP
// session) only while it is on screen: scrolled out of view it ends its
// session, so a long grid costs the server only what is watched.
import { useEffect, useRef, useState } from 'react';
import { cameraPath, listCameras, type Camera } from '../api';
import { drawOverlay } from '../draw';
import { LiveOverlay } from '../liveoverlay';
import { parseMessage } from '../overlay';
import { DEFAULT_PLAYOUT, type FrameDraw } from '../playout';
import { Link, cameraURL } from '../router';
import { deleteSession, exchangeSdp, waitIceGathering } from '../webrtc';
import { StateBadge } from './common';
import { useLoad } from './useLoad';

const RETRY_MS = 3000;
const CAMERA_POLL_MS = 5000;
const HEADER_PX = 130;

/** What tests and debugging read from window.__ifc on this page. */
interface GridIfc {
  page: 'live-grid';
  tiles: Record<string, { state: string; framesDecoded: number; boxesDrawn: number; sessions: number; visible: boolean }>;
}

function gridIfc(): GridIfc {
  const w = window as unknown as { __ifc?: GridIfc };
  if (w.__ifc?.page !== 'live-grid') w.__ifc = { page: 'live-grid', tiles: {} };
  return w.__ifc!;
}

export function LiveGrid() {
  const cameras = useLoad(listCameras, CAMERA_POLL_MS);
  const [focused, setFocused] = useState<string | null>(null);
  const [height, setHeight] = useState(() => window.innerHeight);
  useEffect(() => {
    const onResize = () => setHeight(window.innerHeight);
    window.addEventListener('resize', onResize);
    return () => window.removeEventListener('resize', onResize);
  }, []);
  useEffect(() => {
    gridIfc();
  }, []);

  const list = (cameras.data ?? []).filter((c) => c.enabled !== false);
  const cols = Math.max(1, Math.ceil(Math.sqrt(list.length)));
  const rows = Math.max(1, Math.ceil(list.length / cols));
  // Tiles fill the window's height: a 2×2 grid shows all four without scrolling.
  const tileHeight = Math.max(160, Math.floor((height - HEADER_PX) / rows) - 8);

  return (
    <div className="live-grid-page" data-testid="live-grid-page">
      <div className="section-head">
        <h1>Live</h1>
        <span className="muted small">Click a picture to focus it; click again to go back to the grid.</span>
      </div>
      {cameras.error && <div className="error">{cameras.error}</div>}
      {cameras.data !== null && list.length === 0 && <p className="muted">No enabled cameras.</p>}
      <div className="live-grid" style={{ gridTemplateColumns: `repeat(${focused ? 1 : cols}, 1fr)` }} data-testid="live-grid">
        {list
          .filter((c) => !focused || c.id === focused)
          .map((c) => (
            <LiveTile
              key={c.id}
              camera={c}
              height={focused ? height - HEADER_PX : tileHeight}
              focused={focused === c.id}
              onClick={() => setFocused(focused === c.id ? null : c.id)}
            />
          ))}
      </div>
    </div>
  );
}

function LiveTile({ camera, height, focused, onClick }: { camera: Camera; height: number; focused: boolean; onClick: () => void }) {
  const id = camera.id;
  const tileRef = useRef<HTMLDivElement>(null);
  const videoRef = useRef<HTMLVideoElement>(null);
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const [visible, setVisible] = useState(false);
  const [state, setState] = useState('idle');

  // Play only while on screen.
  useEffect(() => {
    const el = tileRef.current;
    if (!el || typeof IntersectionObserver !== 'function') {
      setVisible(true);
      return;
    }
    const io = new IntersectionObserver((entries) => setVisible(entries.some((e) => e.isIntersecting)), { threshold: 0.01 });
    io.observe(el);
    return () => io.disconnect();
  }, []);

  useEffect(() => {
    const ifc = gridIfc();
    const tile = (ifc.tiles[id] ??= { state: 'idle', framesDecoded: 0, boxesDrawn: 0, sessions: 0, visible });
    tile.visible = visible;
    const report = (s: string) => {
      tile.state = s;
      setState(s);
    };
    if (!visible) {
      report('paused');
      return;
    }
    // The same overlay timing as the camera page: each frame gets its own
    // result's boxes, the receiver's playout delay follows the results' lag.
    const overlay = new LiveOverlay(DEFAULT_PLAYOUT);
    overlay.setResultsExpected(!!camera.pipeline);
    const updater = setInterval(() => overlay.update(), 1000);
    let cancelled = false;
    let pc: RTCPeerConnection | null = null;
    let location: string | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let vfc: number | null = null;

    const teardown = () => {
      if (location) void deleteSession(location);
      location = null;
      pc?.close();
      pc = null;
    };
    const scheduleRetry = () => {
      if (cancelled) return;
      teardown();
      report('retrying');
      retry = setTimeout(() => void connect(), RETRY_MS);
    };
    const connect = async () => {
      report('connecting');
      const p = new RTCPeerConnection();
      pc = p;
      p.addTransceiver('video', { direction: 'recvonly' });
      const dc = p.createDataChannel('results');
      dc.binaryType = 'arraybuffer';
      const decoder = new TextDecoder();
      dc.onmessage = (ev: MessageEvent) => {
        const text = typeof ev.data === 'string' ? ev.data : ev.data instanceof ArrayBuffer ? decoder.decode(ev.data) : '';
        for (const r of parseMessage(text)) overlay.onResult(r, performance.now());
      };
      p.ontrack = (ev) => {
        const v = videoRef.current;
        if (v && ev.track.kind === 'video') {
          overlay.attach(ev.receiver);
          v.srcObject = new MediaStream([ev.track]);
          v.play().catch(() => {
            /* muted autoplay normally succeeds */
          });
        }
      };
      p.onconnectionstatechange = () => {
        if (pc !== p) return;
        if (p.connectionState === 'connected') report('connected');
        if (p.connectionState === 'failed') scheduleRetry();
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
        tile.sessions++;
        await p.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      } catch {
        scheduleRetry();
      }
    };

    // Boxes: the result for each presented frame's RTP timestamp.
    const video = videoRef.current;
    const canvas = canvasRef.current;
    if (video && canvas && typeof video.requestVideoFrameCallback === 'function') {
      const onFrame: VideoFrameRequestCallback = (_now, meta) => {
        if (cancelled) return;
        tile.framesDecoded++;
        const rtp = typeof meta.rtpTimestamp === 'number' ? meta.rtpTimestamp >>> 0 : null;
        const received = typeof meta.receiveTime === 'number' ? meta.receiveTime : meta.expectedDisplayTime - (overlay.targetMs ?? 0);
        const draw: FrameDraw | null = rtp === null ? null : overlay.onFrame(rtp, received);
        tile.boxesDrawn += drawOverlay(canvas, video, draw ? draw.result : null, draw ? { detections: draw.detections, late: draw.late } : {});
        vfc = video.requestVideoFrameCallback(onFrame);
      };
      vfc = video.requestVideoFrameCallback(onFrame);
    }

    void connect();
    return () => {
      cancelled = true;
      clearTimeout(retry);
      clearInterval(updater);
      if (video && vfc !== null) video.cancelVideoFrameCallback(vfc);
      teardown();
      if (video) video.srcObject = null;
    };
  }, [id, visible, camera.pipeline]);

  return (
    <div
      ref={tileRef}
      className={`live-tile${focused ? ' focused' : ''}`}
      style={{ height }}
      onClick={onClick}
      data-testid="live-tile"
      data-camera-id={id}
      data-state={state}
    >
      <video ref={videoRef} autoPlay playsInline muted />
      <canvas ref={canvasRef} className="overlay" />
      <div className="live-tile-label" onClick={(e) => e.stopPropagation()}>
        <Link to={cameraURL(id)}>{camera.name || id}</Link> <StateBadge state={state} />
      </div>
    </div>
  );
}
