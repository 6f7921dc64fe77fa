import { describe, expect, it } from 'vitest';
import { ApiError, cameraInputOf, responseError, unwrap, type Camera } from './api';
import openapi from './api/openapi.json';

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

describe('cameraInputOf', () => {
  it('carries every writable field of a camera, so a save keeps what its form does not show', () => {
    const cam: Camera = {
      id: 'door',
      name: 'Door',
      source: 'rtsp://user:***@cam/main',
      enabled: false,
      pipeline: 'people',
      archive: true,
      record: true,
      record_retention: '72h0m0s',
      record_max_bytes: 1 << 30,
      zones: [{ name: 'porch', points: [[0, 0], [1, 0], [1, 1]], labels: ['person'], min_dwell_ms: 500 }],
      node: 'edge-1',
      labels: ['gpu'],
      created_at: '2026-11-30T00:00:00Z',
      updated_at: '2026-11-30T00:00:00Z',
      state: 'online',
      fps: 30,
      bitrate: 4e6,
      state_since: '2026-11-30T00:00:00Z',
    };
    const input = cameraInputOf(cam);
    // Every property the API's CameraInput schema lists, with the camera's value.
    const writable = Object.keys(openapi.components.schemas.CameraInput.properties);
    expect(writable.length).toBeGreaterThan(6);
    for (const k of writable) {
      expect(input, k).toHaveProperty(k);
      expect((input as Record<string, unknown>)[k], k).toEqual((cam as Record<string, unknown>)[k]);
    }
    expect(Object.keys(input).sort()).toEqual([...writable].sort());
  });
});
