package batch

import (
	"context"
	"fmt"
	"time"
)

// Purge deletes a finished execution: its uploads, outputs, results, queue
// leftovers and record. A running one must be cancelled first, so work in
// flight never writes into a deleted execution.
func (m *Manager) Purge(ctx context.Context, id string) error {
	e, _, err := m.load(ctx, id)
	if err != nil {
		return err
	}
	if !terminal(e.State) {
		return fmt.Errorf("%w: execution %q is %s; cancel it before purging", ErrConflict, id, e.State)
	}
	m.removeBlobs(id)
	m.purgeJobs(ctx, id)
	m.forget(id)
	if err := m.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("executions store: %w", err)
	}
	m.log.Info("execution purged", "execution", id)
	return nil
}

// janitor purges executions finished longer than Retention ago, checking
// every tenth of the retention (at most hourly, at least every second).
func (m *Manager) janitor() {
	defer m.wg.Done()
	every := min(max(m.cfg.Retention/10, time.Second), time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.expire(time.Now().Add(-m.cfg.Retention))
		}
	}
}

// expire purges the executions that finished before cutoff.
func (m *Manager) expire(cutoff time.Time) {
	ctx, cancel := context.WithTimeout(m.ctx, time.Minute)
	defer cancel()
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		return
	}
	var old []string
	for id := range keys.Keys() {
		e, _, err := m.load(ctx, id)
		if err == nil && terminal(e.State) && e.FinishedAt != nil && e.FinishedAt.Before(cutoff) {
			old = append(old, id)
		}
	}
	for _, id := range old {
		if err := m.Purge(ctx, id); err != nil {
			m.log.Warn("retention: purge", "execution", id, "error", err)
		}
	}
}
