// Event helpers: the list, one event, delete, the live stream and the
// camera zones, over the generated client.
import { cameraInputOf, client, getToken, unwrap, type Camera, type Schemas } from './api';

/** One event as GET /api/v1/events lists it. */
export type EventItem = Schemas['Event'];
/** A camera zone as the API shows it. */
export type Zone = Schemas['Zone'];

export interface EventFilter {
  camera?: string;
  label?: string;
  zone?: string;
  since?: string;
  until?: string;
  limit?: number;
  cursor?: string;
}

export async function listEvents(f: EventFilter): Promise<{ items: EventItem[]; next_cursor?: string }> {
  const query: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(f)) if (v !== undefined && v !== '') query[k] = v;
  return unwrap(await client.GET('/api/v1/events', { params: { query } }));
}

export async function deleteEvent(id: string): Promise<void> {
  const r = await client.DELETE('/api/v1/events/{id}', { params: { path: { id } } });
  if (!r.response.ok) unwrap(r);
}

/** A URL the browser loads by itself (img, EventSource): the token rides in ?token=. */
export function tokenURL(url: string): string {
  const t = getToken();
  return t ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(t)}` : url;
}

/** Follows live events (SSE); returns the close function. */
export function followEvents(camera: string | undefined, onEvent: (e: EventItem) => void): () => void {
  const es = new EventSource(tokenURL(`/api/v1/events/stream${camera ? `?camera=${encodeURIComponent(camera)}` : ''}`));
  es.addEventListener('event', (m) => {
    try {
      onEvent(JSON.parse((m as MessageEvent<string>).data) as EventItem);
    } catch {
      /* not an event */
    }
  });
  return () => es.close();
}

/** Replaces a camera's zones, keeping the rest of its configuration. */
export async function saveZones(cam: Camera, zones: Zone[]): Promise<Camera> {
  return unwrap(
    await client.PUT('/api/v1/cameras/{id}', {
      params: { path: { id: cam.id } },
      body: { ...cameraInputOf(cam), zones },
    }),
  );
}

export function formatWhen(s: string | undefined): string {
  if (!s) return '—';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toLocaleString();
}

export function duration(e: EventItem): string {
  if (!e.end) return 'ongoing';
  const ms = new Date(e.end).getTime() - new Date(e.start).getTime();
  return ms >= 0 ? `${(ms / 1000).toFixed(1)} s` : '—';
}
