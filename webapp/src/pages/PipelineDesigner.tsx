// The pipeline designer: a React Flow canvas of steps (nodes) and their
// inputs (edges), a palette of the server's processors to drag steps from,
// an inspector whose form comes from the processor's parameter schema, and
// "try it" to run the drawn pipeline on a picture and see every step's output.
import {
  Background,
  Controls,
  Handle,
  Position,
  ReactFlow,
  ReactFlowProvider,
  applyEdgeChanges,
  applyNodeChanges,
  useReactFlow,
  type Connection,
  type Edge,
  type EdgeChange,
  type Node,
  type NodeChange,
  type NodeProps,
} from '@xyflow/react';
import '@xyflow/react/dist/style.css';
import { useCallback, useEffect, useMemo, useRef, useState, type PointerEvent as ReactPointerEvent } from 'react';
import {
  ApiError,
  createPipeline,
  deletePipeline,
  errorMessage,
  getPipeline,
  listCameras,
  listProcessors,
  registerProcessor,
  tryPipeline,
  updatePipeline,
  type Pipeline,
  type Processor,
  type TryStep,
} from '../api';
import {
  edgeID,
  freshStepID,
  fromPipeline,
  layout,
  nodeErrors,
  paramError,
  toPipeline,
  type GraphEdge,
  type StepNodeData,
} from '../pipelineGraph';
import { Link, PATHS, cameraURL, pipelineURL, useNavigate } from '../router';
import { StateBadge } from './common';
import { useLoad } from './useLoad';

/** A node's data: the step plus what the designer shows on it. */
type StepData = StepNodeData & { serverError?: string; invalid?: boolean; output?: TryStep };
type StepNode = Node<StepData, 'step'>;

/** What undo and redo move between. */
interface Snapshot {
  nodes: StepNode[];
  edges: Edge[];
}

/** Test and debugging hooks (window.__ifc), as the other pages publish. */
interface DesignerIfc {
  page: 'designer';
  id: string;
  nodes: number;
  edges: number;
  saved: number;
  lastError: string;
}

const HISTORY_LIMIT = 100;
/** Fitting never zooms in past 1:1, so a small pipeline keeps readable nodes. */
const FIT = { padding: 0.2, maxZoom: 1 };

export function PipelineDesigner({ id }: { id?: string }) {
  return (
    <ReactFlowProvider>
      <Designer id={id} />
    </ReactFlowProvider>
  );
}

function StepNodeView({ data, selected }: NodeProps<StepNode>) {
  const out = data.output;
  return (
    <div
      className={`step-node${selected ? ' selected' : ''}${data.serverError ? ' step-error' : ''}${data.invalid ? ' step-invalid' : ''}`}
      data-testid="step-node"
      data-step={data.stepId}
      data-error={data.serverError ?? ''}
    >
      <Handle type="target" position={Position.Left} data-testid="handle-in" />
      <div className="step-title">{data.stepId}</div>
      <div className="step-proc muted small">{data.processor}</div>
      {data.serverError && (
        <div className="step-error-text small" data-testid="step-error">
          {data.serverError}
        </div>
      )}
      {out && (
        <div className="step-output" data-testid="step-output" data-ms={out.ms} data-detections={out.detections?.length ?? 0}>
          {out.image && <img src={out.image} alt={`${data.stepId} output`} data-testid="step-output-image" />}
          <div className="small">
            <span data-testid="step-ms">{out.ms.toFixed(1)} ms</span>
            {(out.detections?.length ?? 0) > 0 && ` · ${out.detections!.length} boxes`}
            {out.error && <span className="error-inline"> · {out.error}</span>}
          </div>
        </div>
      )}
      <Handle type="source" position={Position.Right} data-testid="handle-out" />
    </div>
  );
}

const nodeTypes = { step: StepNodeView };

