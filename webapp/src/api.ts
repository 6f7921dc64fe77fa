// REST helpers. Every request made by the UI (REST, WHIP and WHEP) carries
// the bearer token, when set: typed REST calls go through `client`
// (openapi-fetch over the types generated from the server's OpenAPI
// document, src/api/schema.d.ts), the others through apiFetch.
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './api/schema';

export const API = '/api/v1';
const TOKEN_KEY = 'ifc_token';
const TOKEN_EVENT = 'ifc-token-change';

export function getToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token: string): void {
  const t = token.trim();
  try {
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage unavailable: the token cannot persist */
  }
  window.dispatchEvent(new Event(TOKEN_EVENT));
}

export function onTokenChange(cb: () => void): () => void {
  window.addEventListener(TOKEN_EVENT, cb);
  window.addEventListener('storage', cb);
  return () => {
    window.removeEventListener(TOKEN_EVENT, cb);
    window.removeEventListener('storage', cb);
  };
}

/** Takes ?token=… from the address bar into localStorage and removes it from the URL. */
export function adoptTokenFromURL(): void {
  const url = new URL(window.location.href);
  const t = url.searchParams.get('token');
  if (t === null) return;
  setToken(t);
  url.searchParams.delete('token');
  window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash);
}

export function apiFetch(input: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const token = getToken();
  if (token && !headers.has('Authorization')) headers.set('Authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

export class ApiError extends Error {
  readonly status: number;
  /** The pipeline step a validation error names, when it names one. */
  readonly step?: string;
  constructor(status: number, message: string, step?: string) {
    super(message);
    this.status = status;
    this.step = step;
  }
}

/** Builds a readable error from a failed response (the API's Error shape or text). */
export async function responseError(r: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await r.text();
  } catch {
    /* body unreadable */
  }
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: the text is the detail */
  }
  return errorOf(r, body);
}

/** The message of an error body: the API's Error shape, or the text as it came. */
function errorDetail(body: unknown): string {
  if (typeof body === 'string') return body;
  if (typeof body !== 'object' || body === null) return '';
  const e = (body as Partial<ApiErrorBody>).error;
  if (e && typeof e.message === 'string') return e.step ? `${e.message} (step ${e.step})` : e.message;
  return JSON.stringify(body);
}

