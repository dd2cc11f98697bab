// Command watermill is a benchmark peer for ecst's relay: it measures how fast
// Watermill's idiomatic outbox (components/forwarder: an SQL subscriber on
// PostgreSQL feeding a Kafka publisher) drains a backlog of rows into a Kafka
// topic. Only the drain is timed; the fill is not.
//
//	cd bench/watermill && go run . -rows 200000 -value-size 300
//
// PostgreSQL: $ECST_BENCH_DATABASE_URL, else a throwaway durable cluster
// (internal/pgcluster). Kafka: $ECST_BENCH_BROKERS (comma-separated), else an
// in-process kfake cluster.
//
// # What is measured
//
// Writers use the decorated forwarder.Publisher on top of the watermill-sql
// publisher, so each row in the SQL topic's table ("watermill_<sql topic>")
// holds a JSON envelope {destination_topic, uuid, payload, metadata}: exactly
// what an application doing the outbox the documented Watermill way writes.
// The timer starts before the Kafka publisher, the SQL subscriber and the
// Forwarder are built, and stops when the Kafka topic's end offsets add up to
// -rows and the subscriber has committed the last row's offset (as ecst's
// relay is timed until its last batch is deleted). Afterwards every record is consumed back and checked: count, unique
// message UUIDs, key == the entity id carried in the metadata, value size,
// one partition per key, and per-key order.
//
// # Settings, and why
//
// Watermill's data path here is inherently one message at a time: the SQL
// subscriber (watermill-sql v3 Subscriber.query) reads up to
// SubscribeBatchSize rows in one REPEATABLE READ transaction, then hands them
// to the router one by one and waits for each message's Ack before sending
// the next; the Forwarder handler publishes each message with the Kafka
// publisher, which is a sarama SyncProducer (SendMessage blocks until the
// broker acks). So there is exactly one record in flight to Kafka at any time
// and one SELECT + one offsets UPSERT + one COMMIT per SubscribeBatchSize
// rows. Running several subscribers in the same consumer group does not help:
// NextOffsetQuery locks the group's offsets row FOR UPDATE, so they take
// turns. Hence the settings that matter are the few that cut per-message and
// per-batch cost without changing delivery guarantees:
//
// SQL subscriber (sql.SubscriberConfig / sql.DefaultPostgreSQLSchema):
//   - SubscribeBatchSize (-batch, default 10000; Watermill's default is 100):
//     rows per SELECT/ack transaction. The schema's doc comment says a higher
//     value helps "when consuming a lot of messages" at the cost of more
//     re-delivery after a crash (here: up to 10000 rows, against ecst's relay
//     batch of 2000), and each batch holds one REPEATABLE READ transaction
//     with the group's offsets row locked FOR UPDATE while its messages are
//     published (a few seconds at most). On a backlog this setting dominates
//     Watermill's throughput: DefaultPostgreSQLSchema.SelectQuery wraps the
//     query in a sub-select (on purpose, against a planner mis-estimate, per
//     its comment), so PostgreSQL bitmap-scans *every* remaining row and
//     sorts them on each SELECT. EXPLAIN ANALYZE, 200k rows left: LIMIT 1000
//     is a top-N heapsort in 1 MB, ~75-115 ms; from LIMIT 2000 on the sort no
//     longer fits the default work_mem (4MB) and becomes an external merge of
//     the whole backlog (129 MB on disk), ~250 ms per SELECT. The drain is
//     thus quadratic in the backlog divided by the batch size, and 2000
//     (ecst's batch) is a bad spot. Measured on kfake, 200k rows: 100 → 2.1k
//     rows/s, 1000 → 10-12k, 2000 → 8-10k, 5000 → 14k, 10000 → 15-16.6k,
//     20000 and 50000 → 17k (the one-message-at-a-time Kafka path is then the
//     limit). So
//     10000 is taken as the tuned value: near the plateau while keeping the
//     re-delivery window and transaction length bounded. -batch 2000 gives
//     ecst's batch size, -batch 100 Watermill's default; bench/watermill/
//     README.md has all runs.
//   - work_mem: the server's default (4MB), the same server settings ecst is
//     measured with. -work-mem 64MB sets it for the benchmark's sessions
//     (the forwarder's SELECTs then top-N sort in memory): 0-15% more on
//     kfake, ~2% on the real broker, at batch 10000.
//   - PollInterval (-poll, 100ms; default 1s): only used when a SELECT finds
//     nothing. A backlog drain never waits on it (the first query runs at
//     once); lowered anyway so an idle gap can never add a second.
//   - AckDeadline: default 30s (must be > 0 in v3). Irrelevant unless a
//     publish hangs.
//   - ResendInterval / RetryInterval: defaults (1s); only used on nack/error.
//   - ConsumerGroup "": one forwarder, as in Watermill's forwarder example.
//   - Offsets: sql.DefaultPostgreSQLOffsetsAdapter (the documented pairing
//     for DefaultPostgreSQLSchema; the exactly-once, ordered variant).
//   - Payload column: the default JSON type (the envelope is JSON).
//   - database/sql with the pgx v5 stdlib driver, default statement cache
//     (pgx prepares and caches the SELECT, so it is parsed once).
//
// Router / Forwarder: defaults (no middlewares, no retry middleware, no
// poison queue). The logger prints errors only; in particular debug/trace
// (per-message logging) is off, as in production.
//
// Kafka publisher (watermill-kafka v3, sarama config from
// kafka.DefaultSaramaSyncPublisherConfig, then):
//   - RequiredAcks = WaitForAll and Idempotent = true (-acks all, default):
//     the same durability as ecst's relay, which uses an idempotent,
//     transactional franz-go producer (acks=all). Idempotence needs
//     Net.MaxOpenRequests = 1, which costs nothing here because the
//     Forwarder never has more than one request in flight. -acks leader gives
//     sarama's/Watermill's default (acks=1, not idempotent) for comparison.
//   - Flush.Frequency/Bytes/Messages left at 0 (send at once): with one
//     message in flight, any linger would only add latency per message.
//   - No compression: the payloads are random bytes.
//   - Version: sarama.DefaultVersion (2.1.0), which watermill-kafka v3.1+
//     uses; Retry.Max 10, Return.Successes, ClientID "watermill" as in
//     Watermill's default config.
//   - Marshaler: kafka.NewWithPartitioningMarshaler with the entity id from
//     the message metadata ("entity_id") as the record key, as the Watermill
//     docs show for partitioning. DefaultMarshaler (which it wraps) also
//     sends every metadata entry and the message UUID as record headers.
//   - Partitioner: sarama's default hash partitioner (FNV-1a, not Kafka's
//     murmur2); it does not change throughput.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"flag"
	"fmt"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/internal/bench"
	"github.com/ecst-io/ecst/internal/pgcluster"
	"github.com/ecst-io/ecst/migrate"
)

