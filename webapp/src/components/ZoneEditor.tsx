// The zone editor: grabs the live video's current frame, lets the user
// click a polygon on it, and saves the camera's zones.
import { useEffect, useRef, useState, type RefObject } from 'react';
import { errorMessage, type Camera } from '../api';
import { saveZones, type Zone } from '../events';

type Point = [number, number];

function drawZones(canvas: HTMLCanvasElement, frame: HTMLCanvasElement | null, zones: Zone[], draft: Point[]) {
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (frame) ctx.drawImage(frame, 0, 0, w, h);
  else {
    ctx.fillStyle = '#222';
    ctx.fillRect(0, 0, w, h);
  }
  const poly = (pts: Point[], color: string, close: boolean) => {
    if (pts.length === 0) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x * w, y * h) : ctx.lineTo(x * w, y * h)));
    if (close) ctx.closePath();
    ctx.stroke();
    for (const [x, y] of pts) ctx.fillRect(x * w - 2, y * h - 2, 4, 4);
  };
  zones.forEach((z) => {
    poly(z.points as Point[], '#3c9', true);
    const [x, y] = z.points[0] as Point;
    ctx.fillStyle = '#3c9';
    ctx.fillText(z.name, x * w + 4, y * h + 12);
  });
  ctx.fillStyle = '#fc3';
  poly(draft, '#fc3', false);
}

export function ZoneEditor({ camera, video, onSaved }: { camera: Camera; video: RefObject<HTMLVideoElement | null>; onSaved?: (c: Camera) => void }) {
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const frameRef = useRef<HTMLCanvasElement | null>(null);
  const [zones, setZones] = useState<Zone[]>(camera.zones ?? []);
  const [draft, setDraft] = useState<Point[]>([]);
  const [name, setName] = useState('');
  const [labels, setLabels] = useState('person');
  const [dwell, setDwell] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);

  const grab = () => {
    const v = video.current;
    if (!v || !v.videoWidth) {
      setError('no video frame yet');
      return;
    }
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    c.getContext('2d')?.drawImage(v, 0, 0);
    frameRef.current = c;
    if (canvasRef.current) {
      canvasRef.current.width = 640;
      canvasRef.current.height = Math.round((640 * v.videoHeight) / v.videoWidth);
    }
    setError(null);
    setDraft((d) => d.slice());
  };

  useEffect(() => {
    if (canvasRef.current) drawZones(canvasRef.current, frameRef.current, zones, draft);
  }, [zones, draft]);
  useEffect(grab, []); // eslint-disable-line react-hooks/exhaustive-deps

  const click = (e: React.MouseEvent<HTMLCanvasElement>) => {
    const r = e.currentTarget.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, (e.clientY - r.top) / r.height));
    setDraft((d) => (d.length < 64 ? [...d, [Number(x.toFixed(4)), Number(y.toFixed(4))]] : d));
  };

  const add = () => {
    if (draft.length < 3 || !name.trim()) {
      setError('a zone needs a name and at least 3 points');
      return;
    }
    const ls = labels
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    setZones([...zones.filter((z) => z.name !== name.trim()), { name: name.trim(), points: draft, labels: ls, min_dwell_ms: Math.max(0, Math.round(dwell * 1000)) }]);
    setDraft([]);
    setName('');
    setError(null);
  };

  const save = async () => {
    try {
      const c = await saveZones(camera, zones);
      setSaved(true);
      setError(null);
      onSaved?.(c);
    } catch (e) {
      setError(errorMessage(e));
    }
  };

  return (
    <section className="card zone-editor" data-testid="zone-editor">
      <h2>Zones</h2>
      <p className="muted small">Click on the frame to place a polygon's corners; events then come only from objects whose feet stay in a zone.</p>
      <canvas ref={canvasRef} width={640} height={360} onClick={click} data-testid="zone-canvas" style={{ maxWidth: '100%', cursor: 'crosshair' }} />
      <div className="toolbar">
        <button onClick={grab}>Grab frame</button>
        <input placeholder="zone name" value={name} onChange={(e) => setName(e.target.value)} data-testid="zone-name" />
        <input placeholder="labels (comma separated)" value={labels} onChange={(e) => setLabels(e.target.value)} data-testid="zone-labels" />
        <label className="small">
          dwell s <input type="number" min={0} step={0.5} value={dwell} onChange={(e) => setDwell(Number(e.target.value))} style={{ width: '4em' }} />
        </label>
        <button onClick={add} data-testid="zone-add">
          Add zone
        </button>
        <button onClick={() => setDraft([])}>Clear points</button>
      </div>
      <ul data-testid="zone-list">
        {zones.map((z) => (
          <li key={z.name}>
            {z.name} ({z.points.length} points{z.labels.length ? `, ${z.labels.join(', ')}` : ''}
            {z.min_dwell_ms ? `, ${z.min_dwell_ms / 1000} s` : ''}){' '}
            <button className="link-button" onClick={() => setZones(zones.filter((x) => x.name !== z.name))}>
              remove
            </button>
          </li>
        ))}
      </ul>
      <button onClick={() => void save()} data-testid="zone-save">
        Save zones
      </button>
      {saved && <span className="muted small"> saved</span>}
      {error && <div className="error" data-testid="zone-error">{error}</div>}
    </section>
  );
}