function errorOf(r: Response, body: unknown): ApiError {
  const detail = errorDetail(body).trim().slice(0, 300);
  let msg = `${r.status} ${r.statusText}`.trim();
  if (r.status === 401 || r.status === 403) msg += ' — set a valid API token in the header bar';
  if (detail) msg += `: ${detail}`;
  const step = typeof body === 'object' && body !== null ? (body as Partial<ApiErrorBody>).error?.step : undefined;
  return new ApiError(r.status, msg, step || undefined);
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

// ---- resource types, generated from the server's OpenAPI document ----

/** The API's component schemas (src/api/schema.d.ts, made by `npm run gen:api`). */
export type Schemas = components['schemas'];
export type ApiErrorBody = Schemas['Error'];
export type Camera = Schemas['Camera'];
export type CameraInput = Schemas['CameraInput'];
export type CameraStatus = Partial<Pick<Camera, 'state' | 'codec' | 'width' | 'height' | 'fps' | 'bitrate' | 'last_error'>>;
export type Pipeline = Schemas['Pipeline'];
export type PipelineInput = Schemas['PipelineInput'];
export type PipelineStep = Pipeline['steps'][number];
export type Processor = Schemas['Processor'];
export type ProcessorParam = NonNullable<Processor['params']>[number];
export type TryResult = Schemas['TryResult'];
export type TryStep = TryResult['steps'][number];

const withToken: Middleware = {
  onRequest({ request }) {
    const token = getToken();
    if (token && !request.headers.has('Authorization')) request.headers.set('Authorization', `Bearer ${token}`);
    return request;
  },
};

/** The typed REST client: paths, parameters, bodies and answers as the server documents them. */
export const client = createClient<paths>({ baseUrl: typeof window === 'undefined' ? 'http://localhost' : window.location.origin });
client.use(withToken);

/** The answer's data, or an ApiError with the server's message. */
export function unwrap<D>(r: { data?: D; error?: unknown; response: Response }): D {
  if (!r.response.ok || r.data === undefined) throw errorOf(r.response, r.error);
  return r.data;
}

/**
 * The writable part of a camera as the API shows it. PUT replaces the whole
 * camera, so a save that changes a few fields starts from this one: what the
 * form does not show (zones, recording, placement) keeps its value instead
 * of going back to the default. The redacted source, sent back unchanged,
 * keeps the stored one.
 */
export function cameraInputOf(c: Camera): CameraInput {
  return {
    id: c.id,
    name: c.name,
    source: c.source,
    enabled: c.enabled,
    pipeline: c.pipeline,
    archive: c.archive,
    record: c.record,
    record_retention: c.record_retention,
    record_max_bytes: c.record_max_bytes,
    zones: c.zones,
    node: c.node,
    labels: c.labels,
  };
}

export const cameraPath = (id: string) => `${API}/cameras/${encodeURIComponent(id)}`;

export async function listCameras(): Promise<Camera[]> {
  return unwrap(await client.GET('/api/v1/cameras')).items;
}
export async function getCamera(id: string): Promise<Camera> {
  return unwrap(await client.GET('/api/v1/cameras/{id}', { params: { path: { id } } }));
}
export async function createCamera(c: CameraInput): Promise<Camera> {
  return unwrap(await client.POST('/api/v1/cameras', { body: c }));
}
export async function listPipelines(): Promise<Pipeline[]> {
  return unwrap(await client.GET('/api/v1/pipelines')).items;
}
export async function getPipeline(id: string): Promise<Pipeline> {
  return unwrap(await client.GET('/api/v1/pipelines/{id}', { params: { path: { id } } }));
}
export async function createPipeline(p: PipelineInput): Promise<Pipeline> {
  return unwrap(await client.POST('/api/v1/pipelines', { body: p }));
}
export async function updatePipeline(p: PipelineInput): Promise<Pipeline> {
  return unwrap(await client.PUT('/api/v1/pipelines/{id}', { params: { path: { id: p.id } }, body: p }));
}
export async function deletePipeline(id: string): Promise<void> {
  const r = await client.DELETE('/api/v1/pipelines/{id}', { params: { path: { id } } });
  if (!r.response.ok) throw errorOf(r.response, r.error);
}
export async function updateCamera(id: string, c: CameraInput): Promise<Camera> {
  return unwrap(await client.PUT('/api/v1/cameras/{id}', { params: { path: { id } }, body: c }));
}
/** Has the server connect to a source and report codec, size and rate, or the error. */
export async function testSource(source: string): Promise<Schemas['SourceTestResult']> {
  return unwrap(await client.POST('/api/v1/cameras/test', { body: { source } }));
}
export async function deleteCamera(id: string): Promise<void> {
  const r = await client.DELETE('/api/v1/cameras/{id}', { params: { path: { id } } });
  if (!r.response.ok) throw errorOf(r.response, r.error);
}
/** Registers a remote gRPC processor (grpc://host:port); the server reads its Info. */
export async function registerProcessor(address: string): Promise<Processor> {
  return unwrap(await client.POST('/api/v1/processors', { body: { address } }));
}
/** Runs a pipeline (as drawn, not stored) once on a picture, or on a camera's
 * next live frame: every step's output and time. */
export async function tryPipeline(p: PipelineInput, source: { image: Blob } | { camera: string }): Promise<TryResult> {
  const form = new FormData();
  form.append('pipeline', JSON.stringify({ ...p, id: p.id || 'try' }));
  if ('image' in source) form.append('image', source.image);
  else form.append('camera', source.camera);
  const r = await apiFetch(`${API}/pipelines/try`, { method: 'POST', body: form });
  if (!r.ok) throw await responseError(r);
  return (await r.json()) as TryResult;
}
export async function listProcessors(): Promise<Processor[]> {
  return unwrap(await client.GET('/api/v1/processors')).items;
}

/** The runtime status fields of a camera (the server sends them on the camera). */
export function cameraStatus(c: Camera | null | undefined): CameraStatus {
  if (!c) return {};
  const { state, codec, width, height, fps, bitrate, last_error } = c;
  return { state, codec, width, height, fps, bitrate, last_error };
}

export function formatBitrate(bps: number | undefined): string {
  if (bps === undefined || !Number.isFinite(bps)) return '—';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${bps.toFixed(0)} bit/s`;
}