const (
	entityMeta = "entity_id" // metadata field carrying the Kafka key
	seqMeta    = "seq"       // metadata field carrying the row's fill order
)

type config struct {
	rows       int
	valueSize  int
	keys       int
	partitions int
	batch      int
	poll       time.Duration
	acks       string
	fillBatch  int
	timeout    time.Duration
	verify     bool
	workMem    string
	peers      bool
}

func main() {
	var c config
	flag.IntVar(&c.rows, "rows", 200_000, "rows in the backlog")
	flag.IntVar(&c.valueSize, "value-size", 300, "payload bytes per row (random)")
	flag.IntVar(&c.keys, "keys", 100_000, "distinct entity ids (Kafka keys)")
	flag.IntVar(&c.partitions, "partitions", 6, "partitions of the Kafka topic")
	flag.IntVar(&c.batch, "batch", 10_000, "SQL subscriber SubscribeBatchSize (Watermill default 100; ecst relay batch 2000)")
	flag.DurationVar(&c.poll, "poll", 100*time.Millisecond, "SQL subscriber PollInterval (idle only)")
	flag.StringVar(&c.acks, "acks", "all", "Kafka acks: all (idempotent, as ecst) or leader (Watermill/sarama default)")
	flag.IntVar(&c.fillBatch, "fill-batch", 5000, "messages per INSERT while filling (not measured)")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "abort the whole run after this long")
	flag.BoolVar(&c.verify, "verify", true, "consume the topic afterwards and check every record")
	flag.BoolVar(&c.peers, "peers", true, "also drain the same backlog with the raw ceiling loop and ecst's relay, same database and broker, and print ratios")
	flag.StringVar(&c.workMem, "work-mem", "", "PostgreSQL work_mem for the benchmark's sessions, e.g. 64MB (default: the server's, 4MB)")
	flag.Parse()
	if c.rows <= 0 || c.valueSize <= 0 || c.keys <= 0 || c.partitions <= 0 || c.batch <= 0 || c.fillBatch <= 0 || c.fillBatch > 20_000 {
		fmt.Fprintln(os.Stderr, "watermill: bad flags (rows, value-size, keys, partitions, batch > 0; 0 < fill-batch <= 20000)")
		os.Exit(2)
	}
	if c.acks != "all" && c.acks != "leader" {
		fmt.Fprintln(os.Stderr, "watermill: -acks must be all or leader")
		os.Exit(2)
	}

	if err := bench.RunFor(c.timeout, func(ctx context.Context) error { return run(ctx, c) }); err != nil {
		fmt.Fprintf(os.Stderr, "watermill: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func run(ctx context.Context, c config) error {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	sqlTopic := "wm_bench_" + runID   // Watermill SQL topic → table "watermill_wm_bench_<id>"
	kafkaTopic := "wm-bench-" + runID // destination Kafka topic

	db, dbURL, closeDB, err := openPostgres(ctx, c)
	if err != nil {
		return err
	}
	defer closeDB()
	var pgVersion, workMem string
	_ = db.QueryRowContext(ctx, "SHOW server_version").Scan(&pgVersion)
	_ = db.QueryRowContext(ctx, "SHOW work_mem").Scan(&workMem)
	schema := wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: c.batch}
	offsets := wsql.DefaultPostgreSQLOffsetsAdapter{}
	defer func() {
		// Only matters on a shared database; a throwaway cluster goes anyway.
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_, _ = db.ExecContext(dctx, "DROP TABLE IF EXISTS "+schema.MessagesTable(sqlTopic)+", "+offsets.MessagesOffsetsTable(sqlTopic))
	}()

	brokers, adm, kind, closeKafka, err := openKafka(ctx, c, kafkaTopic)
	if err != nil {
		return err
	}
	defer closeKafka()
	logf("postgres %s, kafka %s, topic %s (%d partitions), sql topic %s", pgVersion, kind, kafkaTopic, c.partitions, sqlTopic)

	logger := quietLogger{}

	// --- Fill (not measured) ---
	fillStart := time.Now()
	if err := fill(ctx, c, db, schema, sqlTopic, kafkaTopic, logger); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	if _, err := db.ExecContext(ctx, "VACUUM ANALYZE "+schema.MessagesTable(sqlTopic)); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	logf("filled %d rows in %.1f s", c.rows, time.Since(fillStart).Seconds())
	var maxOffset int64
	if err := db.QueryRowContext(ctx, `SELECT max("offset") FROM `+schema.MessagesTable(sqlTopic)).Scan(&maxOffset); err != nil {
		return fmt.Errorf("max offset: %w", err)
	}

	// --- Measure ---
	d := drain{c: c, db: db, adm: adm, schema: schema, offsets: offsets, brokers: brokers, sqlTopic: sqlTopic, kafkaTopic: kafkaTopic, maxOffset: maxOffset, logger: logger}
	elapsed, err := d.run(ctx)
	if err != nil {
		return err
	}

	if c.verify {
		vstart := time.Now()
		if err := verify(ctx, c, brokers, kafkaTopic); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		logf("verified %d records (count, unique uuids, keys, value size, one partition per key, per-key order) in %.1f s", c.rows, time.Since(vstart).Seconds())
	}

	logf("settings: SubscribeBatchSize=%d PollInterval=%s acks=%s idempotent=%v work_mem=%s, DefaultPostgreSQLSchema/OffsetsAdapter, pgx stdlib, sarama SyncProducer, 1 forwarder",
		c.batch, c.poll, c.acks, c.acks == "all", workMem)
	wm := float64(c.rows) / elapsed.Seconds()
	fmt.Printf("watermill: %d rows in %.2f s = %.0f rows/s\n", c.rows, elapsed.Seconds(), wm)
	fmt.Printf("versions: %s\n", versions())
	if c.peers {
		return peers(ctx, c, dbURL, brokers, kafkaTopic, runID, wm)
	}
	return nil
}

