package record

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/imageflowcanvas/imageflow/bus"
	"github.com/imageflowcanvas/imageflow/bus/hub"
	busv1 "github.com/imageflowcanvas/imageflow/proto/busv1"
	"github.com/imageflowcanvas/imageflow/server/blob"
)

// Defaults of Config.
const (
	DefaultSegmentDuration  = 10 * time.Second
	DefaultFragmentDuration = time.Second
	DefaultRetention        = 7 * 24 * time.Hour
	DefaultSweepInterval    = 30 * time.Second
)

// videoReader is what the recorder needs of a hub reader.
type videoReader interface {
	C() <-chan *busv1.AccessUnit
	Dropped() uint64
	Close()
}

// VideoSource hands out readers of a camera's access units (the hub).
type VideoSource interface {
	Subscribe(cam, kind string, depth int) (*hub.Reader, error)
}

// Config configures the Manager. Exported fields are configuration.
type Config struct {
	// Store keeps the init and fragment blobs.
	Store blob.Store
	// Index is the KV bucket of segment entries.
	Index jetstream.KeyValue
	// Node names this server in blob keys (record.NodeName of the host
	// name); on start it repairs only its own segments.
	Node string
	// Video gives access units; Conn and Subjects carry the audio.
	Video    VideoSource
	Conn     *nats.Conn
	Subjects bus.Subjects
	// SegmentDuration is how long a segment grows before it is cut at the
	// next keyframe; FragmentDuration how much is buffered before a fragment
	// is stored (what a crash can lose).
	SegmentDuration  time.Duration
	FragmentDuration time.Duration
	// DefaultRetention applies to cameras whose settings give none.
	DefaultRetention time.Duration
	// MaxTotalBytes caps every camera's recordings together; 0: no cap.
	MaxTotalBytes int64
	// SweepInterval is how often retention runs (also after each segment).
	SweepInterval time.Duration
	Metrics       *Metrics
	Logger        *slog.Logger
}

// Settings are one camera's recording options.
type Settings struct {
	// Retention deletes segments older than this; 0 takes the default.
	Retention time.Duration
	// MaxBytes caps the camera's recordings; 0: no cap.
	MaxBytes int64
}

