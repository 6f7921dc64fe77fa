import { useCallback, useEffect, useRef, useState } from 'react';
import { cameraPath, errorMessage, formatBitrate } from '../api';
import { initPublishIfc, type PublishIfc } from '../ifc';
import { Link, cameraURL } from '../router';
import { deleteSession, exchangeSdp, preferH264, waitIceGathering } from '../webrtc';
import { StateBadge } from './common';

interface SendStats {
  frames: number;
  bitrate?: number;
  width?: number;
  height?: number;
  fps?: number;
  codec?: string;
}

/** Sums outbound video stats; bitrate from the bytesSent delta since the previous sample. */
async function sampleStats(pc: RTCPeerConnection, prev: { bytes: number; at: number } | null) {
  const report = await pc.getStats();
  let frames = 0;
  let bytes = 0;
  let width: number | undefined;
  let height: number | undefined;
  let fps: number | undefined;
  let codecId: string | undefined;
  report.forEach((s: Record<string, unknown>) => {
    if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
    if (typeof s.framesEncoded === 'number') frames += s.framesEncoded;
    if (typeof s.bytesSent === 'number') bytes += s.bytesSent;
    if (typeof s.frameWidth === 'number') width = s.frameWidth;
    if (typeof s.frameHeight === 'number') height = s.frameHeight;
    if (typeof s.framesPerSecond === 'number') fps = s.framesPerSecond;
    if (typeof s.codecId === 'string') codecId = s.codecId;
  });
  let codec: string | undefined;
  if (codecId) {
    const c = report.get(codecId) as { mimeType?: string } | undefined;
    codec = c?.mimeType?.replace(/^video\//i, '');
  }
  const now = performance.now();
  const bitrate = prev && now > prev.at ? ((bytes - prev.bytes) * 8 * 1000) / (now - prev.at) : undefined;
  return { stats: { frames, bitrate, width, height, fps, codec } as SendStats, mark: { bytes, at: now } };
}

export function Publish({ id }: { id: string }) {
  const previewRef = useRef<HTMLVideoElement>(null);
  const ifcRef = useRef<PublishIfc | null>(null);
  const sessionRef = useRef<{
    pc: RTCPeerConnection | null;
    stream: MediaStream | null;
    location: string | null;
    statsTimer: ReturnType<typeof setInterval> | undefined;
    generation: number;
  }>({ pc: null, stream: null, location: null, statsTimer: undefined, generation: 0 });

  const [state, setStateView] = useState('idle');
  const [error, setErrorView] = useState<string | null>(null);
  const [stats, setStats] = useState<SendStats>({ frames: 0 });
  const [h264, setH264] = useState<boolean | null>(null);

  if (ifcRef.current === null || ifcRef.current.camera !== id) ifcRef.current = initPublishIfc(id);

  const secure = typeof window !== 'undefined' && window.isSecureContext && !!navigator.mediaDevices?.getUserMedia;

  const setState = useCallback((s: string) => {
    if (ifcRef.current) ifcRef.current.state = s;
    setStateView(s);
  }, []);
  const setError = useCallback((msg: string | null) => {
    if (ifcRef.current) ifcRef.current.error = msg;
    setErrorView(msg);
  }, []);

  /** Ends the session and releases the camera; safe to call repeatedly. */
  const release = useCallback(() => {
    const s = sessionRef.current;
    s.generation++;
    clearInterval(s.statsTimer);
    s.statsTimer = undefined;
    if (s.location) void deleteSession(s.location);
    s.location = null;
    if (s.pc) {
      s.pc.onconnectionstatechange = null;
      s.pc.close();
    }
    s.pc = null;
    s.stream?.getTracks().forEach((t) => t.stop());
    s.stream = null;
    if (previewRef.current) previewRef.current.srcObject = null;
  }, []);

  const stop = useCallback(() => {
    release();
    setState('stopped');
  }, [release, setState]);

  const start = useCallback(async () => {
    release();
    const s = sessionRef.current;
    const gen = s.generation;
    const current = () => sessionRef.current.generation === gen;
    setError(null);
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      setState('unsupported');
      setError('Camera access needs a secure context: open this page over https:// or on http://localhost.');
      return;
    }
    setState('starting');
    try {
      // The microphone goes along when there is one (viewers can unmute);
      // a device without one, or a refused microphone, publishes video only.
      const stream = await navigator.mediaDevices
        .getUserMedia({ video: true, audio: true })
        .catch(() => navigator.mediaDevices.getUserMedia({ video: true, audio: false }));
      if (!current()) {
        stream.getTracks().forEach((t) => t.stop());
        return;
      }
      s.stream = stream;
      if (previewRef.current) {
        previewRef.current.srcObject = stream;
        previewRef.current.play().catch(() => {});
      }
      const track = stream.getVideoTracks()[0];
      if (!track) throw new Error('the camera gave no video track');

      const pc = new RTCPeerConnection();
      s.pc = pc;
      const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      setH264(preferH264(tr));
      for (const a of stream.getAudioTracks()) pc.addTransceiver(a, { direction: 'sendonly', streams: [stream] });
      pc.onconnectionstatechange = () => {
        if (!current()) return;
        switch (pc.connectionState) {
          case 'connected':
            setError(null);
            setState('publishing');
            break;
          case 'disconnected':
            setState('disconnected');
            break;
          case 'failed':
            setState('failed');
            setError('WebRTC connection failed');
            break;
          default:
            break;
        }
      };

      setState('connecting');
      await pc.setLocalDescription(await pc.createOffer());
      await waitIceGathering(pc, 2000);
      if (!current()) return;
      const answer = await exchangeSdp(`${cameraPath(id)}/whip`, pc.localDescription?.sdp ?? '');
      if (!current()) {
        if (answer.location) void deleteSession(answer.location);
        return;
      }
      s.location = answer.location;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });

      let mark: { bytes: number; at: number } | null = null;
      s.statsTimer = setInterval(() => {
        if (!current() || !s.pc) return;
        sampleStats(s.pc, mark)
          .then((r) => {
            if (!current()) return;
            mark = r.mark;
            if (ifcRef.current) ifcRef.current.framesSent = r.stats.frames;
            setStats(r.stats);
          })
          .catch(() => {});
      }, 1000);
    } catch (e) {
      if (!current()) return;
      const msg = e instanceof DOMException && e.name === 'NotAllowedError' ? 'Camera permission was denied.' : errorMessage(e);
      release();
      setState('error');
      setError(msg);
    }
  }, [id, release, setError, setState]);

  // Start publishing when the page opens (add ?autostart=0 to wait for the button); stop on leave.
  useEffect(() => {
    const auto = new URLSearchParams(window.location.search).get('autostart') !== '0';
    if (auto) void start();
    window.addEventListener('pagehide', release);
    return () => {
      window.removeEventListener('pagehide', release);
      release();
      if (ifcRef.current) ifcRef.current.state = 'stopped';
    };
  }, [start, release]);

  const active = state === 'starting' || state === 'connecting' || state === 'publishing' || state === 'disconnected';

  return (
    <div className="page publish" data-testid="publish-page">
      <div className="page-head">
        <div>
          <Link to={cameraURL(id)} className="back">
            ← Live view of {id}
          </Link>
          <h1>Publish to “{id}”</h1>
          <div className="muted small">This device’s camera is sent to the server over WHIP.</div>
        </div>
        <div className="head-actions">
          <StateBadge state={state} testId="publish-state" />
        </div>
      </div>

      {!secure && (
        <div className="error" data-testid="insecure-context">
          This page is not a secure context, so the browser will not give it the camera. Open it over https:// or on http://localhost.
        </div>
      )}
      {error && <div className="error" data-testid="publish-error">{error}</div>}

      <div className="live-layout">
        <section className="player-col">
          <div className="player">
            <video ref={previewRef} data-testid="publish-preview" autoPlay playsInline muted />
            {!active && <div className="player-msg">{state === 'stopped' ? 'Stopped' : 'Not publishing'}</div>}
          </div>
          <div className="toolbar">
            {active ? (
              <button className="danger" onClick={stop} data-testid="publish-stop">
                Stop
              </button>
            ) : (
              <button className="primary" onClick={() => void start()} data-testid="publish-start">
                Start publishing
              </button>
            )}
          </div>
        </section>
        <aside className="card info-card">
          <h2>Sending</h2>
          <dl className="kv">
            <dt>Frames sent</dt>
            <dd data-testid="frames-sent">{stats.frames}</dd>
            <dt>Codec</dt>
            <dd>{stats.codec ?? (h264 === false ? 'browser default' : '—')}</dd>
            <dt>Resolution</dt>
            <dd>{stats.width && stats.height ? `${stats.width}×${stats.height}` : '—'}</dd>
            <dt>Frame rate</dt>
            <dd>{stats.fps !== undefined ? `${stats.fps.toFixed(0)} fps` : '—'}</dd>
            <dt>Bitrate</dt>
            <dd>{formatBitrate(stats.bitrate)}</dd>
          </dl>
        </aside>
      </div>
    </div>
  );
}
