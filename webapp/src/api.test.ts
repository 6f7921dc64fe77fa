import { describe, expect, it } from 'vitest';
import { ApiError, responseError, unwrap } from './api';

const errorBody = { error: { status: 404, code: 'not_found', message: 'camera cam9: not found' } };

describe('API errors', () => {
  it('unwrap gives the data of a successful answer', () => {
    expect(unwrap({ data: { items: [] }, response: new Response('{}', { status: 200 }) })).toEqual({ items: [] });
  });

  it("unwrap throws an ApiError with the Error shape's message", () => {
    const response = new Response(JSON.stringify(errorBody), { status: 404, statusText: 'Not Found' });
    try {
      unwrap({ error: errorBody, response });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ApiError);
      expect((e as ApiError).status).toBe(404);
      expect((e as ApiError).message).toBe('404 Not Found: camera cam9: not found');
    }
  });

  it('responseError reads the Error shape, names the step, and falls back to text', async () => {
    const step = { error: { status: 400, code: 'invalid', message: 'width: want 1..8192', step: 'a' } };
    const e1 = await responseError(new Response(JSON.stringify(step), { status: 400, statusText: 'Bad Request' }));
    expect(e1.message).toBe('400 Bad Request: width: want 1..8192 (step a)');
    const e2 = await responseError(new Response('upstream down', { status: 502, statusText: 'Bad Gateway' }));
    expect(e2.message).toBe('502 Bad Gateway: upstream down');
    const e3 = await responseError(new Response(JSON.stringify(errorBody), { status: 401, statusText: 'Unauthorized' }));
    expect(e3.message).toContain('set a valid API token');
  });
});
