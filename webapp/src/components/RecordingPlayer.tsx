import { useEffect, useMemo, useRef, useState, type MouseEvent } from 'react';
import { errorMessage } from '../api';
import { exportURL, formatClock, fraction, listRecordings, playRange, spansOf, type RecordingList, type Span } from '../recordings';

const POLL_MS = 10_000;
/** How much one click loads: the export is one MP4 of at most this long. */
const PLAY_MS = 5 * 60_000;
const WINDOWS = [
  { label: '10 min', ms: 10 * 60_000 },
  { label: '1 hour', ms: 60 * 60_000 },
  { label: '24 hours', ms: 24 * 60 * 60_000 },
];
const SPEEDS = [0.5, 1, 2, 4, 8];

/** What tests (headless Chromium) read of the player. */
interface PlaybackProbe {
  spans: number;
  since: number | null;
  until: number | null;
  src: string;
  frames: number;
  loads: number;
  error: string | null;
}

declare global {
  interface Window {
    __ifcPlayback?: PlaybackProbe;
  }
}

/** Local date-time for <input type="datetime-local" step="1">. */
function toLocalInput(t: number): string {
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}

/**
 * The recordings of a camera: a timeline of recorded spans (gaps left
 * empty), click to play from that time, speed, and a download of a range.
 */
export function RecordingPlayer({ id }: { id: string }) {
  const videoRef = useRef<HTMLVideoElement>(null);
  const probeRef = useRef<PlaybackProbe>({ spans: 0, since: null, until: null, src: '', frames: 0, loads: 0, error: null });
  const [windowMs, setWindowMs] = useState(WINDOWS[1].ms);
  const [list, setList] = useState<RecordingList | null>(null);
  const [now, setNow] = useState(() => Date.now());
  const [error, setError] = useState<string | null>(null);
  const [range, setRange] = useState<Span | null>(null);
  const [speed, setSpeed] = useState(1);
  const [position, setPosition] = useState<number | null>(null);
  const [dlFrom, setDlFrom] = useState('');
  const [dlTo, setDlTo] = useState('');

  window.__ifcPlayback = probeRef.current;

  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      const until = Date.now();
      try {
        const l = await listRecordings(id, new Date(until - windowMs), new Date(until));
        if (!stop) {
          setList(l);
          setNow(until);
          setError(null);
        }
      } catch (e) {
        if (!stop) setError(errorMessage(e));
      }
      if (!stop) timer = setTimeout(poll, POLL_MS);
    };
    void poll();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [id, windowMs]);

  const spans = useMemo(() => spansOf(list?.segments ?? []), [list]);
  probeRef.current.spans = spans.length;
  const from = now - windowMs;

  // Count decoded frames of the recording as the browser presents them.
  useEffect(() => {
    const v = videoRef.current;
    if (!v || typeof v.requestVideoFrameCallback !== 'function') return;
    let handle = 0;
    let stopped = false;
    const onFrame: VideoFrameRequestCallback = (_t, meta) => {
      if (stopped) return;
      probeRef.current.frames = meta.presentedFrames;
      handle = v.requestVideoFrameCallback(onFrame);
    };
    handle = v.requestVideoFrameCallback(onFrame);
    return () => {
      stopped = true;
      v.cancelVideoFrameCallback(handle);
    };
  }, [range]);

  useEffect(() => {
    const v = videoRef.current;
    if (v) v.playbackRate = speed;
  }, [speed, range]);

  const playAt = (t: number) => {
    const r = playRange(spans, t, PLAY_MS);
    if (!r) return;
    setRange(r);
    setDlFrom(toLocalInput(r.start));
    setDlTo(toLocalInput(r.end));
    const p = probeRef.current;
    p.since = r.start;
    p.until = r.end;
    p.src = exportURL(id, r.start, r.end);
    p.loads++;
    p.error = null;
  };

  const onTimelineClick = (e: MouseEvent<HTMLDivElement>) => {
    const box = e.currentTarget.getBoundingClientRect();
    playAt(from + ((e.clientX - box.left) / box.width) * windowMs);
  };

  const src = range ? exportURL(id, range.start, range.end) : '';
  const dlStart = Date.parse(dlFrom);
  const dlEnd = Date.parse(dlTo);
  const dlOK = Number.isFinite(dlStart) && Number.isFinite(dlEnd) && dlEnd > dlStart && dlEnd - dlStart <= 30 * 60_000;

  return (
    <section className="card recordings" data-testid="recordings">
      <div className="recordings-head">
        <h2>Recordings</h2>
        <span className="muted small" data-testid="recording-state">
          {list?.recording ? 'recording' : 'not recording'}
        </span>
        <select value={windowMs} onChange={(e) => setWindowMs(Number(e.target.value))} data-testid="recording-window">
          {WINDOWS.map((w) => (
            <option key={w.ms} value={w.ms}>
              last {w.label}
            </option>
          ))}
        </select>
      </div>
      {error && <div className="error">{error}</div>}
      <div className="timeline" onClick={onTimelineClick} data-testid="timeline" title="Click to play from that time">
        {spans.map((s) => (
          <div
            key={s.start}
            className="timeline-span"
            data-testid="timeline-span"
            style={{ left: `${fraction(s.start, from, now) * 100}%`, width: `${(fraction(s.end, from, now) - fraction(s.start, from, now)) * 100}%` }}
          />
        ))}
        {position !== null && <div className="timeline-cursor" style={{ left: `${fraction(position, from, now) * 100}%` }} />}
      </div>
      <div className="timeline-labels muted small">
        <span>{formatClock(from)}</span>
        <span>{spans.length === 0 ? 'nothing recorded in this window' : `${spans.length} recorded span${spans.length > 1 ? 's' : ''}`}</span>
        <span>{formatClock(now)}</span>
      </div>
      {range && (
        <div className="recording-player">
          <video
            ref={videoRef}
            src={src}
            controls
            autoPlay
            muted
            playsInline
            data-testid="recording-video"
            onTimeUpdate={(e) => setPosition(range.start + e.currentTarget.currentTime * 1000)}
            onError={(e) => {
              probeRef.current.error = e.currentTarget.error?.message || 'playback error';
            }}
          />
          <div className="toolbar">
            <span className="muted small" data-testid="recording-position">
              {position !== null ? formatClock(position) : formatClock(range.start)}
            </span>
            <label>
              Speed{' '}
              <select value={speed} onChange={(e) => setSpeed(Number(e.target.value))} data-testid="recording-speed">
                {SPEEDS.map((s) => (
                  <option key={s} value={s}>
                    {s}×
                  </option>
                ))}
              </select>
            </label>
          </div>
        </div>
      )}
      <div className="toolbar">
        <label>
          From <input type="datetime-local" step="1" value={dlFrom} onChange={(e) => setDlFrom(e.target.value)} data-testid="download-from" />
        </label>
        <label>
          to <input type="datetime-local" step="1" value={dlTo} onChange={(e) => setDlTo(e.target.value)} data-testid="download-to" />
        </label>
        {dlOK ? (
          <a className="button" href={exportURL(id, dlStart, dlEnd)} download={`${id}.mp4`} data-testid="download-range">
            Download this range
          </a>
        ) : (
          <span className="muted small">pick a range of up to 30 minutes to download</span>
        )}
      </div>
    </section>
  );
}
