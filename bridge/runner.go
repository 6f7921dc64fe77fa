package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
)

// minPoll is the first wait after an empty poll; waits double up to
// Config.PollInterval while the stream stays idle.
const minPoll = 2 * time.Millisecond

// recordOverhead is a generous estimate of what Kafka adds to key and value
// of one record (lengths, timestamp delta, headers); kafka-go rejects a
// record larger than BatchBytes before sending it.
const recordOverhead = 256

// streamRunner mirrors one stream: fetch a batch, write it to Kafka until
// Kafka confirms it, acknowledge it, repeat. It owns its buffers, so a batch
// costs no allocation beyond what NATS and protobuf make.
type streamRunner struct {
	m     *Mirror
	spec  streamSpec
	cons  jetstream.Consumer
	stats *StreamStats
	topic string
	log   *slog.Logger

	headers []kafka.Header
	batch   []jetstream.Msg
	recs    []kafka.Message
	arena   []byte
	pb      proto.Message
	// written counts the records of the current batch Kafka confirmed.
	written int
	// poll is the wait after the next empty poll.
	poll time.Duration
	// fetchFailing is set from the first failed fetch to the next good one.
	fetchFailing bool
}

func (r *streamRunner) run(ctx context.Context) {
	cfg := &r.m.cfg
	ctype, typeName := "application/json", r.spec.typeName
	if r.spec.newMsg != nil {
		if cfg.Format == FormatProtobuf {
			ctype = "application/x-protobuf"
		}
		r.pb = r.spec.newMsg()
		typeName = string(proto.MessageName(r.pb))
	}
	// One header slice shared by every record of the stream: kafka-go only
	// reads it.
	r.headers = []kafka.Header{
		{Key: "content-type", Value: []byte(ctype)},
		{Key: "ifc-type", Value: []byte(typeName)},
	}
	r.batch = make([]jetstream.Msg, 0, cfg.BatchSize)
	r.recs = make([]kafka.Message, 0, cfg.BatchSize)
	r.arena = make([]byte, 0, 64<<10)
	r.poll = minPoll
	for ctx.Err() == nil {
		if !r.fetch(ctx) {
			continue
		}
		r.convert()
		if !r.write(ctx) {
			// Closing: hand the batch back so the next Mirror on this durable
			// gets it at once instead of after AckWait.
			for _, msg := range r.batch {
				_ = msg.Nak()
			}
			return
		}
		r.ack(ctx)
	}
}

// fetch fills r.batch with what is waiting, up to BatchSize, or waits a
// little when nothing is. It polls with no-wait requests rather than a long
// pull: a long pull left at the server by a closing Mirror would swallow
// messages published just after (they would wait AckWait for redelivery),
// while a no-wait request is answered at once and read to its end.
func (r *streamRunner) fetch(ctx context.Context) bool {
	r.batch = r.batch[:0]
	mb, err := r.cons.FetchNoWait(r.m.cfg.BatchSize)
	if err == nil {
		r.collect(mb)
		err = mb.Error()
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) {
		r.fetchFailed(ctx, err)
	} else if r.fetchFailing {
		r.fetchFailing = false
		r.log.Info("fetch from jetstream recovered")
	}
	if len(r.batch) == 0 {
		if err == nil {
			r.m.update(r.stats, func(s *StreamStats) { s.Lag = 0 })
		}
		sleep(ctx, r.poll)
		r.poll = min(2*r.poll, r.m.cfg.PollInterval)
		return false
	}
	r.poll = minPoll
	var pending uint64
	if meta, err := r.batch[len(r.batch)-1].Metadata(); err == nil {
		pending = meta.NumPending
	}
	r.m.update(r.stats, func(s *StreamStats) { s.Lag = pending + uint64(len(r.batch)) })
	return true
}

// fetchFailed logs the first of a run of fetch errors and puts back a
// consumer someone deleted, so the Mirror outlives an operator's mistake.
func (r *streamRunner) fetchFailed(ctx context.Context, err error) {
	if !r.fetchFailing {
		r.fetchFailing = true
		r.log.Warn("fetch from jetstream failed; retrying", "error", err)
	}
	// A deleted consumer shows as "no responders" to the fetch request, as
	// does a JetStream that is away; asking for the consumer tells them apart.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	durable := r.m.Durable(r.spec.name)
	if _, lerr := r.m.cfg.JetStream.Consumer(cctx, r.spec.jsStream, durable); !errors.Is(lerr, jetstream.ErrConsumerNotFound) {
		return
	}
	if c, cerr := r.m.cfg.JetStream.CreateOrUpdateConsumer(cctx, r.spec.jsStream, r.m.consumerConfig(r.spec)); cerr == nil {
		r.cons = c
		r.log.Warn("recreated the deleted consumer; the stream is mirrored again from its start", "durable", durable)
	}
}

func (r *streamRunner) collect(mb jetstream.MessageBatch) {
	for msg := range mb.Messages() {
		r.batch = append(r.batch, msg)
	}
}

