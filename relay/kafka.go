package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ecst-io/ecst/outbox"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/plugin/kslog"
)

// startProducer creates the term's producer, initializes its producer id
// (bumping the epoch, which fences any earlier holder of the transactional
// id), and only then checks that the lease is still held. That order is
// what makes fencing sound: if the check passes, no newer leader had the
// lock when our epoch was drawn, so any newer leader draws a higher epoch
// and fences us. Initializing lazily, at the first produce, would let a
// leader that stalled before its first batch wake up and fence its
// successor instead.
func (r *Relay) startProducer(term context.Context, u unit, ls *lease, log *slog.Logger) (*producer, error) {
	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	for {
		p, err := r.newProducer(u, log)
		if err != nil {
			return nil, err
		}
		ictx, cancel := context.WithTimeout(term, 30*time.Second)
		_, _, err = p.cl.ProducerID(ictx)
		cancel()
		if err == nil {
			if err := ls.check(term); err != nil {
				p.close()
				return nil, err
			}
			return p, nil
		}
		p.cl.Close()
		if term.Err() != nil {
			return nil, termCause(term)
		}
		kind, fatal := classifyKafka(err)
		r.m.errors.WithLabelValues(kind).Inc()
		if fatal != nil {
			return nil, fatal
		}
		log.Warn("initialize the Kafka producer; retrying", "kind", kind, "err", err)
		bo.sleep(term)
	}
}

// producer wraps one term's Kafka client.
type producer struct {
	cl  *kgo.Client
	txn bool
}

func (r *Relay) newProducer(u unit, log *slog.Logger) (*producer, error) {
	opts := append(slices.Clone(r.cfg.KafkaOpts),
		// kgo narrates every transaction at info; keep its warnings.
		kgo.WithLogger(kslog.New(slog.New(minLevel{slog.LevelWarn, log.Handler()}))),
		kgo.MaxBufferedRecords(max(r.cfg.BatchSize*2, 10_000)),
		kgo.UnknownTopicRetries(2),
		kgo.RecordRetries(10),
		kgo.RecordDeliveryTimeout(30*time.Second),
	)
	txn := !r.cfg.noFencing
	if txn {
		// One transactional id per outbox shard (and one for the WAL): a
		// new leader's InitProducerID bumps the epoch and fences the old
		// leader, whose late writes then fail instead of landing behind
		// newer states.
		opts = append(opts, kgo.TransactionalID(fmt.Sprintf("ecst-relay.%s.%s", r.cfg.Service, u)),
			kgo.TransactionTimeout(60*time.Second))
		opts = append(opts, kgo.MaxVersions(txnV1Versions()), kgo.ConcurrentTransactionsBackoff(time.Millisecond))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &producer{cl: cl, txn: txn}, nil
}

// txnV1Versions caps Produce at v11, which keeps the client on the
// transaction protocol before KIP-890 part 2. Under part 2 a batch's
// first produce is what adds its partitions to the transaction; when it
// arrives before the broker has finished the previous transaction's
// markers (the relay commits back to back), the broker retries it
// server-side after add.partitions.to.txn.retry.backoff.ms (20 ms), a
// wait the client cannot shorten. Before part 2 the client adds the
// partitions itself and retries CONCURRENT_TRANSACTIONS after its own
// backoff (1 ms here). Fencing is the same in both: InitProducerID bumps
// the epoch.
func txnV1Versions() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.Produce), 11)
	return v
}

func (p *producer) close() {
	if p.txn {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.cl.AbortBufferedRecords(ctx)
		_ = p.cl.EndTransaction(ctx, kgo.TryAbort)
		cancel()
	}
	p.cl.Close()
}

// publish produces rows in order and commits them as one transaction. On a
// record the broker rejects for good it aborts and returns the rejects.
// acks is closed once every record is acknowledged, before the commit.
func (p *producer) publish(ctx context.Context, rows []record, acks chan<- struct{}) ([]*RejectedError, error) {
	if p.txn {
		if err := p.cl.BeginTransaction(); err != nil {
			return nil, err
		}
	}
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	wg.Add(len(rows))
	for i, row := range rows {
		hs, err := outbox.DecodeHeaders(row.headers)
		if err != nil {
			errs[i] = err
			wg.Done()
			continue
		}
		rec := &kgo.Record{Topic: row.topic, Key: []byte(row.key), Value: row.value}
		if row.value == nil {
			rec.Value = nil // a tombstone: null, not empty
		}
		rec.Headers = make([]kgo.RecordHeader, len(hs))
		for j, h := range hs {
			rec.Headers[j] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
		p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	// The batch is whole: send it now rather than after the client's
	// linger (10 ms by default), which would only delay it.
	_ = p.cl.Flush(ctx) // an error is the records' own, seen below
	wg.Wait()
	close(acks)
	var rejected []*RejectedError
	var first error
	for i, err := range errs {
		if err == nil {
			continue
		}
		if permanent(err) {
			rejected = append(rejected, &RejectedError{ID: rows[i].id, LSN: rows[i].lsn, Topic: rows[i].topic, Key: rows[i].key, Err: err})
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		if p.txn {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = p.cl.AbortBufferedRecords(actx)
			_ = p.cl.EndTransaction(actx, kgo.TryAbort)
			cancel()
		}
		return rejected, first
	}
	if p.txn {
		if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = p.cl.EndTransaction(actx, kgo.TryAbort)
			cancel()
			return nil, fmt.Errorf("commit Kafka transaction: %w", err)
		}
	}
	return nil, nil
}

// permanent reports a record error no retry can fix.
func permanent(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage) ||
		errors.Is(err, outbox.ErrBadHeaders)
}

// classifyKafka names an error's kind for metrics, and returns a fatal
// error (with the fix) for what retrying cannot cure.
func classifyKafka(err error) (kind string, fatal error) {
	switch {
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.TransactionalIDNotFound):
		return "fenced", nil
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return "unknown_topic", fmt.Errorf("%w (%v)", ErrTopicMissing, err)
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return "auth", fmt.Errorf("kafka refused the relay: %w (check the SASL user and its ACLs: it needs Write on the topics and on transactional ids ecst-relay.*)", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout", nil
	}
	return "kafka", nil
}

func explainKafka(err error) error {
	if errors.Is(err, kerr.SaslAuthenticationFailed) {
		return fmt.Errorf("%w: wrong SASL user name or password (ECST_KAFKA_SASL_USERNAME, ECST_KAFKA_SASL_PASSWORD)", err)
	}
	return err
}

// minLevel drops records below a level.
type minLevel struct {
	min slog.Level
	slog.Handler
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.min, h.Handler.WithAttrs(as)}
}

func (h minLevel) WithGroup(g string) slog.Handler { return minLevel{h.min, h.Handler.WithGroup(g)} }
