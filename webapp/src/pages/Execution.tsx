// One batch execution: live progress from the server's event stream, the
// per-file results with output thumbnails, a zip download and Cancel.
import { useCallback, useEffect, useRef, useState } from 'react';
import { apiFetch, errorMessage, onTokenChange, responseError, type Schemas } from '../api';
import { initExecutionIfc, type ExecutionIfc } from '../ifc';
import { Link } from '../router';
import { StateBadge } from './common';
import { ProgressBar, executionPath, formatTime, getExecution, withToken, type ExecutionFile, type ExecutionRecord } from './Executions';

const TERMINAL = new Set(['done', 'failed', 'cancelled']);
/** Coalesces the record re-reads that file progress messages trigger. */
const REFETCH_MS = 300;
/** How often the record is read when the event stream is unavailable. */
const POLL_MS = 2000;

/** A progress message of GET …/events (proto field names, enums by name). */
type Progress = Schemas['ExecutionProgress'];

interface Counters {
  state: string;
  done: number;
  failed: number;
  total: number;
  percent: number;
}

const FILE_STATES: ReadonlySet<string> = new Set<ExecutionFile['state']>(['pending', 'running', 'done', 'failed', 'cancelled']);

/** FILE_STATE_DONE → done; FILE_STATE_UNSPECIFIED (a message about the whole execution) or an unknown state → ''. */
export function fileStateName(s: string | undefined): ExecutionFile['state'] | '' {
  if (!s) return '';
  const n = s.replace(/^FILE_STATE_/, '').toLowerCase();
  return FILE_STATES.has(n) ? (n as ExecutionFile['state']) : '';
}

function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms) || ms <= 0) return '—';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