// openPostgres opens $ECST_BENCH_DATABASE_URL, or a throwaway durable
// cluster it starts, with -work-mem set for the sessions; closeDB closes it
// (and stops the cluster).
func openPostgres(ctx context.Context, c config) (db *sql.DB, dbURL string, closeDB func(), err error) {
	stop := func() {}
	dbURL = os.Getenv("ECST_BENCH_DATABASE_URL")
	if dbURL == "" {
		logf("starting a throwaway PostgreSQL cluster (durable)")
		pg, err := pgcluster.Start(ctx, pgcluster.Options{Durable: true})
		if err != nil {
			return nil, "", nil, fmt.Errorf("start postgres: %w", err)
		}
		stop = func() { _ = pg.Stop() }
		dbURL = pg.URL("postgres")
	}
	if c.workMem != "" {
		u, err := url.Parse(dbURL)
		if err != nil {
			stop()
			return nil, "", nil, fmt.Errorf("-work-mem needs a URL-form database address: %w", err)
		}
		q := u.Query()
		q.Set("work_mem", c.workMem) // pgx sends unknown URL parameters as session settings
		u.RawQuery = q.Encode()
		dbURL = u.String()
	}
	db, err = sql.Open("pgx", dbURL)
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	closeDB = func() { _ = db.Close(); stop() }
	if err := db.PingContext(ctx); err != nil {
		closeDB()
		return nil, "", nil, fmt.Errorf("postgres: %w", err)
	}
	return db, dbURL, closeDB, nil
}

