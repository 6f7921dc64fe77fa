const GOOD = new Set(['connected', 'running', 'publishing', 'streaming', 'live', 'ok', 'ready', 'playing', 'active', 'online', 'done', 'serving']);
const BAD = new Set(['failed', 'error', 'unsupported', 'stopped_with_error', 'unauthorized', 'unreachable', 'not_serving']);
const IDLE = new Set(['stopped', 'closed', 'disabled', 'idle', 'unknown', 'new', 'offline', 'cancelled']);

export function stateTone(state: string): 'good' | 'bad' | 'idle' | 'busy' {
  const s = state.toLowerCase();
  if (GOOD.has(s)) return 'good';
  if (BAD.has(s)) return 'bad';
  if (IDLE.has(s)) return 'idle';
  return 'busy';
}

export function StateBadge({ state, testId }: { state: string; testId?: string }) {
  return (
    <span className={`badge badge-${stateTone(state)}`} data-testid={testId} data-state={state}>
      {state}
    </span>
  );
}
