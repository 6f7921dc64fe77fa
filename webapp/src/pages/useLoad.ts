import { useCallback, useEffect, useState } from 'react';
import { errorMessage, onTokenChange } from '../api';

/** Loads data (again every pollMs when given, and when the API token changes)
 * and reports it with the last error; reload() fetches at once. */
export function useLoad<T>(load: () => Promise<T>, pollMs?: number) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [nonce, setNonce] = useState(0);
  const reload = useCallback(() => setNonce((n) => n + 1), []);

  useEffect(() => onTokenChange(reload), [reload]);
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const d = await load();
        if (!stop) {
          setData(d);
          setError(null);
        }
      } catch (e) {
        if (!stop) setError(errorMessage(e));
      }
      if (!stop && pollMs) timer = setTimeout(run, pollMs);
    };
    void run();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [load, pollMs, nonce]);
  return { data, error, reload };
}