// openKafka creates the destination topic on $ECST_BENCH_BROKERS, or on an
// in-process kfake cluster it starts; closeKafka deletes the topic (and
// stops the cluster).
func openKafka(ctx context.Context, c config, topic string) (brokers []string, adm *kadm.Client, kind string, closeKafka func(), err error) {
	stop := func() {}
	kind = "kfake"
	if env := os.Getenv("ECST_BENCH_BROKERS"); env != "" {
		for _, b := range strings.Split(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		kind = "real broker " + strings.Join(brokers, ",")
	} else {
		fake, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return nil, nil, "", nil, fmt.Errorf("start kfake: %w", err)
		}
		stop = fake.Close
		brokers = fake.ListenAddrs()
	}
	kcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		stop()
		return nil, nil, "", nil, err
	}
	adm = kadm.NewClient(kcl)
	resp, err := adm.CreateTopic(ctx, int32(c.partitions), 1, nil, topic) //nolint:gosec // small
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		kcl.Close()
		stop()
		return nil, nil, "", nil, fmt.Errorf("create topic %s: %w", topic, err)
	}
	return brokers, adm, kind, func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_, _ = adm.DeleteTopics(dctx, topic)
		kcl.Close()
		stop()
	}, nil
}

// drain is the timed part: the Forwarder drains the filled SQL topic into
// the Kafka topic.
type drain struct {
	c                    config
	db                   *sql.DB
	schema               wsql.DefaultPostgreSQLSchema
	offsets              wsql.DefaultPostgreSQLOffsetsAdapter
	adm                  *kadm.Client
	brokers              []string
	sqlTopic, kafkaTopic string
	maxOffset            int64 // the last row's
	logger               watermill.LoggerAdapter
}

// run times the drain: from before the Kafka publisher, the SQL subscriber
// and the Forwarder are built until every row is in Kafka and the last
// row's offset is committed.
func (d *drain) run(ctx context.Context) (time.Duration, error) {
	c := d.c
	start := time.Now()
	fwd, closeAll, err := startForwarder(c, d.db, d.schema, d.offsets, d.brokers, d.sqlTopic, d.logger)
	if err != nil {
		return 0, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- fwd.Run(runCtx) }()
	var shutdownOnce sync.Once
	shutdown := func() {
		shutdownOnce.Do(func() {
			// Close first (the router lets the handler finish), cancel after.
			_ = fwd.Close()
			select {
			case <-runDone:
			case <-time.After(40 * time.Second):
				logf("forwarder did not stop within 40s")
			}
			stopRun()
			closeAll()
		})
	}
	defer shutdown()

	inKafka, err := d.waitInKafka(ctx, start, runDone)
	if err != nil {
		return 0, err
	}
	inKafkaAt := time.Since(start)
	if err := d.waitCommitted(ctx, inKafkaAt); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	logf("all rows in Kafka after %.3f s, last offset committed after %.3f s", inKafkaAt.Seconds(), elapsed.Seconds())
	shutdown()
	if inKafka != int64(c.rows) {
		return 0, fmt.Errorf("%d records in Kafka, want %d (duplicates?)", inKafka, c.rows)
	}
	return elapsed, nil
}