function Designer({ id }: { id?: string }) {
  const navigate = useNavigate();
  const flow = useReactFlow();
  const processors = useLoad(listProcessors);
  const cameras = useLoad(listCameras);
  const loadPipeline = useCallback(() => (id ? getPipeline(id) : Promise.resolve(null)), [id]);
  const stored = useLoad<Pipeline | null>(loadPipeline);
  const specs = useMemo(() => new Map((processors.data ?? []).map((p) => [p.name, p])), [processors.data]);

  const [meta, setMeta] = useState({ id: id ?? '', name: '', description: '' });
  const [nodes, setNodes] = useState<StepNode[]>([]);
  const [edges, setEdges] = useState<Edge[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [status, setStatus] = useState<{ error?: string; info?: string }>({});
  const [view, setView] = useState<'canvas' | 'json'>('canvas');
  const [jsonText, setJsonText] = useState('');
  const [saveAs, setSaveAs] = useState<string | null>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [confirmUsed, setConfirmUsed] = useState(false);
  const [busy, setBusy] = useState(false);
  const [tryFile, setTryFile] = useState<File | null>(null);
  const [tryCamera, setTryCamera] = useState('');
  const [tryTotal, setTryTotal] = useState<number | null>(null);
  const canvas = useRef<HTMLDivElement>(null);
  const history = useRef<{ past: Snapshot[]; future: Snapshot[] }>({ past: [], future: [] });
  const [, setHistoryTick] = useState(0);
  const ifc = useRef<DesignerIfc>({ page: 'designer', id: id ?? '', nodes: 0, edges: 0, saved: 0, lastError: '' });
  useEffect(() => {
    (window as unknown as { __ifc: DesignerIfc }).__ifc = ifc.current;
  }, []);
  useEffect(() => {
    Object.assign(ifc.current, { nodes: nodes.length, edges: edges.length });
  }, [nodes.length, edges.length]);

  // The stored pipeline, once, as the starting graph.
  const loadedFor = useRef<string | null>(null);
  useEffect(() => {
    if (!stored.data || loadedFor.current === stored.data.id) return;
    loadedFor.current = stored.data.id;
    const g = fromPipeline(stored.data);
    setMeta({ id: stored.data.id, name: stored.data.name, description: stored.data.description });
    setNodes(g.nodes.map((n) => ({ ...n, type: 'step' as const })));
    setEdges(g.edges);
    history.current = { past: [], future: [] };
    setTimeout(() => flow.fitView(FIT), 0);
  }, [stored.data, flow]);

  // Client-side validation as the user types: nodes with a bad field are marked.
  const invalid = useMemo(() => new Set(nodes.filter((n) => Object.keys(nodeErrors(n.data, specs)).length > 0).map((n) => n.id)), [nodes, specs]);
  const shownNodes = useMemo(
    () => nodes.map((n) => (invalid.has(n.id) === !!n.data.invalid ? n : { ...n, data: { ...n.data, invalid: invalid.has(n.id) } })),
    [nodes, invalid],
  );

  const snapshot = useCallback((): Snapshot => ({ nodes, edges }), [nodes, edges]);
  /** Records the current graph so the next change can be undone. */
  const remember = useCallback(() => {
    const h = history.current;
    h.past.push(snapshot());
    if (h.past.length > HISTORY_LIMIT) h.past.shift();
    h.future = [];
    setHistoryTick((t) => t + 1);
  }, [snapshot]);
  const restore = (s: Snapshot) => {
    setNodes(s.nodes);
    setEdges(s.edges);
  };
  const undo = useCallback(() => {
    const h = history.current;
    const prev = h.past.pop();
    if (!prev) return;
    h.future.push(snapshot());
    restore(prev);
    setHistoryTick((t) => t + 1);
  }, [snapshot]);
  const redo = useCallback(() => {
    const h = history.current;
    const next = h.future.pop();
    if (!next) return;
    h.past.push(snapshot());
    restore(next);
    setHistoryTick((t) => t + 1);
  }, [snapshot]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement | null;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) return;
      if (!(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== 'z' && e.key.toLowerCase() !== 'y') return;
      e.preventDefault();
      if (e.key.toLowerCase() === 'y' || e.shiftKey) redo();
      else undo();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [undo, redo]);

  const clearServerMarks = (ns: StepNode[]) =>
    ns.map((n) => (n.data.serverError ? { ...n, data: { ...n.data, serverError: undefined } } : n));

  const onNodesChange = useCallback(
    (changes: NodeChange<StepNode>[]) => {
      // Removals and the end of a drag are steps of the history; the many
      // position updates during a drag are not.
      if (changes.some((c) => c.type === 'remove' || (c.type === 'position' && c.dragging === false))) remember();
      setNodes((ns) => applyNodeChanges(changes, ns));
      for (const c of changes) if (c.type === 'select' && c.selected) setSelected(c.id);
    },
    [remember],
  );
  const onEdgesChange = useCallback(
    (changes: EdgeChange[]) => {
      if (changes.some((c) => c.type === 'remove')) remember();
      setEdges((es) => applyEdgeChanges(changes, es));
    },
    [remember],
  );
  const onConnect = useCallback(
    (c: Connection) => {
      if (!c.source || !c.target || c.source === c.target) return;
      const eid = edgeID(c.source, c.target);
      if (edges.some((e) => e.id === eid)) return;
      remember();
      setEdges((es) => [...es, { id: eid, source: c.source, target: c.target }]);
    },
    [edges, remember],
  );

  /** Adds a step of processor at a screen point (where the palette item was dropped). */
  const addStep = useCallback(
    (processor: string, screen: { x: number; y: number }) => {
      remember();
      const position = flow.screenToFlowPosition(screen);
      setNodes((ns) => {
        const stepId = freshStepID(processor, ns.map((n) => n.data.stepId));
        const nid = `n-${stepId}-${Date.now().toString(36)}`;
        setSelected(nid);
        return [
          ...ns.map((n) => (n.selected ? { ...n, selected: false } : n)),
          { id: nid, type: 'step' as const, position, selected: true, data: { stepId, processor, params: {} } },
        ];
      });
    },
    [flow, remember],
  );

  // Dragging from the palette uses pointer events (not HTML5 drag and drop):
  // a ghost follows the pointer and the step lands where it is released over
  // the canvas.
  const [ghost, setGhost] = useState<{ processor: string; x: number; y: number } | null>(null);
  const startPaletteDrag = (processor: string) => (e: ReactPointerEvent) => {
    if (e.button !== 0) return;
    e.preventDefault();
    setGhost({ processor, x: e.clientX, y: e.clientY });
    const move = (ev: PointerEvent) => setGhost({ processor, x: ev.clientX, y: ev.clientY });
    const up = (ev: PointerEvent) => {
      window.removeEventListener('pointermove', move, true);
      window.removeEventListener('pointerup', up, true);
      setGhost(null);
      const r = canvas.current?.getBoundingClientRect();
      if (r && ev.clientX >= r.left && ev.clientX <= r.right && ev.clientY >= r.top && ev.clientY <= r.bottom) {
        addStep(processor, { x: ev.clientX, y: ev.clientY });
      }
    };
    // Capture phase: the canvas stops some pointer events from bubbling.
    window.addEventListener('pointermove', move, true);
    window.addEventListener('pointerup', up, true);
  };

  const selectedNode = nodes.find((n) => n.id === selected) ?? null;
  const updateStep = (nid: string, patch: Partial<StepNodeData>) => {
    setNodes((ns) => ns.map((n) => (n.id === nid ? { ...n, data: { ...n.data, ...patch, serverError: undefined } } : n)));
  };

  const pipelineInput = () => toPipeline(meta, nodes, edges as GraphEdge[], specs);
  const usedBy = (cameras.data ?? []).filter((c) => id && c.pipeline === id);

  const autoLayout = () => {
    remember();
    setNodes((ns) => layout(ns, edges as GraphEdge[]));
    setTimeout(() => flow.fitView(FIT), 0);
  };

  const showJSON = () => {
    setJsonText(JSON.stringify(pipelineInput(), null, 2));
    setView('json');
  };
  const applyJSON = () => {
    try {
      const p = JSON.parse(jsonText) as Pipeline;
      if (!p || !Array.isArray(p.steps)) throw new Error('want an object with a steps array');
      remember();
      const g = fromPipeline(p);
      setMeta({ id: id ?? p.id ?? meta.id, name: p.name ?? '', description: p.description ?? '' });
      setNodes(g.nodes.map((n) => ({ ...n, type: 'step' as const })));
      setEdges(g.edges);
      setView('canvas');
      setStatus({});
      setTimeout(() => flow.fitView(FIT), 0);
    } catch (e) {
      setStatus({ error: `JSON: ${errorMessage(e)}` });
    }
  };

  /** Shows a failed save: a 400 naming a step marks that node. */
  const showFailure = (e: unknown) => {
    const msg = errorMessage(e);
    ifc.current.lastError = msg;
    setStatus({ error: msg });
    const step = e instanceof ApiError ? e.step : undefined;
    if (step) setNodes((ns) => ns.map((n) => (n.data.stepId === step ? { ...n, data: { ...n.data, serverError: msg } } : n)));
  };

  const save = async (as?: string) => {
    if (invalid.size > 0) {
      setStatus({ error: 'Fix the marked steps first.' });
      return;
    }
    if (!as && id && usedBy.length > 0 && !confirmUsed) {
      setConfirmUsed(true);
      setStatus({ info: `Used by ${usedBy.map((c) => c.id).join(', ')}: saving restarts their live pipeline. Press Save again to apply.` });
      return;
    }
    setConfirmUsed(false);
    const body = pipelineInput();
    if (as !== undefined) body.id = as;
    setBusy(true);
    setNodes(clearServerMarks);
    try {
      const p = as !== undefined || !id ? await createPipeline(body) : await updatePipeline(body);
      ifc.current.saved++;
      ifc.current.lastError = '';
      setStatus({ info: `Saved ${p.id}.` });
      setSaveAs(null);
      if (p.id !== id) navigate(pipelineURL(p.id));
    } catch (e) {
      showFailure(e);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    if (!id) return;
    if (!confirmDelete) {
      setConfirmDelete(true);
      return;
    }
    setBusy(true);
    try {
      await deletePipeline(id);
      navigate(PATHS.dashboard);
    } catch (e) {
      showFailure(e);
      setConfirmDelete(false);
    } finally {
      setBusy(false);
    }
  };

  const runTry = async () => {
    if (!tryFile && !tryCamera) {
      setStatus({ error: 'Choose a picture or a camera to try the pipeline on.' });
      return;
    }
    setBusy(true);
    setNodes(clearServerMarks);
    try {
      const r = await tryPipeline(pipelineInput(), tryFile ? { image: tryFile } : { camera: tryCamera });
      const byStep = new Map(r.steps.map((s) => [s.id, s]));
      setNodes((ns) => ns.map((n) => ({ ...n, data: { ...n.data, output: byStep.get(n.data.stepId) } })));
      setTryTotal(r.ms);
      setStatus({ info: `Ran ${r.steps.length} steps in ${r.ms.toFixed(1)} ms.` });
      setTimeout(() => flow.fitView(FIT), 0);
    } catch (e) {
      showFailure(e);
    } finally {
      setBusy(false);
    }
  };

  const loadError = processors.error ?? stored.error;
  return (
    <div className="designer" data-testid="designer">
      <div className="designer-bar">
        <label>
          Id
          <input
            value={meta.id}
            readOnly={!!id}
            onChange={(e) => setMeta({ ...meta, id: e.target.value })}
            placeholder="pipeline id"
            data-testid="pipeline-id"
          />
        </label>
        <label>
          Name
          <input value={meta.name} onChange={(e) => setMeta({ ...meta, name: e.target.value })} data-testid="pipeline-name" />
        </label>
        <button onClick={() => void save()} disabled={busy} data-testid="designer-save">
          Save
        </button>
        {id &&
          (saveAs === null ? (
            <button className="secondary" onClick={() => setSaveAs(`${id}_copy`)} data-testid="designer-save-as">
              Save as…
            </button>
          ) : (
            <span className="inline-form">
              <input value={saveAs} onChange={(e) => setSaveAs(e.target.value)} aria-label="new pipeline id" data-testid="save-as-id" />
              <button onClick={() => void save(saveAs)} disabled={busy} data-testid="save-as-confirm">
                Save copy
              </button>
            </span>
          ))}
        {id && (
          <button className="danger" onClick={() => void remove()} disabled={busy} data-testid="designer-delete">
            {confirmDelete ? 'Really delete?' : 'Delete'}
          </button>
        )}
        <span className="bar-gap" />
        <button className="secondary" onClick={undo} disabled={history.current.past.length === 0} title="Ctrl+Z" data-testid="designer-undo">
          Undo
        </button>
        <button className="secondary" onClick={redo} disabled={history.current.future.length === 0} title="Ctrl+Shift+Z" data-testid="designer-redo">
          Redo
        </button>
        <button className="secondary" onClick={autoLayout} data-testid="designer-layout">
          Auto-layout
        </button>
        <button className="secondary" onClick={view === 'json' ? () => setView('canvas') : showJSON} data-testid="designer-json">
          {view === 'json' ? 'Canvas' : 'JSON'}
        </button>
      </div>
      {usedBy.length > 0 && (
        <div className="muted small designer-used" data-testid="designer-used-by">
          Used by{' '}
          {usedBy.map((c, i) => (
            <span key={c.id}>
              {i > 0 && ', '}
              <Link to={cameraURL(c.id)}>{c.name || c.id}</Link>
            </span>
          ))}
        </div>
      )}
      {loadError && <div className="error">{loadError}</div>}
      {status.error && (
        <div className="error" data-testid="designer-error">
          {status.error}
        </div>
      )}
      {status.info && (
        <div className="info" data-testid="designer-info">
          {status.info}
        </div>
      )}
      <div className="designer-body">
        <aside className="palette" data-testid="palette">
          <h3>Processors</h3>
          <p className="muted small">Drag onto the canvas.</p>
          {(processors.data ?? []).map((p) => (
            <div key={p.name} className="palette-item" onPointerDown={startPaletteDrag(p.name)} data-testid="palette-item" data-processor={p.name} title={p.description}>
              <strong className={p.remote ? 'wrap' : ''}>{p.name}</strong>
              {p.remote && (
                <span title={p.health_error ?? ''}>
                  {' '}
                  <StateBadge state={(p.health ?? 'unknown').toLowerCase()} testId="palette-health" />
                </span>
              )}
              <div className="muted small">{p.description}</div>
            </div>
          ))}
          <RegisterRemote onRegistered={processors.reload} />
        </aside>
        <div className="canvas" ref={canvas} data-testid="canvas">
          {view === 'canvas' ? (
            <ReactFlow
              nodes={shownNodes}
              edges={edges}
              nodeTypes={nodeTypes}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={onConnect}
              onPaneClick={() => setSelected(null)}
              deleteKeyCode={['Delete', 'Backspace']}
              defaultViewport={{ x: 40, y: 40, zoom: 1 }}
              maxZoom={2}
              proOptions={{ hideAttribution: true }}
            >
              <Background />
              <Controls />
            </ReactFlow>
          ) : (
            <div className="json-view">
              <textarea value={jsonText} onChange={(e) => setJsonText(e.target.value)} spellCheck={false} data-testid="designer-json-text" />
              <button onClick={applyJSON} data-testid="designer-json-apply">
                Apply to canvas
              </button>
            </div>
          )}
        </div>
        <aside className="inspector" data-testid="inspector">
          {selectedNode ? (
            <Inspector key={selectedNode.id} node={selectedNode} spec={specs.get(selectedNode.data.processor)} onChange={(patch) => updateStep(selectedNode.id, patch)} onCommit={remember} />
          ) : (
            <p className="muted small">Select a step to edit its parameters.</p>
          )}
          <h3>Try it</h3>
          <p className="muted small">Run the pipeline as drawn on a picture, or on a camera's next frame; each step shows its output.</p>
          <input type="file" accept="image/*" onChange={(e) => setTryFile(e.target.files?.[0] ?? null)} data-testid="try-file" />
          {!tryFile && (
            <select value={tryCamera} onChange={(e) => setTryCamera(e.target.value)} aria-label="camera to try on" data-testid="try-camera">
              <option value="">or a camera's live frame…</option>
              {(cameras.data ?? []).map((c) => (
                <option key={c.id} value={c.id}>
                  {c.name || c.id}
                </option>
              ))}
            </select>
          )}
          <button onClick={() => void runTry()} disabled={busy || nodes.length === 0} data-testid="try-run">
            Run
          </button>
          {tryTotal !== null && (
            <p className="small" data-testid="try-total">
              Total {tryTotal.toFixed(1)} ms
            </p>
          )}
        </aside>
      </div>
      {ghost && (
        <div className="palette-ghost" style={{ left: ghost.x + 8, top: ghost.y + 8 }}>
          {ghost.processor}
        </div>
      )}
    </div>
  );
}

/** Registers a remote gRPC processor so it joins the palette. */
function RegisterRemote({ onRegistered }: { onRegistered: () => void }) {
  const [address, setAddress] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    setBusy(true);
    setError(null);
    try {
      await registerProcessor(address.trim());
      setAddress('');
      onRegistered();
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="register-remote">
      <h3>Remote processor</h3>
      <input value={address} onChange={(e) => setAddress(e.target.value)} placeholder="grpc://host:port" aria-label="remote processor address" data-testid="remote-address" />
      <button className="secondary" disabled={busy || !address.trim()} onClick={() => void submit()} data-testid="remote-register">
        Register
      </button>
      {error && <div className="error small">{error}</div>}
    </div>
  );
}

function Inspector({
  node,
  spec,
  onChange,
  onCommit,
}: {
  node: StepNode;
  spec: Processor | undefined;
  onChange: (patch: Partial<StepNodeData>) => void;
  onCommit: () => void;
}) {
  const d = node.data;
  const setParam = (name: string, text: string) => onChange({ params: { ...d.params, [name]: text } });
  return (
    <div className="inspector-form" data-testid="inspector-form" data-step={d.stepId}>
      <h3>{d.processor}</h3>
      {spec && <p className="muted small">{spec.description}</p>}
      {/* A field's first keystroke is one history entry (focus records it). */}
      <label>
        Step id
        <input value={d.stepId} onFocus={onCommit} onChange={(e) => onChange({ stepId: e.target.value })} data-testid="step-id" />
      </label>
      {d.serverError && <div className="error small">{d.serverError}</div>}
      {!spec && <p className="muted small">The server does not describe this processor; parameters are sent as written (JSON values).</p>}
      {(spec?.params ?? []).map((p) => {
        const text = d.params[p.name] ?? '';
        const err = paramError(p, text);
        const def = p.default === undefined ? '' : String(p.default);
        const range = p.min !== undefined || p.max !== undefined ? ` (${p.min ?? '…'} to ${p.max ?? '…'})` : '';
        return (
          <label key={p.name} className={err ? 'field-bad' : ''}>
            <span>
              {p.name}
              {p.required && ' *'} <span className="muted small">{p.type}{range}</span>
            </span>
            {p.type === 'enum' || p.type === 'bool' ? (
              <select value={text} onFocus={onCommit} onChange={(e) => setParam(p.name, e.target.value)} data-testid="param" data-param={p.name}>
                <option value="">default{def !== '' ? ` (${def})` : ''}</option>
                {(p.type === 'bool' ? ['true', 'false'] : (p.choices ?? [])).map((c) => (
                  <option key={c} value={c}>
                    {c}
                  </option>
                ))}
              </select>
            ) : (
              <input
                value={text}
                placeholder={def !== '' ? `default ${def}` : ''}
                inputMode={p.type === 'int' || p.type === 'float' ? 'decimal' : undefined}
                onFocus={onCommit}
                onChange={(e) => setParam(p.name, e.target.value)}
                data-testid="param"
                data-param={p.name}
              />
            )}
            {err && (
              <span className="field-error small" data-testid="param-error">
                {err}
              </span>
            )}
            <span className="muted small">{p.description}</span>
          </label>
        );
      })}
    </div>
  );
}