// convert turns r.batch into Kafka records in r.recs. The key is the
// subject's last token (execution, node or camera id), so Kafka keeps each
// one's messages in order on one partition.
func (r *streamRunner) convert() {
	cfg := &r.m.cfg
	r.recs = r.recs[:0]
	r.arena = r.arena[:0]
	var redelivered, dropped uint64
	for _, msg := range r.batch {
		var ts time.Time
		if meta, err := msg.Metadata(); err == nil {
			ts = meta.Timestamp
			if meta.NumDelivered > 1 {
				redelivered++
			}
		}
		subj := msg.Subject()
		key := subj[strings.LastIndexByte(subj, '.')+1:]
		// Values and keys are appended to one arena reused batch after
		// batch; a slice taken before the arena grows still points at the
		// old array, which stays valid.
		start := len(r.arena)
		r.arena = append(r.arena, key...)
		keyB := r.arena[start:len(r.arena):len(r.arena)]
		val := msg.Data()
		if cfg.Format == FormatJSON && r.pb != nil {
			if err := proto.Unmarshal(val, r.pb); err != nil {
				dropped++
				r.log.Warn("dropping undecodable message", "subject", subj, "bytes", len(val), "error", err)
				continue
			}
			start = len(r.arena)
			var err error
			r.arena, err = mirrorJSON.MarshalAppend(r.arena, r.pb)
			if err != nil {
				dropped++
				r.log.Warn("dropping message that does not convert to JSON", "subject", subj, "error", err)
				continue
			}
			val = r.arena[start:len(r.arena):len(r.arena)]
		}
		if len(key)+len(val)+recordOverhead > cfg.MaxMessageBytes {
			dropped++
			r.log.Warn("dropping message larger than Kafka accepts", "subject", subj, "bytes", len(val), "max_message_bytes", cfg.MaxMessageBytes)
			continue
		}
		r.recs = append(r.recs, kafka.Message{Topic: r.topic, Key: keyB, Value: val, Headers: r.headers, Time: ts})
	}
	if redelivered > 0 || dropped > 0 {
		r.m.update(r.stats, func(s *StreamStats) { s.Redelivered += redelivered; s.Dropped += dropped })
	}
}

// write hands r.recs to Kafka and retries what failed with growing backoff
// until every record is confirmed or dropped as unwritable; it returns false
// only when ctx ended first. While it retries, the batch stays unacknowledged
// in JetStream (the fallback queue) and its AckWait is extended.
func (r *streamRunner) write(ctx context.Context) bool {
	cfg := &r.m.cfg
	pending := r.recs
	r.written = len(pending)
	backoff := cfg.MinBackoff
	failures := 0
	lastProgress := time.Now()
	for len(pending) > 0 {
		if !r.m.topicsReady.Load() {
			if err := r.m.ensureTopics(ctx); err == nil {
				r.m.topicsReady.Store(true)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, cfg.WriteTimeout)
		err := r.m.writer.WriteMessages(wctx, pending...)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		var dropped uint64
		var werrs kafka.WriteErrors
		var tooLarge kafka.MessageTooLargeError
		switch {
		case errors.As(err, &werrs) && len(werrs) == len(pending):
			// Only the records that failed go again; the others are in Kafka.
			keep := pending[:0]
			for i, e := range werrs {
				switch {
				case e == nil:
				case permanent(e):
					dropped++
					r.log.Warn("dropping record Kafka refuses", "key", string(pending[i].Key), "bytes", len(pending[i].Value), "error", e)
				default:
					keep = append(keep, pending[i])
				}
			}
			pending = keep
		case errors.As(err, &tooLarge):
			dropped++
			r.log.Warn("dropping record larger than Kafka accepts", "key", string(tooLarge.Message.Key), "bytes", len(tooLarge.Message.Value))
			pending = append(pending[:0], tooLarge.Remaining...)
		}
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			r.m.topicsReady.Store(false)
		}
		r.written -= int(dropped)
		failures++
		// The backlog grows while Kafka is away; ask JetStream so the lag
		// gauge shows it (one in-process request per retry).
		lag := uint64(0)
		ictx, icancel := context.WithTimeout(ctx, time.Second)
		if info, err := r.cons.Info(ictx); err == nil {
			lag = info.NumPending + uint64(info.NumAckPending)
		}
		icancel()
		r.m.update(r.stats, func(s *StreamStats) {
			s.Failed++
			s.Dropped += dropped
			if lag > 0 {
				s.Lag = lag
			}
		})
		if len(pending) == 0 {
			break
		}
		if failures == 1 {
			r.log.Warn("kafka write failed; messages stay queued in JetStream and are retried", "records", len(pending), "error", firstError(err))
		} else {
			r.log.Debug("kafka write failed again", "attempt", failures, "records", len(pending), "error", firstError(err))
		}
		if time.Since(lastProgress) > cfg.AckWait/3 {
			for _, msg := range r.batch {
				_ = msg.InProgress()
			}
			lastProgress = time.Now()
		}
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
	if failures > 0 {
		r.log.Info("kafka write recovered", "failed_attempts", failures)
	}
	return true
}

// ack acknowledges every message of the batch and waits for JetStream to
// confirm the last: acks travel in order on one connection, so a restart
// never sees a written batch again unless the process died in between.
func (r *streamRunner) ack(ctx context.Context) {
	n := uint64(r.written)
	last := r.batch[len(r.batch)-1]
	for _, msg := range r.batch[:len(r.batch)-1] {
		_ = msg.Ack()
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := last.DoubleAck(actx)
	cancel()
	if err != nil && ctx.Err() == nil {
		r.log.Warn("ack to jetstream failed; the batch will be delivered again", "error", err)
	}
	r.m.update(r.stats, func(s *StreamStats) {
		s.Mirrored += n
		if s.Lag >= uint64(len(r.batch)) {
			s.Lag -= uint64(len(r.batch))
		}
	})
}

// firstError shortens kafka-go's WriteErrors, which repeat one cause per
// record, to its first cause.
func firstError(err error) error {
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		for _, e := range werrs {
			if e != nil {
				return fmt.Errorf("%d of %d records: %w", werrs.Count(), len(werrs), e)
			}
		}
	}
	return err
}

// permanent reports errors a retry cannot fix: the record itself is refused.
func permanent(err error) bool {
	return errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) || errors.Is(err, kafka.InvalidRecord)
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