export function Execution({ id }: { id: string }) {
  const [rec, setRec] = useState<ExecutionRecord | null>(null);
  const [counters, setCounters] = useState<Counters | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [live, setLive] = useState<'connecting' | 'live' | 'polling' | 'ended'>('connecting');
  const [cancelling, setCancelling] = useState(false);
  const [nonce, setNonce] = useState(0);
  // Made once: useRef's argument is evaluated on every render, and each
  // call would replace window.__ifc with an object nothing updates.
  const ifc = useRef<ExecutionIfc | null>(null);
  if (ifc.current === null) ifc.current = initExecutionIfc(id);
  const st = ifc.current;
  const terminalSeen = useRef(false);

  useEffect(() => onTokenChange(() => setNonce((n) => n + 1)), []);

  // Counters only move forward once the execution is finished: a late
  // record read must not undo the end the stream reported.
  const applyCounters = useCallback((c: Counters) => {
    if (terminalSeen.current && !TERMINAL.has(c.state)) return;
    if (TERMINAL.has(c.state)) terminalSeen.current = true;
    setCounters(c);
    Object.assign(st, { state: c.state, done: c.done, failed: c.failed, total: c.total });
  }, []);

  const load = useCallback(async () => {
    try {
      const r = await getExecution(id);
      setRec(r);
      setError(null);
      applyCounters({ state: r.state, done: r.done, failed: r.failed, total: r.total, percent: r.percent });
      return r;
    } catch (e) {
      const msg = errorMessage(e);
      setError(msg);
      st.error = msg;
      return null;
    }
  }, [id, applyCounters]);

  useEffect(() => {
    let stop = false;
    let refetch: ReturnType<typeof setTimeout> | undefined;
    let poll: ReturnType<typeof setTimeout> | undefined;
    const scheduleRefetch = () => {
      if (refetch === undefined) refetch = setTimeout(() => ((refetch = undefined), void load()), REFETCH_MS);
    };
    const startPolling = () => {
      setLive('polling');
      const tick = async () => {
        const r = await load();
        if (!stop && !(r && TERMINAL.has(r.state))) poll = setTimeout(tick, POLL_MS);
        else if (!stop) setLive('ended');
      };
      void tick();
    };

    void load();
    const es = new EventSource(withToken(`${executionPath(id)}/events`));
    es.addEventListener('open', () => !stop && setLive('live'));
    es.addEventListener('progress', (ev) => {
      if (stop) return;
      let p: Progress;
      try {
        p = JSON.parse((ev as MessageEvent<string>).data) as Progress;
      } catch {
        return;
      }
      st.events++;
      applyCounters({ state: p.state, done: p.done, failed: p.failed, total: p.total, percent: p.percent });
      const fs = fileStateName(p.file_state);
      if (fs) {
        setRec((r) => {
          if (!r?.files) return r;
          const files = r.files.map((f) => (f.index === p.index ? { ...f, state: fs, error: p.error || f.error } : f));
          return { ...r, files };
        });
      }
      // Durations, detections and outputs come from the record.
      if (fs || TERMINAL.has(p.state)) scheduleRefetch();
    });
    es.addEventListener('end', () => {
      es.close();
      if (stop) return;
      setLive('ended');
      void load();
    });
    es.addEventListener('error', () => {
      // The browser retries by itself unless the server refused the stream.
      if (!stop && es.readyState === EventSource.CLOSED) startPolling();
    });
    return () => {
      stop = true;
      es.close();
      clearTimeout(refetch);
      clearTimeout(poll);
    };
  }, [id, load, applyCounters, nonce]);

  const cancel = async () => {
    setCancelling(true);
    try {
      const r = await apiFetch(executionPath(id), { method: 'DELETE', headers: { Accept: 'application/json' } });
      if (!r.ok) throw await responseError(r);
      await load();
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setCancelling(false);
    }
  };

  const state = counters?.state ?? rec?.state ?? 'loading';
  const finished = TERMINAL.has(state);
  const files = rec?.files ?? [];
  return (
    <div className="page" data-testid="execution" data-execution-id={id}>
      <div className="page-head">
        <div>
          <Link to="/executions" className="small">
            ← Batch
          </Link>
          <h1 className="mono">{id}</h1>
        </div>
        <StateBadge state={state} testId="execution-state" />
      </div>
      {error && <div className="error" data-testid="execution-error">{error}</div>}

      <section className="card">
        <ProgressBar percent={counters?.percent ?? 0} testId="execution-progress" />
        <div className="execution-meta">
          <span data-testid="execution-counts">
            {counters ? `${counters.done} / ${counters.total} done` : '…'}
            {counters && counters.failed > 0 && `, ${counters.failed} failed`}
          </span>
          {rec && <span className="muted">pipeline <span className="mono">{rec.pipeline}</span></span>}
          {rec && <span className="muted">started {formatTime(rec.created_at)}</span>}
          {rec?.finished_at && <span className="muted">finished {formatTime(rec.finished_at)}</span>}
          <span className="muted small" data-testid="execution-live">
            {live === 'live' ? 'live' : live === 'polling' ? 'polling' : live === 'ended' ? '' : 'connecting…'}
          </span>
        </div>
        <div className="card-actions">
          <a className="button" href={withToken(`${executionPath(id)}/results.zip`)} download data-testid="execution-zip">
            Download zip
          </a>
          {!finished && (
            <button className="button-secondary" onClick={cancel} disabled={cancelling} data-testid="execution-cancel">
              {cancelling ? 'Cancelling…' : 'Cancel'}
            </button>
          )}
        </div>
      </section>

      <section>
        <h2>Files</h2>
        {rec === null && !error && <p className="muted">Loading…</p>}
        {files.length > 0 && (
          <table className="table" data-testid="execution-files">
            <thead>
              <tr>
                <th>#</th>
                <th>file</th>
                <th>state</th>
                <th>duration</th>
                <th>detections</th>
                <th>output</th>
              </tr>
            </thead>
            <tbody>
              {files.map((f) => (
                <FileRow key={f.index} id={id} file={f} />
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}

function FileRow({ id, file: f }: { id: string; file: ExecutionFile }) {
  const img = withToken(`${executionPath(id)}/files/${f.index}/image`);
  return (
    <tr data-testid="execution-file" data-index={f.index} data-state={f.state}>
      <td className="mono">{f.index}</td>
      <td className="mono wrap">{f.name}</td>
      <td>
        <StateBadge state={f.state} />
        {f.error && <div className="error small">{f.error}</div>}
      </td>
      <td className="mono">{formatDuration(f.duration_ms)}</td>
      <td className="mono">{f.state === 'done' ? (f.detections ?? 0) : '—'}</td>
      <td>
        {f.state === 'done' && f.output ? (
          <a href={img} target="_blank" rel="noreferrer">
            <img className="thumb" src={img} alt={`output of ${f.name}`} data-testid="execution-thumb" />
          </a>
        ) : (
          <span className="muted">—</span>
        )}
      </td>
    </tr>
  );
}
