// Batch executions: the recent list and an upload form. The execution
// helpers live here (not in api.ts) because only the batch pages use them.
import { useState, type FormEvent } from 'react';
import { API, apiFetch, client, errorMessage, getToken, listPipelines, responseError, unwrap, type Schemas } from '../api';
import { Link, executionURL, useNavigate } from '../router';
import { StateBadge } from './common';
import { useLoad } from './useLoad';

const LIST_POLL_MS = 3000;

/** One execution as GET /api/v1/executions lists it. */
export type ExecutionSummary = Schemas['ExecutionSummary'];

/** One uploaded file of an execution. */
export type ExecutionFile = Schemas['ExecutionFile'];

/** GET /api/v1/executions/{id}. */
export type ExecutionRecord = Schemas['Execution'];

export const executionPath = (id: string) => `${API}/executions/${encodeURIComponent(id)}`;

/**
 * A URL the browser fetches by itself (img src, EventSource, download link),
 * which cannot carry an Authorization header: the token goes in ?token=.
 */
export function withToken(url: string): string {
  const t = getToken();
  if (!t) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(t)}`;
}

export async function listExecutions(limit = 20): Promise<ExecutionSummary[]> {
  return unwrap(await client.GET('/api/v1/executions', { params: { query: { limit } } })).executions;
}

export async function getExecution(id: string): Promise<ExecutionRecord> {
  return unwrap(await client.GET('/api/v1/executions/{id}', { params: { path: { id } } }));
}

/** Uploads files as one execution of a stored pipeline; returns its id. */
export async function uploadExecution(pipeline: string, files: File[]): Promise<string> {
  const fd = new FormData();
  fd.append('pipeline', pipeline);
  for (const f of files) fd.append('files', f, f.name);
  // No Content-Type: the browser sets multipart/form-data with its boundary.
  const r = await apiFetch(`${API}/executions`, { method: 'POST', body: fd, headers: { Accept: 'application/json' } });
  if (!r.ok) throw await responseError(r);
  const body = (await r.json()) as Partial<Schemas['ExecutionCreated']>;
  if (typeof body.id !== 'string' || !body.id) throw new Error('the server did not return an execution id');
  return body.id;
}

export function formatTime(s: string | undefined): string {
  if (!s) return '—';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toLocaleString();
}

export function Executions() {
  const { data: items, error, reload } = useLoad(listExecutions, LIST_POLL_MS);

  return (
    <div className="page" data-testid="executions">
      <section>
        <h1>Batch</h1>
        <UploadForm />
      </section>
      <section>
        <div className="section-head">
          <h2>Recent executions</h2>
          <button onClick={reload}>Refresh</button>
        </div>
        {error && <div className="error" data-testid="executions-error">{error}</div>}
        {items === null && !error && <p className="muted">Loading…</p>}
        {items !== null && items.length === 0 && <p className="muted" data-testid="no-executions">No executions yet.</p>}
        {items !== null && items.length > 0 && (
          <table className="table" data-testid="execution-list">
            <thead>
              <tr>
                <th>execution</th>
                <th>pipeline</th>
                <th>state</th>
                <th>progress</th>
                <th>created</th>
              </tr>
            </thead>
            <tbody>
              {items.map((e) => (
                <tr key={e.id} data-testid="execution-row" data-execution-id={e.id}>
                  <td className="mono">
                    <Link to={executionURL(e.id)}>{e.id}</Link>
                  </td>
                  <td className="mono">{e.pipeline || '—'}</td>
                  <td>
                    <StateBadge state={e.state} />
                  </td>
                  <td>
                    <ProgressBar percent={e.percent} />
                    <span className="small muted">
                      {e.done}/{e.total}
                      {e.failed > 0 && `, ${e.failed} failed`}
                    </span>
                  </td>
                  <td className="small">{formatTime(e.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}

export function ProgressBar({ percent, testId }: { percent: number; testId?: string }) {
  const p = Math.max(0, Math.min(100, Number.isFinite(percent) ? percent : 0));
  return (
    <div className="progress" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(p)} data-testid={testId}>
      <div className="progress-fill" style={{ width: `${p}%` }} />
    </div>
  );
}

function UploadForm() {
  const loaded = useLoad(listPipelines);
  const pipelines = loaded.data ?? [];
  const [chosen, setPipeline] = useState('');
  const pipeline = chosen || pipelines[0]?.id || '';
  const [files, setFiles] = useState<File[]>([]);
  const [busy, setBusy] = useState(false);
  const [failure, setError] = useState<string | null>(null);
  const error = failure ?? loaded.error;
  const navigate = useNavigate();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!pipeline) return setError('Choose a pipeline.');
    if (files.length === 0) return setError('Choose at least one image.');
    setBusy(true);
    setError(null);
    try {
      const id = await uploadExecution(pipeline, files);
      navigate(executionURL(id));
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };

  return (
    <form className="card form" onSubmit={submit} data-testid="upload-form">
      <div className="form-grid">
        <label>
          Pipeline
          <select value={pipeline} onChange={(e) => setPipeline(e.target.value)} required data-testid="upload-pipeline">
            {pipelines.length === 0 && <option value="">(no pipelines)</option>}
            {pipelines.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id}
              </option>
            ))}
          </select>
        </label>
        <label>
          Images
          <input
            type="file"
            accept="image/*"
            multiple
            onChange={(e) => setFiles(Array.from(e.target.files ?? []))}
            data-testid="upload-files"
          />
        </label>
      </div>
      <div className="form-foot">
        <button type="submit" className="primary" disabled={busy} data-testid="upload-submit">
          {busy ? 'Uploading…' : files.length > 1 ? `Upload ${files.length} images` : 'Upload'}
        </button>
        {error && <span className="error inline" data-testid="upload-error">{error}</span>}
      </div>
    </form>
  );
}