// waitInKafka waits until the topic's end offsets add up to -rows, and
// returns their sum.
func (d *drain) waitInKafka(ctx context.Context, start time.Time, runDone chan error) (int64, error) {
	c := d.c
	var inKafka int64
	lastReport := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for inKafka < int64(c.rows) {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d rows in Kafka after %.1f s", inKafka, c.rows, time.Since(start).Seconds())
		case err := <-runDone:
			runDone <- err
			return 0, fmt.Errorf("forwarder stopped early (%v) with %d of %d rows in Kafka", err, inKafka, c.rows)
		case <-tick.C:
		}
		n, err := bench.EndOffsets(ctx, d.adm, d.kafkaTopic)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return 0, fmt.Errorf("list end offsets: %w", err)
		}
		inKafka = n
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			el := time.Since(start).Seconds()
			logf("%d/%d rows in Kafka after %.0f s (%.0f rows/s)", n, c.rows, el, float64(n)/el)
		}
	}
	return inKafka, nil
}

// waitCommitted waits until the subscriber has committed the last row's
// offset: the drain is done then, as ecst's relay is timed until its last
// batch is deleted (one more UPSERT+COMMIT, a few milliseconds).
func (d *drain) waitCommitted(ctx context.Context, inKafkaAt time.Duration) error {
	for {
		var acked int64
		err := d.db.QueryRowContext(ctx, "SELECT offset_acked FROM "+d.offsets.MessagesOffsetsTable(d.sqlTopic)+" WHERE consumer_group = ''").Scan(&acked)
		if err != nil {
			return fmt.Errorf("read watermill offsets after %d rows reached Kafka: %w", d.c.rows, err)
		}
		if acked >= d.maxOffset {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("all %d rows in Kafka after %.2f s, but the last offset was not committed (acked %d, last %d)", d.c.rows, inKafkaAt.Seconds(), acked, d.maxOffset)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// peers drains the same backlog on the same database and broker, in the
// same run, with the raw ceiling loop and with ecst's relay, and prints
// the ratios.
func peers(ctx context.Context, c config, dbURL string, brokers []string, kafkaTopic, runID string, wm float64) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool); err != nil {
		return err
	}
	env := &bench.Outbox{Pool: pool, KafkaOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Topic: kafkaTopic + "-ecst", Service: "bench-" + runID}
	if err := env.CreateTopic(ctx, c.partitions); err != nil {
		return err
	}
	if err := env.Fill(ctx, c.rows, c.valueSize); err != nil {
		return err
	}
	n, took, err := env.Ceiling(ctx, 2000)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
	}
	ceiling := float64(n) / took.Seconds()
	if err := env.Fill(ctx, c.rows, c.valueSize); err != nil {
		return err
	}
	n, took, err = env.Relay(ctx, 2000)
	if err != nil {
		return fmt.Errorf("ecst relay: %w", err)
	}
	ecst := float64(n) / took.Seconds()
	fmt.Printf("ceiling: %.0f rows/s\necst relay: %.0f rows/s\necst/ceiling: %.2f\necst/watermill: %.1f\n", ceiling, ecst, ecst/ceiling, ecst/wm)
	return nil
}

// fill writes rows through the forwarder's decorated publisher over the SQL
// publisher: one multi-row INSERT per Publish call.
func fill(ctx context.Context, c config, db *sql.DB, schema wsql.DefaultPostgreSQLSchema, sqlTopic, kafkaTopic string, logger watermill.LoggerAdapter) error {
	sqlPub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	if err != nil {
		return err
	}
	defer sqlPub.Close()
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: sqlTopic})
	payloads := make([]byte, c.fillBatch*c.valueSize)
	for done := 0; done < c.rows; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(c.fillBatch, c.rows-done)
		if _, err := rand.Read(payloads[:n*c.valueSize]); err != nil {
			return err
		}
		msgs := make([]*message.Message, n)
		for i := range n {
			seq := done + i
			m := message.NewMessage(watermill.NewUUID(), payloads[i*c.valueSize:(i+1)*c.valueSize])
			m.Metadata.Set(entityMeta, "customer-"+strconv.Itoa(seq%c.keys))
			m.Metadata.Set(seqMeta, strconv.Itoa(seq))
			msgs[i] = m
		}
		if err := pub.Publish(kafkaTopic, msgs...); err != nil {
			return err
		}
		done += n
	}
	return nil
}

