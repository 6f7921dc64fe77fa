import { useState } from 'react';
import {
  cameraStatus,
  deleteCamera,
  errorMessage,
  listCameras,
  listPipelines,
  listProcessors,
  type Camera,
  type Pipeline,
  type Processor,
} from '../api';
import { Link, PATHS, cameraURL, pipelineURL, publishURL } from '../router';
import { CameraForm } from './CameraForm';
import { StateBadge } from './common';
import { useLoad } from './useLoad';

const CAMERA_POLL_MS = 5000;

export function Dashboard() {
  const cameras = useLoad(listCameras, CAMERA_POLL_MS);
  const pipelines = useLoad(listPipelines);
  const processors = useLoad(listProcessors);

  return (
    <div className="page" data-testid="dashboard">
      <section>
        <div className="section-head">
          <h1>Cameras</h1>
          <button onClick={cameras.reload}>Refresh</button>
        </div>
        {cameras.error && <div className="error" data-testid="cameras-error">{cameras.error}</div>}
        {cameras.data === null && !cameras.error && <p className="muted">Loading…</p>}
        {cameras.data !== null && cameras.data.length === 0 && (
          <p className="muted" data-testid="no-cameras">
            No cameras yet. Add one below.
          </p>
        )}
        <div className="grid" data-testid="camera-list">
          {(cameras.data ?? []).map((c) => (
            <CameraCard key={c.id} camera={c} pipelines={pipelines.data ?? []} onChanged={cameras.reload} />
          ))}
        </div>
      </section>

      <section>
        <h2>Add a camera</h2>
        <AddCameraForm pipelines={pipelines.data ?? []} onCreated={cameras.reload} />
      </section>

      <div className="two-col">
        <section>
          <div className="section-head">
            <h2>Pipelines</h2>
            <Link to={PATHS.pipelineNew} className="button" data-testid="pipeline-new">
              New pipeline
            </Link>
          </div>
          {pipelines.error && <div className="error">{pipelines.error}</div>}
          {pipelines.data?.length === 0 && <p className="muted">No pipelines.</p>}
          <div className="stack" data-testid="pipeline-list">
            {(pipelines.data ?? []).map((p) => (
              <PipelineCard key={p.id} pipeline={p} />
            ))}
          </div>
        </section>
        <section>
          <h2>Processors</h2>
          {processors.error && <div className="error">{processors.error}</div>}
          {processors.data?.length === 0 && <p className="muted">No processors.</p>}
          <div className="stack" data-testid="processor-list">
            {(processors.data ?? []).map((p) => (
              <ProcessorCard key={p.name} processor={p} />
            ))}
          </div>
        </section>
      </div>
    </div>
  );
}

function CameraCard({ camera: c, pipelines, onChanged }: { camera: Camera; pipelines: Pipeline[]; onChanged: () => void }) {
  const st = cameraStatus(c);
  const [editing, setEditing] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const remove = async () => {
    if (!confirmDelete) {
      setConfirmDelete(true);
      return;
    }
    try {
      await deleteCamera(c.id);
      onChanged();
    } catch (e) {
      setError(errorMessage(e));
      setConfirmDelete(false);
    }
  };
  const state = c.enabled === false ? 'disabled' : (st.state ?? 'unknown');
  // A camera whose source is "publish" takes a pushed stream (RTSP, WHIP, gRPC).
  const isWhip = (c.source ?? '') === 'publish';
  return (
    <div className="card camera-card" data-testid="camera-card" data-camera-id={c.id}>
      <div className="camera-card-head">
        <Link to={cameraURL(c.id)} className="camera-name" data-testid="camera-link">
          {c.name || c.id}
        </Link>
        <StateBadge state={state} />
      </div>
      <div className="muted mono small">{c.id}</div>
      <div className="mono small wrap source" title={c.source}>
        {c.source || '—'}
      </div>
      <div className="tags">
        {c.pipeline ? <span className="tag">pipeline: {c.pipeline}</span> : <span className="tag tag-dim">no pipeline</span>}
        {c.archive && <span className="tag">archive</span>}
        {st.codec && <span className="tag">{st.codec}</span>}
        {st.width && st.height ? <span className="tag">{`${st.width}×${st.height}`}</span> : null}
      </div>
      {st.last_error && <div className="error small">{st.last_error}</div>}
      <div className="card-actions">
        <Link to={cameraURL(c.id)} className="button">
          Watch live
        </Link>
        {isWhip && (
          <Link to={publishURL(c.id)} className="button button-secondary">
            Publish
          </Link>
        )}
        <button className="secondary" onClick={() => setEditing(!editing)} data-testid="camera-edit">
          {editing ? 'Close' : 'Edit'}
        </button>
        <button className="danger" onClick={() => void remove()} onBlur={() => setConfirmDelete(false)} data-testid="camera-delete">
          {confirmDelete ? 'Really delete?' : 'Delete'}
        </button>
      </div>
      {error && <div className="error small">{error}</div>}
      {editing && (
        <CameraForm
          camera={c}
          pipelines={pipelines}
          onSaved={() => {
            setEditing(false);
            onChanged();
          }}
        />
      )}
    </div>
  );
}

function AddCameraForm({ pipelines, onCreated }: { pipelines: Pipeline[]; onCreated: () => void }) {
  return <CameraForm pipelines={pipelines} onSaved={onCreated} />;
}

function shortJSON(v: unknown): string {
  if (v === undefined) return '';
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}…` : s;
}

function PipelineCard({ pipeline: p }: { pipeline: Pipeline }) {
  const steps = p.steps ?? [];
  return (
    <div className="card" data-testid="pipeline-card" data-pipeline-id={p.id}>
      <div className="camera-card-head">
        <Link to={pipelineURL(p.id)} data-testid="pipeline-open">
          <strong>{p.name || p.id}</strong>
        </Link>
        <span className="muted mono small">{p.id}</span>
      </div>
      {steps.length === 0 ? (
        <p className="muted small">No steps.</p>
      ) : (
        <ol className="steps">
          {steps.map((s) => (
            <li key={s.id}>
              <span className="mono">{s.id}</span> → <strong>{s.processor}</strong>
              {s.inputs && s.inputs.length > 0 && <span className="muted small"> ← {s.inputs.join(', ')}</span>}
              {s.params && Object.keys(s.params).length > 0 && <div className="mono small muted wrap">{shortJSON(s.params)}</div>}
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

function ProcessorCard({ processor: p }: { processor: Processor }) {
  const params = p.params ?? [];
  return (
    <div className="card" data-testid="processor-card" data-processor-name={p.name}>
      <strong className="mono">{p.name}</strong>
      {p.description && <p className="small">{p.description}</p>}
      {params.length > 0 && (
        <table className="params">
          <thead>
            <tr>
              <th>param</th>
              <th>type</th>
              <th>default</th>
              <th>description</th>
            </tr>
          </thead>
          <tbody>
            {params.map((q) => (
              <tr key={q.name}>
                <td className="mono">{q.name}</td>
                <td className="mono muted">{q.type}</td>
                <td className="mono">{shortJSON(q.default)}</td>
                <td>{q.description}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
