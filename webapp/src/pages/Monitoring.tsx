// The monitoring page: small live charts (uPlot) of every camera's frame
// rate, bitrate, frame-to-result latency and skipped frames, and a table of
// pipeline step latencies, from GET /api/v1/monitoring polled every 2 s. The
// history lives in the page (the last 5 minutes); the server keeps none.
import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { client, unwrap, type Schemas } from '../api';
import { Link, cameraURL } from '../router';
import { StateBadge } from './common';
import { useLoad } from './useLoad';

type MonitoringData = Schemas['Monitoring'];

const POLL_MS = 2000;
const HISTORY = 150;
const COLORS = ['#0284c7', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#db2777', '#0d9488', '#4b5563'];

async function getMonitoring(): Promise<MonitoringData> {
  return unwrap(await client.GET('/api/v1/monitoring'));
}

/** One sample of every camera's figures at a time (seconds). */
interface Sample {
  t: number;
  cams: Record<string, { fps: number; mbps: number; latency: number; skippedPerS: number }>;
}

/** Test and debugging hooks (window.__ifc). */
interface MonitoringIfc {
  page: 'monitoring';
  samples: number;
  charts: number;
}

export function Monitoring() {
  const { data, error } = useLoad(getMonitoring, POLL_MS);
  const [samples, setSamples] = useState<Sample[]>([]);
  const prev = useRef<{ t: number; skipped: Record<string, number> } | null>(null);
  const ifc = useRef<MonitoringIfc>({ page: 'monitoring', samples: 0, charts: 0 });
  useEffect(() => {
    (window as unknown as { __ifc: MonitoringIfc }).__ifc = ifc.current;
  }, []);

  useEffect(() => {
    if (!data) return;
    const t = Date.now() / 1000;
    const cams: Sample['cams'] = {};
    const skipped: Record<string, number> = {};
    for (const c of data.cameras) {
      skipped[c.id] = c.skipped;
      const p = prev.current;
      const dt = p ? t - p.t : 0;
      const before = p?.skipped[c.id];
      cams[c.id] = {
        fps: c.fps,
        mbps: c.bitrate / 1e6,
        latency: c.latency_p50_ms,
        skippedPerS: dt > 0 && before !== undefined ? Math.max(0, (c.skipped - before) / dt) : 0,
      };
    }
    prev.current = { t, skipped };
    setSamples((s) => [...s.slice(-(HISTORY - 1)), { t, cams }]);
  }, [data]);
  ifc.current.samples = samples.length;

  const ids = (data?.cameras ?? []).map((c) => c.id);
  const series = (pick: (v: Sample['cams'][string]) => number): (number | null)[][] => [
    samples.map((s) => s.t),
    ...ids.map((id) => samples.map((s) => (s.cams[id] ? pick(s.cams[id]) : null))),
  ];

  return (
    <div className="page" data-testid="monitoring">
      <div className="section-head">
        <h1>Monitoring</h1>
        {data?.grafana_url && (
          <a href={data.grafana_url} target="_blank" rel="noreferrer" className="button" data-testid="grafana-link">
            Open the Grafana dashboard
          </a>
        )}
      </div>
      {error && <div className="error">{error}</div>}
      {data && data.cameras.length === 0 && <p className="muted">No cameras.</p>}
      <div className="chart-grid">
        <LiveChart title="Frames per second" labels={ids} data={series((v) => v.fps)} onReady={() => ifc.current.charts++} />
        <LiveChart title="Bitrate (Mbit/s)" labels={ids} data={series((v) => v.mbps)} onReady={() => ifc.current.charts++} />
        <LiveChart title="Frame-to-result latency p50 (ms)" labels={ids} data={series((v) => v.latency)} onReady={() => ifc.current.charts++} />
        <LiveChart title="Skipped frames per second" labels={ids} data={series((v) => v.skippedPerS)} onReady={() => ifc.current.charts++} />
      </div>

      <h2>Cameras</h2>
      <table className="table" data-testid="monitoring-cameras">
        <thead>
          <tr>
            <th>camera</th>
            <th>state</th>
            <th>pipeline</th>
            <th>fps</th>
            <th>bitrate</th>
            <th>latency p50 / p99</th>
            <th>results</th>
            <th>skipped</th>
          </tr>
        </thead>
        <tbody>
          {(data?.cameras ?? []).map((c) => (
            <tr key={c.id} data-camera-id={c.id}>
              <td>
                <Link to={cameraURL(c.id)}>{c.name || c.id}</Link>
              </td>
              <td>
                <StateBadge state={c.state} />
              </td>
              <td className="mono">{c.pipeline || '—'}</td>
              <td>{c.fps.toFixed(1)}</td>
              <td>{(c.bitrate / 1e6).toFixed(2)} Mbit/s</td>
              <td>
                {c.latency_p50_ms.toFixed(0)} / {c.latency_p99_ms.toFixed(0)} ms
              </td>
              <td>{c.results}</td>
              <td>{c.skipped}</td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Pipeline steps</h2>
      <p className="muted small">Processing time per image since the server started.</p>
      <table className="table" data-testid="monitoring-steps">
        <thead>
          <tr>
            <th>pipeline</th>
            <th>step</th>
            <th>processor</th>
            <th>runs</th>
            <th>p50</th>
            <th>p99</th>
          </tr>
        </thead>
        <tbody>
          {(data?.steps ?? []).map((s) => (
            <tr key={`${s.pipeline}/${s.step}`} data-step={s.step}>
              <td className="mono">{s.pipeline}</td>
              <td className="mono">{s.step}</td>
              <td className="mono">{s.processor}</td>
              <td>{s.count}</td>
              <td>{s.p50_ms.toFixed(2)} ms</td>
              <td>{s.p99_ms.toFixed(2)} ms</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** A small uPlot time chart, one line per label; rebuilt when the labels change. */
function LiveChart({ title, labels, data, onReady }: { title: string; labels: string[]; data: (number | null)[][]; onReady: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = labels.join('\u0000');

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(240, el.clientWidth);
    const u = new uPlot(
      {
        width: width(),
        height: 180,
        legend: { show: true },
        scales: { x: { time: true } },
        series: [{}, ...labels.map((l, i) => ({ label: l, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
      },
      data as uPlot.AlignedData,
      el,
    );
    plot.current = u;
    onReady();
    const ro = new ResizeObserver(() => u.setSize({ width: width(), height: 180 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the set of lines changes; data updates go through setData.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  return (
    <div className="card chart" data-testid="chart">
      <h3>{title}</h3>
      <div ref={box} />
    </div>
  );
}
