import { describe, expect, it } from 'vitest';
import { pageOf } from './router';

describe('pageOf', () => {
  it('matches the pages', () => {
    expect(pageOf('/')).toEqual({ name: 'dashboard' });
    expect(pageOf('/cameras/demo')).toEqual({ name: 'camera', id: 'demo' });
    expect(pageOf('/cameras/demo/')).toEqual({ name: 'camera', id: 'demo' });
    expect(pageOf('/publish/phone%201')).toEqual({ name: 'publish', id: 'phone 1' });
    expect(pageOf('/executions')).toEqual({ name: 'executions' });
    expect(pageOf('/executions/')).toEqual({ name: 'executions' });
    expect(pageOf('/executions/01JX')).toEqual({ name: 'execution', id: '01JX' });
    expect(pageOf('/pipelines/new')).toEqual({ name: 'pipelineNew' });
    expect(pageOf('/pipelines/faces')).toEqual({ name: 'pipeline', id: 'faces' });
    expect(pageOf('/live')).toEqual({ name: 'live' });
  });
  it('reports unknown paths', () => {
    expect(pageOf('/cameras')).toEqual({ name: 'notfound' });
    expect(pageOf('/cameras/a/b').name).toBe('notfound');
    expect(pageOf('/executions/a/b').name).toBe('notfound');
    expect(pageOf('/cameras/%E0%A4%A').name).toBe('notfound');
  });
});
