// The pipeline designer's model: a pipeline (steps whose inputs name other
// steps) as a graph of nodes and edges, and back. Parameters are edited as
// form text; an empty field means "the processor's default" and is left out
// of the saved step, so a pipeline saved from the designer holds exactly the
// parameters the user set.
import type { PipelineInput, PipelineStep, Processor, ProcessorParam } from './api';

/** One step as the designer holds it. */
export interface StepNodeData {
  stepId: string;
  processor: string;
  /** Form text per parameter name (booleans as 'true'/'false'); '' or absent = default. */
  params: Record<string, string>;
  [key: string]: unknown;
}

export interface GraphNode {
  id: string;
  position: { x: number; y: number };
  data: StepNodeData;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
}

export const edgeID = (source: string, target: string) => `${source}->${target}`;

/** What is wrong with a parameter's form text, or null when it is fine. */
export function paramError(spec: ProcessorParam, text: string | undefined): string | null {
  const t = (text ?? '').trim();
  if (t === '') return spec.required ? 'required' : null;
  switch (spec.type) {
    case 'int':
    case 'float': {
      if (spec.type === 'int' && !/^[-+]?\d+$/.test(t)) return 'a whole number';
      const n = Number(t);
      if (!Number.isFinite(n)) return 'a number';
      if (spec.min !== undefined && n < spec.min) return `at least ${spec.min}`;
      if (spec.max !== undefined && n > spec.max) return `at most ${spec.max}`;
      return null;
    }
    case 'bool':
      return t === 'true' || t === 'false' ? null : 'true or false';
    case 'enum':
      return spec.choices && !spec.choices.includes(t) ? `one of ${spec.choices.join(', ')}` : null;
    default:
      return null;
  }
}

/** The JSON value of a parameter's (valid) form text. */
export function paramValue(spec: ProcessorParam | undefined, text: string): unknown {
  const t = text.trim();
  switch (spec?.type) {
    case 'int':
    case 'float':
      return Number(t);
    case 'bool':
      return t === 'true';
    case 'string':
    case 'enum':
      return text;
    default:
      // A processor the server does not describe (a remote one that did not
      // answer): the text is JSON when it parses, a string otherwise.
      try {
        return JSON.parse(t);
      } catch {
        return text;
      }
  }
}

/** A parameter value as form text. */
export function paramText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** Every problem of a node's parameters, by parameter name. */
export function nodeErrors(d: StepNodeData, specs: Map<string, Processor>): Record<string, string> {
  const out: Record<string, string> = {};
  const spec = specs.get(d.processor);
  for (const p of spec?.params ?? []) {
    const e = paramError(p, d.params[p.name]);
    if (e) out[p.name] = e;
  }
  if (d.stepId.trim() === '') out[''] = 'step id: required';
  return out;
}

/** The pipeline the graph draws; steps in node order, inputs in edge order. */
export function toPipeline(
  meta: { id: string; name: string; description: string },
  nodes: GraphNode[],
  edges: GraphEdge[],
  specs: Map<string, Processor>,
): PipelineInput {
  const stepOf = new Map(nodes.map((n) => [n.id, n.data.stepId]));
  const steps = nodes.map((n): PipelineStep => {
    const spec = specs.get(n.data.processor);
    const params: Record<string, unknown> = {};
    for (const [name, text] of Object.entries(n.data.params)) {
      if (text.trim() === '') continue;
      params[name] = paramValue(spec?.params?.find((p) => p.name === name), text);
    }
    const inputs = edges.filter((e) => e.target === n.id).map((e) => stepOf.get(e.source) ?? e.source);
    return { id: n.data.stepId, processor: n.data.processor, params, inputs };
  });
  return { id: meta.id, name: meta.name, description: meta.description, steps };
}

/** The graph of a pipeline, laid out left to right by depth. */
export function fromPipeline(p: Pick<PipelineInput, 'steps'>): { nodes: GraphNode[]; edges: GraphEdge[] } {
  const steps = p.steps ?? [];
  const nodes: GraphNode[] = steps.map((s) => ({
    id: s.id,
    position: { x: 0, y: 0 },
    data: {
      stepId: s.id,
      processor: s.processor,
      params: Object.fromEntries(Object.entries(s.params ?? {}).map(([k, v]) => [k, paramText(v)])),
    },
  }));
  const edges: GraphEdge[] = [];
  for (const s of steps) for (const i of s.inputs ?? []) edges.push({ id: edgeID(i, s.id), source: i, target: s.id });
  return { nodes: layout(nodes, edges), edges };
}

export const COLUMN = 280;
export const ROW = 150;

/** Places nodes in columns by their longest path from a source (steps with
 * no inputs), in the order they come within a column. Cycles (which the
 * server rejects) end the walk rather than looping. */
export function layout<N extends GraphNode>(nodes: N[], edges: GraphEdge[]): N[] {
  const inputs = new Map<string, string[]>();
  for (const e of edges) inputs.set(e.target, [...(inputs.get(e.target) ?? []), e.source]);
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (id: string): number => {
    const known = depth.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const d = Math.max(-1, ...(inputs.get(id) ?? []).map(depthOf)) + 1;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const rows = new Map<number, number>();
  return nodes.map((n) => {
    const col = depthOf(n.id);
    const row = rows.get(col) ?? 0;
    rows.set(col, row + 1);
    return { ...n, position: { x: col * COLUMN, y: row * ROW } };
  });
}

/** A step id not yet used: the processor's name, then name_2, name_3, … */
export function freshStepID(processor: string, used: Iterable<string>): string {
  const base = processor.replace(/^grpc:\/\//, '').replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 56) || 'step';
  const taken = new Set(used);
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}_${i}`)) return `${base}_${i}`;
}
