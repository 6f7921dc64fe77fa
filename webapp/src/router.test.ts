import { describe, expect, it } from 'vitest';
import { matchRoute } from './router';

describe('matchRoute', () => {
  it('matches the pages', () => {
    expect(matchRoute('/')).toEqual({ name: 'dashboard' });
    expect(matchRoute('/cameras/demo')).toEqual({ name: 'camera', id: 'demo' });
    expect(matchRoute('/cameras/demo/')).toEqual({ name: 'camera', id: 'demo' });
    expect(matchRoute('/publish/phone%201')).toEqual({ name: 'publish', id: 'phone 1' });
    expect(matchRoute('/executions')).toEqual({ name: 'executions' });
    expect(matchRoute('/executions/')).toEqual({ name: 'executions' });
    expect(matchRoute('/executions/01JX')).toEqual({ name: 'execution', id: '01JX' });
  });
  it('reports unknown paths', () => {
    expect(matchRoute('/cameras')).toEqual({ name: 'notfound', path: '/cameras' });
    expect(matchRoute('/cameras/a/b').name).toBe('notfound');
    expect(matchRoute('/executions/a/b').name).toBe('notfound');
    expect(matchRoute('/cameras/%E0%A4%A').name).toBe('notfound');
  });
});
