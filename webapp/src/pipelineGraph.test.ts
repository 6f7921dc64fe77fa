import { describe, expect, it } from 'vitest';
import type { PipelineInput, Processor } from './api';
import { COLUMN, ROW, freshStepID, fromPipeline, layout, nodeErrors, paramError, toPipeline } from './pipelineGraph';

const resize: Processor = {
  name: 'resize',
  description: '',
  outputs: ['image'],
  params: [
    { name: 'width', type: 'int', description: '', default: 640, min: 0, max: 8192 },
    { name: 'keep_aspect', type: 'bool', description: '', default: true },
  ],
};
const detect: Processor = {
  name: 'detect',
  description: '',
  outputs: ['detections'],
  params: [
    { name: 'backend', type: 'enum', description: '', default: 'hog', choices: ['hog', 'haar'] },
    { name: 'scale', type: 'float', description: '', default: 1.05, min: 1.01, max: 2 },
    { name: 'label', type: 'string', description: '' },
  ],
};
const specs = new Map([
  ['resize', resize],
  ['detect', detect],
]);

describe('paramError', () => {
  const [width, keep] = resize.params!;
  const [backend, scale] = detect.params!;
  it('accepts empty (the default) and valid text', () => {
    expect(paramError(width, '')).toBeNull();
    expect(paramError(width, '400')).toBeNull();
    expect(paramError(scale, '1.5')).toBeNull();
    expect(paramError(keep, 'false')).toBeNull();
    expect(paramError(backend, 'haar')).toBeNull();
  });
  it('names what is wrong', () => {
    expect(paramError(width, '4.5')).toBe('a whole number');
    expect(paramError(width, 'abc')).toBe('a whole number');
    expect(paramError(width, '9999')).toBe('at most 8192');
    expect(paramError(scale, '1')).toBe('at least 1.01');
    expect(paramError(scale, 'x')).toBe('a number');
    expect(paramError(backend, 'yolo')).toBe('one of hog, haar');
    expect(paramError({ ...width, required: true }, ' ')).toBe('required');
  });
});

describe('pipeline ⇄ graph', () => {
  const p: PipelineInput = {
    id: 'faces',
    name: 'Faces',
    description: 'd',
    steps: [
      { id: 'small', processor: 'resize', params: { width: 400, keep_aspect: false }, inputs: [] },
      { id: 'face', processor: 'detect', params: { backend: 'haar', scale: 1.2, label: 'x' }, inputs: ['small'] },
      { id: 'eyes', processor: 'detect', params: {}, inputs: ['small', 'face'] },
    ],
  };
  it('round-trips exactly, values typed by the schema', () => {
    const g = fromPipeline(p);
    expect(g.edges.map((e) => `${e.source}->${e.target}`)).toEqual(['small->face', 'small->eyes', 'face->eyes']);
    expect(toPipeline({ id: 'faces', name: 'Faces', description: 'd' }, g.nodes, g.edges, specs)).toEqual(p);
  });
  it('leaves empty fields (defaults) out', () => {
    const g = fromPipeline(p);
    g.nodes[0].data.params.width = '';
    expect(toPipeline({ id: 'faces', name: '', description: '' }, g.nodes, g.edges, specs).steps[0].params).toEqual({ keep_aspect: false });
  });
  it('lays out by depth', () => {
    const g = fromPipeline(p);
    expect(g.nodes.map((n) => n.position)).toEqual([
      { x: 0, y: 0 },
      { x: COLUMN, y: 0 },
      { x: 2 * COLUMN, y: 0 },
    ]);
    const cyclic = layout(g.nodes, [...g.edges, { id: 'c', source: 'eyes', target: 'small' }]);
    expect(cyclic).toHaveLength(3);
    const wide = layout([g.nodes[0], { ...g.nodes[1], id: 'b' }], []);
    expect(wide.map((n) => n.position)).toEqual([
      { x: 0, y: 0 },
      { x: 0, y: ROW },
    ]);
  });
  it('reports bad fields per node', () => {
    const g = fromPipeline(p);
    g.nodes[1].data.params.scale = '7';
    expect(nodeErrors(g.nodes[1].data, specs)).toEqual({ scale: 'at most 2' });
    expect(nodeErrors(g.nodes[0].data, specs)).toEqual({});
  });
});

describe('freshStepID', () => {
  it('numbers repeats and cleans remote names', () => {
    expect(freshStepID('resize', [])).toBe('resize');
    expect(freshStepID('resize', ['resize', 'resize_2'])).toBe('resize_3');
    expect(freshStepID('grpc://10.0.0.1:50052', [])).toBe('10_0_0_1_50052');
  });
});
