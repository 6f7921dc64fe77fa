// The newest events of one camera, for the live page; refreshed live.
import { useEffect, useState } from 'react';
import { errorMessage } from '../api';
import { duration, followEvents, formatWhen, listEvents, tokenURL, type EventItem } from '../events';
import { Link } from '../router';

const SHOWN = 8;

export function RecentEvents({ camera }: { camera: string }) {
  const [items, setItems] = useState<EventItem[]>([]);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let stop = false;
    const load = async () => {
      try {
        const page = await listEvents({ camera, limit: SHOWN });
        if (!stop) {
          setItems(page.items);
          setError(null);
        }
      } catch (e) {
        if (!stop) setError(errorMessage(e));
      }
    };
    void load();
    // A live event triggers a reload: the list shows snapshots as stored.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const close = followEvents(camera, () => {
      clearTimeout(timer);
      timer = setTimeout(() => void load(), 500);
    });
    return () => {
      stop = true;
      clearTimeout(timer);
      close();
    };
  }, [camera]);

  return (
    <div className="recent-events" data-testid="recent-events">
      <h2>Recent events</h2>
      {error && <div className="error">{error}</div>}
      {items.length === 0 && !error && <p className="muted small">None yet.</p>}
      <ul>
        {items.map((e) => (
          <li key={e.id} data-testid="recent-event">
            {e.crop_url && <img src={tokenURL(e.crop_url)} alt="" width={32} height={48} />}
            <span>
              <strong>{e.label}</strong> #{e.track_id} · {formatWhen(e.start)} · {duration(e)}
            </span>
          </li>
        ))}
      </ul>
      <Link to={`/events`}>All events</Link>
    </div>
  );
}
