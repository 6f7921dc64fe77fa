// REST helpers. Every request made by the UI (REST, WHIP and WHEP) goes
// through apiFetch so that the bearer token, when set, is always attached.

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
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** Builds a readable error from a failed response (JSON {error|message} or text). */
export async function responseError(r: Response): Promise<ApiError> {
  let detail = '';
  try {
    const text = await r.text();
    try {
      const j = JSON.parse(text) as Record<string, unknown>;
      const m = j.error ?? j.message ?? j.detail;
      detail = typeof m === 'string' ? m : text;
    } catch {
      detail = text;
    }
  } catch {
    /* body unreadable */
  }
  detail = detail.trim().slice(0, 300);
  let msg = `${r.status} ${r.statusText}`.trim();
  if (r.status === 401 || r.status === 403) msg += ' — set a valid API token in the header bar';
  if (detail) msg += `: ${detail}`;
  return new ApiError(r.status, msg);
}

export async function apiJSON<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (!headers.has('Accept')) headers.set('Accept', 'application/json');
  if (init.body !== undefined && !headers.has('Content-Type')) headers.set('Content-Type', 'application/json');
  const r = await apiFetch(path, { ...init, headers });
  if (!r.ok) throw await responseError(r);
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

// ---- resource types ----

export interface Camera {
  id: string;
  name: string;
  source: string;
  enabled: boolean;
  pipeline: string;
  archive: boolean;
  state?: string | CameraStatus;
  [k: string]: unknown;
}

export interface CameraStatus {
  state?: string;
  codec?: string;
  width?: number;
  height?: number;
  fps?: number;
  bitrate?: number;
  last_error?: string;
}

export interface PipelineStep {
  id: string;
  processor: string;
  params?: Record<string, unknown>;
  inputs?: string[];
}

export interface Pipeline {
  id: string;
  name: string;
  steps: PipelineStep[];
}

export interface ProcessorParam {
  name: string;
  type: string;
  default?: unknown;
  description?: string;
}

export interface Processor {
  name: string;
  description?: string;
  params?: ProcessorParam[];
}

interface List<T> {
  items: T[] | null;
}

export const cameraPath = (id: string) => `${API}/cameras/${encodeURIComponent(id)}`;

export async function listCameras(): Promise<Camera[]> {
  return (await apiJSON<List<Camera>>(`${API}/cameras`)).items ?? [];
}
export async function getCamera(id: string): Promise<Camera> {
  return apiJSON<Camera>(cameraPath(id));
}
export async function createCamera(c: Pick<Camera, 'id' | 'name' | 'source' | 'enabled' | 'pipeline' | 'archive'>): Promise<Camera> {
  return apiJSON<Camera>(`${API}/cameras`, { method: 'POST', body: JSON.stringify(c) });
}
export async function listPipelines(): Promise<Pipeline[]> {
  return (await apiJSON<List<Pipeline>>(`${API}/pipelines`)).items ?? [];
}
export async function listProcessors(): Promise<Processor[]> {
  return (await apiJSON<List<Processor>>(`${API}/processors`)).items ?? [];
}

/**
 * The runtime status of a camera, whether the server reports it flat on the
 * camera object (state, codec, …) or nested under `state` / `status`.
 */
export function cameraStatus(c: Camera | null | undefined): CameraStatus {
  if (!c) return {};
  const out: CameraStatus = {};
  const merge = (o: unknown) => {
    if (typeof o !== 'object' || o === null) return;
    const r = o as Record<string, unknown>;
    if (typeof r.state === 'string') out.state = r.state;
    if (typeof r.codec === 'string') out.codec = r.codec;
    if (typeof r.width === 'number') out.width = r.width;
    if (typeof r.height === 'number') out.height = r.height;
    if (typeof r.fps === 'number') out.fps = r.fps;
    if (typeof r.bitrate === 'number') out.bitrate = r.bitrate;
    if (typeof r.last_error === 'string') out.last_error = r.last_error;
  };
  merge(c);
  merge(c.status);
  if (typeof c.state === 'object') merge(c.state);
  return out;
}

export function formatBitrate(bps: number | undefined): string {
  if (bps === undefined || !Number.isFinite(bps)) return '—';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${bps.toFixed(0)} bit/s`;
}
