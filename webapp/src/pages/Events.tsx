// The events page: filters, snapshot thumbnails, a click opens the frame
// with its box; new events arrive live over SSE.
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { errorMessage } from '../api';
import { deleteEvent, duration, followEvents, formatWhen, listEvents, tokenURL, type EventFilter, type EventItem } from '../events';
import { Link, cameraURL } from '../router';

const PAGE = 48;

export function Events() {
  const [filter, setFilter] = useState<EventFilter>({});
  const [draft, setDraft] = useState<EventFilter>({});
  const [items, setItems] = useState<EventItem[] | null>(null);
  const [next, setNext] = useState<string | undefined>();
  const [error, setError] = useState<string | null>(null);
  const [open, setOpen] = useState<EventItem | null>(null);

  const load = useCallback(async (f: EventFilter, cursor?: string) => {
    try {
      const page = await listEvents({ ...f, limit: PAGE, cursor });
      setItems((old) => (cursor && old ? [...old, ...page.items] : page.items));
      setNext(page.next_cursor);
      setError(null);
    } catch (e) {
      setError(errorMessage(e));
    }
  }, []);

  useEffect(() => {
    void load(filter);
  }, [filter, load]);

  // Live: an event's newer state replaces the listed one.
  useEffect(
    () =>
      followEvents(filter.camera, (e) => {
        if (filter.label && e.label !== filter.label) return;
        if (filter.zone && !(e.zones ?? []).includes(filter.zone)) return;
        setItems((old) => {
          if (!old) return old;
          const i = old.findIndex((x) => x.id === e.id);
          if (i >= 0) {
            const copy = old.slice();
            copy[i] = { ...old[i], ...e, snapshot_url: old[i].snapshot_url ?? `/api/v1/events/${e.id}/snapshot.jpg`, crop_url: old[i].crop_url ?? `/api/v1/events/${e.id}/crop.jpg` };
            return copy;
          }
          return [{ ...e, snapshot_url: `/api/v1/events/${e.id}/snapshot.jpg`, crop_url: `/api/v1/events/${e.id}/crop.jpg` }, ...old];
        });
      }),
    [filter],
  );

  const apply = (ev: FormEvent) => {
    ev.preventDefault();
    const f: EventFilter = { ...draft };
    if (f.since) f.since = new Date(f.since).toISOString();
    setFilter(f);
  };

  const remove = async (e: EventItem) => {
    try {
      await deleteEvent(e.id);
      setItems((old) => old?.filter((x) => x.id !== e.id) ?? old);
      setOpen(null);
    } catch (err) {
      setError(errorMessage(err));
    }
  };

  return (
    <div className="page" data-testid="events-page">
      <section>
        <h1>Events</h1>
        <form className="toolbar" onSubmit={apply} data-testid="event-filters">
          <input placeholder="camera" value={draft.camera ?? ''} onChange={(e) => setDraft({ ...draft, camera: e.target.value })} data-testid="filter-camera" />
          <input placeholder="label" value={draft.label ?? ''} onChange={(e) => setDraft({ ...draft, label: e.target.value })} data-testid="filter-label" />
          <input placeholder="zone" value={draft.zone ?? ''} onChange={(e) => setDraft({ ...draft, zone: e.target.value })} data-testid="filter-zone" />
          <label className="muted small">
            since <input type="datetime-local" value={draft.since ?? ''} onChange={(e) => setDraft({ ...draft, since: e.target.value })} />
          </label>
          <button type="submit">Filter</button>
        </form>
        {error && <div className="error" data-testid="events-error">{error}</div>}
        {items === null && !error && <p className="muted">Loading…</p>}
        {items !== null && items.length === 0 && <p className="muted" data-testid="no-events">No events.</p>}
        {items !== null && items.length > 0 && (
          <div className="event-grid" data-testid="event-list">
            {items.map((e) => (
              <button key={e.id} className="event-card" onClick={() => setOpen(e)} data-testid="event-card" data-event={e.id}>
                {e.crop_url ? <img src={tokenURL(e.crop_url)} alt={e.label} loading="lazy" /> : <div className="event-noimg">no snapshot</div>}
                <div className="event-meta">
                  <strong>{e.label}</strong> #{e.track_id} · {e.camera}
                  <br />
                  <span className="muted small">
                    {formatWhen(e.start)} · {duration(e)} · {(e.best_score ?? 0).toFixed(2)}
                    {(e.zones ?? []).length > 0 ? ` · ${(e.zones ?? []).join(', ')}` : ''}
                  </span>
                </div>
              </button>
            ))}
          </div>
        )}
        {next && (
          <button onClick={() => void load(filter, next)} data-testid="events-more">
            More
          </button>
        )}
      </section>
      {open && (
        <div className="modal" onClick={() => setOpen(null)} data-testid="event-modal">
          <div className="modal-body" onClick={(ev) => ev.stopPropagation()}>
            {open.snapshot_url && <img src={tokenURL(open.snapshot_url)} alt={`${open.label} in ${open.camera}`} data-testid="event-snapshot" />}
            <p>
              <strong>{open.label}</strong> #{open.track_id} on <Link to={cameraURL(open.camera)}>{open.camera}</Link> · {formatWhen(open.start)} · {duration(open)} · best score{' '}
              {(open.best_score ?? 0).toFixed(2)} · {open.frames} results{(open.zones ?? []).length > 0 ? ` · zones ${(open.zones ?? []).join(', ')}` : ''}
            </p>
            <div className="toolbar">
              <button onClick={() => setOpen(null)}>Close</button>
              <button onClick={() => void remove(open)} data-testid="event-delete">
                Delete
              </button>
            </div>
          </div>
        </div>
      )}
    </div>
  );
}