func startForwarder(c config, db *sql.DB, schema wsql.DefaultPostgreSQLSchema, offsets wsql.DefaultPostgreSQLOffsetsAdapter, brokers []string, sqlTopic string, logger watermill.LoggerAdapter) (*forwarder.Forwarder, func(), error) {
	sc := wkafka.DefaultSaramaSyncPublisherConfig()
	if c.acks == "all" {
		sc.Producer.RequiredAcks = sarama.WaitForAll
		sc.Producer.Idempotent = true
		sc.Net.MaxOpenRequests = 1
	} else {
		sc.Producer.RequiredAcks = sarama.WaitForLocal
	}
	kpub, err := wkafka.NewPublisher(wkafka.PublisherConfig{
		Brokers: brokers,
		Marshaler: wkafka.NewWithPartitioningMarshaler(func(_ string, m *message.Message) (string, error) {
			return m.Metadata.Get(entityMeta), nil
		}),
		OverwriteSaramaConfig: sc,
	}, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka publisher: %w", err)
	}
	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		ConsumerGroup:    "",
		PollInterval:     c.poll,
		SchemaAdapter:    schema,
		OffsetsAdapter:   offsets,
		InitializeSchema: true,
	}, logger)
	if err != nil {
		_ = kpub.Close()
		return nil, nil, fmt.Errorf("sql subscriber: %w", err)
	}
	fwd, err := forwarder.NewForwarder(sub, kpub, logger, forwarder.Config{
		ForwarderTopic: sqlTopic,
		CloseTimeout:   30 * time.Second,
	})
	if err != nil {
		_ = sub.Close()
		_ = kpub.Close()
		return nil, nil, fmt.Errorf("forwarder: %w", err)
	}
	return fwd, func() { _ = sub.Close(); _ = kpub.Close() }, nil
}

// verify consumes the whole topic and checks every record.
func verify(ctx context.Context, c config, brokers []string, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	uuids := make(map[string]struct{}, c.rows)
	keyPart := make(map[string]int32, c.keys)
	keyLastSeq := make(map[string]int, c.keys)
	count := 0
	for count < c.rows {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consumed %d of %d: %w", count, c.rows, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return ferr
		}
		for _, r := range fs.Records() {
			count++
			h := map[string]string{}
			for _, hd := range r.Headers {
				h[hd.Key] = string(hd.Value)
			}
			id := h[wkafka.UUIDHeaderKey]
			if _, dup := uuids[id]; dup || id == "" {
				return fmt.Errorf("duplicate or missing uuid %q at %d/%d", id, r.Partition, r.Offset)
			}
			uuids[id] = struct{}{}
			key := string(r.Key)
			if key == "" || key != h[entityMeta] {
				return fmt.Errorf("record %d/%d: key %q, entity_id header %q", r.Partition, r.Offset, key, h[entityMeta])
			}
			if len(r.Value) != c.valueSize {
				return fmt.Errorf("record %d/%d: value %d bytes, want %d", r.Partition, r.Offset, len(r.Value), c.valueSize)
			}
			if p, ok := keyPart[key]; ok && p != r.Partition {
				return fmt.Errorf("key %s in partitions %d and %d", key, p, r.Partition)
			}
			keyPart[key] = r.Partition
			seq, err := strconv.Atoi(h[seqMeta])
			if err != nil {
				return fmt.Errorf("record %d/%d: seq %q", r.Partition, r.Offset, h[seqMeta])
			}
			if last, ok := keyLastSeq[key]; ok && seq <= last {
				return fmt.Errorf("key %s out of order: seq %d after %d", key, seq, last)
			}
			keyLastSeq[key] = seq
		}
	}
	if want := min(c.rows, c.keys); len(keyPart) != want {
		return fmt.Errorf("%d distinct keys, want %d", len(keyPart), want)
	}
	return nil
}

func versions() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build info)"
	}
	want := []string{
		"github.com/ThreeDotsLabs/watermill",
		"github.com/ThreeDotsLabs/watermill-sql/v3",
		"github.com/ThreeDotsLabs/watermill-kafka/v3",
		"github.com/IBM/sarama",
		"github.com/jackc/pgx/v5",
	}
	var out []string
	for _, w := range want {
		for _, d := range bi.Deps {
			if d.Path == w {
				v := d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Version
				}
				out = append(out, strings.TrimPrefix(w, "github.com/")+" "+v)
			}
		}
	}
	return strings.Join(out, ", ") + ", " + bi.GoVersion
}

// quietLogger prints Watermill's errors only: info is start/stop chatter
// (and would print the schema DDL), debug and trace are per message.
type quietLogger struct{ fields watermill.LogFields }

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	fmt.Fprintf(os.Stderr, "# watermill ERROR %s: %v %v\n", msg, err, l.fields.Add(fields))
}
func (quietLogger) Info(string, watermill.LogFields)  {}
func (quietLogger) Debug(string, watermill.LogFields) {}
func (quietLogger) Trace(string, watermill.LogFields) {}
func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.fields.Add(fields)}
}
