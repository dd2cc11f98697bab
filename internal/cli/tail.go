package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"math/big"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config/kafkaopts"
	"github.com/ecst-io/ecst/schemas"
)

// tailLine is one record as `ecst tail` prints it.
type tailLine struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp time.Time         `json:"timestamp"`
	Key       string            `json:"key"`
	Headers   map[string]string `json:"headers"`
	SchemaID  int               `json:"schema_id,omitempty"`
	Value     any               `json:"value"`
	ValueHex  string            `json:"value_hex,omitempty"`
	Error     string            `json:"error,omitempty"`
}

func newTailCmd(a *app) *cobra.Command {
	var o tailOptions
	cmd := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Print a topic's records as JSON lines, values decoded with the registry",
		Long: `Prints one JSON object per record: topic, partition, offset, timestamp, key,
headers, schema_id and the value decoded with its registered schema (null for a
tombstone). A value that cannot be decoded is shown as value_hex with the
error, never a crash. Reads committed records only (read_committed).

By default it starts at the end and follows new records; on a terminal it
says so on standard error, as nothing shows until a record arrives.
--from-beginning starts at offset 0 and stops at the end (add --follow to keep
going); -n stops after N records; --key shows only one key.`,
		Example: `  ecst tail customers.state --from-beginning -n 10
  ecst tail customers.state --key cust-42 --from-beginning --follow`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.topic = args[0]
			return a.tail(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	cmd.Flags().BoolVar(&o.fromBeginning, "from-beginning", false, "start at offset 0 and stop at the end (unless --follow)")
	cmd.Flags().BoolVar(&o.follow, "follow", false, "keep following new records")
	cmd.Flags().StringVar(&o.key, "key", "", "show only this key")
	cmd.Flags().IntVarP(&o.n, "number", "n", 0, "stop after this many records")
	return cmd
}

// tailOptions are what `ecst tail` is asked to show.
type tailOptions struct {
	topic                 string
	fromBeginning, follow bool
	key                   string // "": every key
	n                     int    // 0: no limit
}

// tail prints o.topic's records on out, one JSON object each.
func (a *app) tail(ctx context.Context, out, errOut io.Writer, o tailOptions) error {
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	kopts, err := kafkaopts.Client(cfg.Kafka)
	if err != nil {
		return err
	}
	var reg *schemas.Registry
	if cfg.Registry.URL != "" {
		if reg, err = schemas.NewRegistry(cfg.Registry); err != nil {
			return err
		}
		defer reg.Close()
	}
	start := kgo.NewOffset().AtEnd()
	if o.fromBeginning {
		start = kgo.NewOffset().AtStart()
	}
	// Where "the end" is, when tail is to stop there.
	var ends map[int32]int64
	if o.fromBeginning && !o.follow {
		if ends, err = tailEnds(ctx, kopts, o.topic); err != nil {
			return err
		}
	}
	cl, err := kgo.NewClient(append(kopts, kgo.ConsumeTopics(o.topic), kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if !o.fromBeginning {
		sayFollowing(errOut, o.topic)
	}
	t := &tailer{reg: reg, o: o, ends: ends, enc: json.NewEncoder(out)}
	for !t.done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("read %s: %w", o.topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) { t.print(ctx, r) })
	}
	return nil
}

// tailEnds returns the end offsets of topic's non-empty partitions.
func tailEnds(ctx context.Context, kopts []kgo.Opt, topic string) (map[int32]int64, error) {
	admCl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, err
	}
	offs, err := kadm.NewClient(admCl).ListCommittedOffsets(ctx, topic)
	admCl.Close()
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	ends := map[int32]int64{}
	for p, o := range offs[topic] {
		if o.Offset > 0 {
			ends[p] = o.Offset
		}
	}
	return ends, nil
}

// tailer prints records until it has printed o.n, reached the ends (when
// it has some), or failed to write.
type tailer struct {
	reg     *schemas.Registry
	o       tailOptions
	ends    map[int32]int64 // partitions left to read to their end; nil: follow
	enc     *json.Encoder
	printed int
	stop    bool
}

func (t *tailer) done() bool { return t.stop || (t.ends != nil && len(t.ends) == 0) }

func (t *tailer) print(ctx context.Context, r *kgo.Record) {
	if t.stop {
		return
	}
	if t.ends != nil {
		if end, ok := t.ends[r.Partition]; ok && r.Offset+1 >= end {
			delete(t.ends, r.Partition)
		}
	}
	if r.Attrs.IsControl() || (t.o.key != "" && string(r.Key) != t.o.key) {
		return
	}
	if err := t.enc.Encode(decodeLine(ctx, t.reg, r)); err != nil {
		t.stop = true
		return
	}
	t.printed++
	if t.o.n > 0 && t.printed >= t.o.n {
		t.stop = true
	}
}

// sayFollowing tells a person at a terminal that tail follows from the end:
// it prints nothing until someone writes, which looks like a hang or an
// empty topic. Scripts, whose stderr is no terminal, get nothing.
func sayFollowing(w io.Writer, topic string) {
	if isTerminal(w) {
		fmt.Fprintf(w, "waiting for new records on %s; --from-beginning to read it all\n", topic)
	}
}

func decodeLine(ctx context.Context, reg *schemas.Registry, r *kgo.Record) tailLine {
	l := tailLine{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC(), Key: string(r.Key), Headers: map[string]string{}}
	for _, h := range r.Headers {
		l.Headers[h.Key] = string(h.Value)
	}
	if r.Value == nil {
		return l // a tombstone: "value": null
	}
	fail := func(err error) tailLine {
		l.Value, l.ValueHex, l.Error = nil, hex.EncodeToString(r.Value), err.Error()
		return l
	}
	id, payload, err := schemas.DecodeWire(r.Value)
	if err != nil {
		return fail(err)
	}
	l.SchemaID = id
	if reg == nil {
		return fail(errors.New("no schema registry configured (ECST_SCHEMA_REGISTRY_URL)"))
	}
	s, err := reg.SchemaByID(ctx, id)
	if err != nil {
		return fail(err)
	}
	v, err := schemas.DecodeAny(s, payload)
	if err != nil {
		return fail(err)
	}
	l.Value = jsonable(v)
	return l
}

// jsonable turns Avro values JSON cannot carry well into ones it can:
// decimals as strings, bytes and fixed as hex.
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = jsonable(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = jsonable(x)
		}
		return t
	case *big.Rat:
		return t.FloatString(10)
	case []byte:
		return hex.EncodeToString(t)
	case time.Duration:
		return t.String()
	}
	return v
}