// Manager runs the recorders of the cameras that record, repairs the index
// on start and applies retention.
type Manager struct {
	Config

	ix       *index
	mu       sync.Mutex
	recs     map[string]*recorder
	settings map[string]Settings
	// sweepMu serialises retention runs.
	sweepMu sync.Mutex
	sweepCh chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start repairs the index against the store (see docs/architecture.md,
// "Recording") and starts the retention loop.
func (m *Manager) Start(ctx context.Context) error {
	if m.Store == nil || m.Index == nil || m.Video == nil {
		return errors.New("record: Store, Index and Video are required")
	}
	if m.SegmentDuration <= 0 {
		m.SegmentDuration = DefaultSegmentDuration
	}
	if m.FragmentDuration <= 0 {
		m.FragmentDuration = DefaultFragmentDuration
	}
	if m.DefaultRetention <= 0 {
		m.DefaultRetention = DefaultRetention
	}
	if m.SweepInterval <= 0 {
		m.SweepInterval = DefaultSweepInterval
	}
	if m.Metrics == nil {
		m.Metrics = NewMetrics(nil)
	}
	if m.Logger == nil {
		m.Logger = slog.Default()
	}
	m.Node = NodeName(m.Node)
	m.ix = newIndex(m.Index)
	m.recs = map[string]*recorder{}
	m.settings = map[string]Settings{}
	m.sweepCh = make(chan struct{}, 1)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.repair(ctx); err != nil {
		return err
	}
	// Other servers write to the same index (a cluster's other nodes): the
	// copy in memory follows the bucket so every node lists and exports
	// what any node recorded.
	if err := m.ix.follow(m.ctx, m.Logger); err != nil {
		m.cancel()
		return err
	}
	m.wg.Add(1)
	go m.sweepLoop()
	return nil
}

// repair makes the index and the store agree after an unclean stop: a
// segment still marked open keeps the parts the index names and is closed;
// parts past them (stored, never indexed) and blobs of segments the index
// does not know are deleted; an entry whose blobs are gone is cut back to
// the parts that exist.
func (m *Manager) repair(ctx context.Context) error {
	entries, err := m.ix.load(ctx)
	if err != nil {
		return err
	}
	blobs, err := m.Store.List(ctx, nodePrefix(m.Node))
	if err != nil {
		return fmt.Errorf("recordings: list store: %w", err)
	}
	dirs := map[string]*dirBlobs{}
	for _, b := range blobs {
		dir, name, ok := parseBlobKey(b.Key)
		if !ok {
			continue
		}
		d := dirs[dir]
		if d == nil {
			d = &dirBlobs{parts: map[int]int64{}}
			dirs[dir] = d
		}
		d.keys = append(d.keys, b.Key)
		if name == "init.mp4" {
			d.init = true
		} else if n := partNumber(name); n > 0 {
			d.parts[n] = b.Size
		}
	}
	var repaired, dropped, orphans int
	for _, s := range entries {
		if s.Node != m.Node {
			// Another server's (a shared bucket, or a camera that moved in
			// a cluster): readable, but not ours to repair.
			m.ix.mu.Lock()
			m.ix.cams[s.Camera] = append(m.ix.cams[s.Camera], s)
			m.ix.mu.Unlock()
			continue
		}
		d := dirs[s.dir()]
		delete(dirs, s.dir())
		have := 0
		if d != nil && d.init {
			for have < s.Parts {
				if _, ok := d.parts[have+1]; !ok {
					break
				}
				have++
			}
		}
		if have == 0 {
			dropped++
			_ = m.Index.Purge(ctx, s.kvKey())
			m.deleteBlobs(ctx, d)
			continue
		}
		changed := !s.Complete || have != s.Parts
		if d != nil {
			for n := range d.parts {
				if n > have {
					_ = m.Store.Delete(ctx, s.partKey(n))
				}
			}
		}
		if have != s.Parts {
			// Blobs went missing behind our back: the end moves back
			// proportionally, the best the index can say without reading.
			frac := float64(have) / float64(s.Parts)
			s.End = s.Start.Add(time.Duration(float64(s.End.Sub(s.Start)) * frac))
			s.Size = 0
			for n := 1; n <= have; n++ {
				s.Size += d.parts[n]
			}
			s.Parts = have
		}
		s.Complete = true
		if changed {
			repaired++
			if err := m.ix.put(ctx, s); err != nil {
				return err
			}
			continue
		}
		m.ix.mu.Lock()
		m.ix.cams[s.Camera] = append(m.ix.cams[s.Camera], s)
		m.ix.mu.Unlock()
	}
	for _, d := range dirs {
		orphans++
		m.deleteBlobs(ctx, d)
	}
	m.ix.mu.Lock()
	for _, segs := range m.ix.cams {
		sort.Slice(segs, func(i, j int) bool { return segs[i].Start.Before(segs[j].Start) })
	}
	m.ix.mu.Unlock()
	if repaired+dropped+orphans > 0 {
		m.Logger.Info("recordings repaired", "segments_closed", repaired, "entries_dropped", dropped, "orphan_segments_deleted", orphans)
	}
	return nil
}

// dirBlobs is what the store holds of one segment directory.
type dirBlobs struct {
	init  bool
	parts map[int]int64 // number → size
	keys  []string
}

func (m *Manager) deleteBlobs(ctx context.Context, d *dirBlobs) {
	if d == nil {
		return
	}
	for _, k := range d.keys {
		_ = m.Store.Delete(ctx, k)
	}
}

// Record starts recording cam (or updates its settings when it records).
func (m *Manager) Record(cam string, s Settings) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settings[cam] = s
	if m.recs[cam] != nil {
		return nil
	}
	reader, err := m.Video.Subscribe(cam, "record", 1024)
	if err != nil {
		return fmt.Errorf("record %s: %w", cam, err)
	}
	r := &recorder{m: m, cam: cam, reader: reader, done: make(chan struct{}),
		log: m.Logger.With("camera", cam), audioCh: make(chan *nats.Msg, 1024)}
	// A camera that comes back to this node (its lease lost and won again)
	// gets a new recorder; it goes on from this node's last segment, whose
	// end came from timestamps a source delivering ahead of the clock can
	// put past now.
	if end := m.ix.lastEnd(cam, m.Node); !end.IsZero() {
		r.lastEnd = end.UnixNano()
	}
	if m.Conn != nil {
		sub, err := m.Conn.ChanSubscribe(m.Subjects.Audio(cam), r.audioCh)
		if err != nil {
			reader.Close()
			return fmt.Errorf("record %s audio: %w", cam, err)
		}
		r.audioSub = sub
	}
	ctx, cancel := context.WithCancel(m.ctx)
	r.cancel = cancel
	m.recs[cam] = r
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		r.run(ctx)
	}()
	return nil
}

