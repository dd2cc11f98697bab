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
	var fromBeginning, follow bool
	var key string
	var n int
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
			topic := args[0]
			ctx := cmd.Context()
			start := kgo.NewOffset().AtEnd()
			if fromBeginning {
				start = kgo.NewOffset().AtStart()
			}
			// Where "the end" is, when tail is to stop there.
			var ends map[int32]int64
			if fromBeginning && !follow {
				admCl, err := kgo.NewClient(kopts...)
				if err != nil {
					return err
				}
				offs, err := kadm.NewClient(admCl).ListCommittedOffsets(ctx, topic)
				admCl.Close()
				if err == nil {
					err = offs.Error()
				}
				if err != nil {
					return fmt.Errorf("topic %s: %w", topic, err)
				}
				ends = map[int32]int64{}
				for p, o := range offs[topic] {
					if o.Offset > 0 {
						ends[p] = o.Offset
					}
				}
			}
			cl, err := kgo.NewClient(append(kopts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(start),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
			if err != nil {
				return err
			}
			defer cl.Close()
			if !fromBeginning {
				sayFollowing(cmd.ErrOrStderr(), topic)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			printed := 0
			for {
				if ends != nil && len(ends) == 0 {
					return nil
				}
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					return nil
				}
				if err := fs.Err0(); err != nil {
					return fmt.Errorf("read %s: %w", topic, err)
				}
				var stop bool
				fs.EachRecord(func(r *kgo.Record) {
					if stop {
						return
					}
					if ends != nil {
						if end, ok := ends[r.Partition]; ok && r.Offset+1 >= end {
							delete(ends, r.Partition)
						}
					}
					if r.Attrs.IsControl() || (key != "" && string(r.Key) != key) {
						return
					}
					if err := enc.Encode(decodeLine(ctx, reg, r)); err != nil {
						stop = true
						return
					}
					printed++
					if n > 0 && printed >= n {
						stop = true
					}
				})
				if stop {
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&fromBeginning, "from-beginning", false, "start at offset 0 and stop at the end (unless --follow)")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep following new records")
	cmd.Flags().StringVar(&key, "key", "", "show only this key")
	cmd.Flags().IntVarP(&n, "number", "n", 0, "stop after this many records")
	return cmd
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
