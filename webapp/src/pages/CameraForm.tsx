// The camera form: adds a camera, or edits one (id fixed), and tests its
// source on the server before saving.
import { useState, type FormEvent } from 'react';
import { cameraInputOf, createCamera, errorMessage, formatBitrate, testSource, updateCamera, type Camera, type Pipeline, type Schemas } from '../api';

export function CameraForm({ camera, pipelines, onSaved }: { camera?: Camera; pipelines: Pipeline[]; onSaved: () => void }) {
  const editing = camera !== undefined;
  // The add form keeps its original test ids; the edit forms get their own.
  const tid = (name: string) => (editing ? `edit-${name}` : `camera-${name}`);
  const [id, setId] = useState(camera?.id ?? '');
  const [name, setName] = useState(camera?.name ?? '');
  const [source, setSource] = useState(camera?.source ?? '');
  const [enabled, setEnabled] = useState(camera?.enabled ?? true);
  const [pipeline, setPipeline] = useState(camera?.pipeline ?? '');
  const [archive, setArchive] = useState(camera?.archive ?? false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [probe, setProbe] = useState<Schemas['SourceTestResult'] | null>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const cid = id.trim();
      // An edit keeps what this form does not show (zones, recording,
      // placement): the API replaces the whole camera.
      const body = { ...(camera ? cameraInputOf(camera) : {}), id: cid, name: name.trim() || cid, source: source.trim(), enabled, pipeline, archive };
      if (editing) await updateCamera(cid, body);
      else await createCamera(body);
      setDone(editing ? `Camera “${cid}” saved.` : `Camera “${cid}” added.`);
      if (!editing) {
        setId('');
        setName('');
        setSource('');
      }
      onSaved();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const test = async () => {
    setBusy(true);
    setProbe(null);
    setError(null);
    try {
      setProbe(await testSource(source.trim()));
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card form" onSubmit={submit} data-testid={editing ? 'edit-camera-form' : 'add-camera-form'}>
      <div className="form-grid">
        <label>
          ID
          <input
            value={id}
            readOnly={editing}
            onChange={(e) => setId(e.target.value)}
            required
            pattern="[A-Za-z0-9_\-]+"
            title="letters, digits, - and _"
            placeholder="front-door"
            data-testid={tid('id-input')}
          />
        </label>
        <label>
          Name
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="Front door" data-testid={tid('name-input')} />
        </label>
        <label className="span-2">
          Source
          <input
            value={source}
            onChange={(e) => setSource(e.target.value)}
            required
            placeholder="rtsp://user:pass@10.0.0.5/stream1, publish, file:///videos/demo.mp4 …"
            data-testid={tid('source-input')}
          />
        </label>
        <label>
          Pipeline
          <select value={pipeline} onChange={(e) => setPipeline(e.target.value)} data-testid={tid('pipeline-input')}>
            <option value="">(none)</option>
            {pipelines.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name ? `${p.name} (${p.id})` : p.id}
              </option>
            ))}
          </select>
        </label>
        <div className="checks">
          <label className="check">
            <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} data-testid={tid('enabled-input')} /> Enabled
          </label>
          <label className="check">
            <input type="checkbox" checked={archive} onChange={(e) => setArchive(e.target.checked)} data-testid={tid('archive-input')} /> Archive
          </label>
        </div>
      </div>
      <div className="form-foot">
        <button type="submit" className="primary" disabled={busy} data-testid={editing ? 'edit-camera-submit' : 'add-camera-submit'}>
          {editing ? (busy ? 'Saving…' : 'Save camera') : busy ? 'Adding…' : 'Add camera'}
        </button>
        <button type="button" className="secondary" disabled={busy || !source.trim() || source.trim() === 'publish'} onClick={() => void test()} data-testid={tid('test-source')}>
          Test source
        </button>
        {error && <span className="error inline" data-testid={editing ? 'edit-camera-error' : 'add-camera-error'}>{error}</span>}
        {done && <span className="ok inline" data-testid={editing ? 'edit-camera-done' : 'add-camera-done'}>{done}</span>}
        {probe && (
          <span className={probe.ok ? 'ok inline' : 'error inline'} data-testid={tid('test-result')} data-ok={probe.ok}>
            {probe.ok
              ? `${probe.codec ?? '?'} ${probe.width ?? '?'}×${probe.height ?? '?'} at ${probe.fps.toFixed(1)} fps, ${formatBitrate(probe.bitrate)}`
              : `Cannot play: ${probe.error}`}
          </span>
        )}
      </div>
    </form>
  );
}