// Stop ends cam's recording; its last segment is closed and kept. Its
// settings stay for retention.
func (m *Manager) Stop(cam string) {
	m.mu.Lock()
	r := m.recs[cam]
	delete(m.recs, cam)
	m.mu.Unlock()
	if r == nil {
		return
	}
	if r.audioSub != nil {
		_ = r.audioSub.Unsubscribe()
	}
	r.cancel()
	<-r.done
	r.reader.Close()
}

// Recording reports whether cam is being recorded.
func (m *Manager) Recording(cam string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recs[cam] != nil
}

// CatchUp waits (at most 10 s) until this server's copy of the index holds
// every segment the bucket held when it was called, including those other
// nodes wrote; it reports whether it got there. Export calls it.
func (m *Manager) CatchUp(ctx context.Context) bool {
	if m.ix.catchUp(ctx) {
		return true
	}
	m.Logger.Warn("recordings index behind the bucket: answering from what it holds")
	return false
}

// Segments lists cam's segments overlapping [since, until), oldest first.
func (m *Manager) Segments(cam string, since, until time.Time) []Segment {
	return m.ix.between(cam, since, until)
}

// Close stops every recorder (closing their segments) and the retention
// loop; a second call does nothing.
func (m *Manager) Close() {
	if m.cancel == nil {
		return
	}
	m.mu.Lock()
	cams := make([]string, 0, len(m.recs))
	for cam := range m.recs {
		cams = append(cams, cam)
	}
	m.mu.Unlock()
	for _, cam := range cams {
		m.Stop(cam)
	}
	m.cancel()
	m.wg.Wait()
}

// segmentDone asks for a retention run without waiting for it.
func (m *Manager) segmentDone() {
	select {
	case m.sweepCh <- struct{}{}:
	default:
	}
}

func (m *Manager) sweepLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.sweepCh:
		}
		m.Sweep(m.ctx, time.Now())
	}
}

// Sweep deletes what retention and the size caps no longer allow among the
// segments this node wrote, oldest first; open segments are never deleted. The index entry goes first, so a
// crash in between leaves only orphan blobs, which the next start deletes.
func (m *Manager) Sweep(ctx context.Context, now time.Time) {
	m.sweepMu.Lock()
	defer m.sweepMu.Unlock()
	m.mu.Lock()
	settings := make(map[string]Settings, len(m.settings))
	for k, v := range m.settings {
		settings[k] = v
	}
	m.mu.Unlock()
	all := m.ix.all()
	var keep []Segment
	var total int64
	for cam, segs := range all {
		// Only our own segments: another node's are its to delete (it may
		// still be writing them, and it knows the camera's settings).
		mine := segs[:0]
		for _, s := range segs {
			if s.Node == m.Node {
				mine = append(mine, s)
			}
		}
		segs = mine
		st := settings[cam]
		ret := st.Retention
		if ret <= 0 {
			ret = m.DefaultRetention
		}
		var camBytes int64
		for _, s := range segs {
			camBytes += s.Size
		}
		for _, s := range segs {
			switch {
			case !s.Complete:
			case now.Sub(s.End) > ret:
				m.deleteSegment(ctx, s, "age")
				camBytes -= s.Size
				continue
			case st.MaxBytes > 0 && camBytes > st.MaxBytes:
				m.deleteSegment(ctx, s, "camera_size")
				camBytes -= s.Size
				continue
			}
			keep = append(keep, s)
			total += s.Size
		}
	}
	if m.MaxTotalBytes <= 0 || total <= m.MaxTotalBytes {
		return
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i].Start.Before(keep[j].Start) })
	for _, s := range keep {
		if total <= m.MaxTotalBytes {
			break
		}
		if !s.Complete {
			continue
		}
		m.deleteSegment(ctx, s, "total_size")
		total -= s.Size
	}
}

func (m *Manager) deleteSegment(ctx context.Context, s Segment, reason string) {
	if err := m.ix.remove(ctx, s); err != nil {
		m.Logger.Warn("recording not deleted", "camera", s.Camera, "start", s.Start, "error", err)
		return
	}
	_ = m.Store.Delete(ctx, s.initKey())
	for n := 1; n <= s.Parts; n++ {
		_ = m.Store.Delete(ctx, s.partKey(n))
	}
	m.Metrics.deletions.WithLabelValues(reason).Inc()
	m.Metrics.deletedBytes.Add(float64(s.Size))
}
