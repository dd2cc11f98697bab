// Package topicscan reads a topic from given offsets (the beginning by
// default) up to its last stable offsets at the time of the call, with
// read_committed isolation: the state a replaying consumer would reach.
// Republish uses it to find orphans, verify to compare the topic.
package topicscan

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Ends lists the topic's last stable offsets: where a read_committed scan
// started now stops.
func Ends(ctx context.Context, opts []kgo.Opt, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("topic %s: %w (create it with `ecst topics apply`)", topic, err)
		}
		return nil, fmt.Errorf("list the end offsets of %s: %w", topic, err)
	}
	ends := map[int32]int64{}
	for p, o := range offs[topic] {
		ends[p] = o.Offset
	}
	return ends, nil
}

// Scan calls fn for every committed data record of topic from starts (nil:
// every partition from 0) up to the last stable offsets listed at the
// call, partition by partition in offset order, and returns those ends.
func Scan(ctx context.Context, opts []kgo.Opt, topic string, starts map[int32]int64, fn func(*kgo.Record) error) (map[int32]int64, error) {
	ends, err := Ends(ctx, opts, topic)
	if err != nil {
		return nil, err
	}
	return ends, ScanTo(ctx, opts, topic, starts, ends, fn)
}

// ScanTo is Scan up to the given ends.
func ScanTo(ctx context.Context, opts []kgo.Opt, topic string, starts, ends map[int32]int64, fn func(*kgo.Record) error) error {
	from := map[int32]kgo.Offset{}
	pending := map[int32]int64{}
	for p, end := range ends {
		start := starts[p]
		if start < end {
			from[p] = kgo.NewOffset().At(start)
			pending[p] = end
		}
	}
	if len(pending) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers take offsets; keeping them lets the scan see
		// that it reached an end that is a marker.
		kgo.KeepControlRecords(),
		kgo.FetchMaxBytes(64<<20),
	)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	for len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("read %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		var cbErr error
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := pending[r.Partition]
			if !ok || r.Offset >= end || cbErr != nil {
				return
			}
			if r.Offset+1 >= end {
				delete(pending, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			cbErr = fn(r)
		})
		if cbErr != nil {
			return cbErr
		}
		// The last offsets below end may hold no record at all: compaction
		// removes records (and, after delete.retention.ms, transaction
		// markers) from cleaned segments, so on an idle topic the tail
		// below end can be gone. A fetch that returns nothing for a pending
		// partition whose stable end is past end means nothing is left to
		// read there.
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if end, ok := pending[p.Partition]; ok && len(p.Records) == 0 && p.Err == nil && p.LastStableOffset >= end && p.HighWatermark >= end {
				delete(pending, p.Partition)
			}
		})
	}
	return nil
}

// Fetch reads the record at partition/offset.
func Fetch(ctx context.Context, opts []kgo.Opt, topic string, partition int32, offset int64) (*kgo.Record, error) {
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(offset)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return nil, fmt.Errorf("read %s/%d@%d: %w", topic, partition, offset, errs[0].Err)
		}
		for it := fs.RecordIter(); !it.Done(); {
			if r := it.Next(); r.Offset == offset {
				return r, nil
			} else if r.Offset > offset {
				return nil, fmt.Errorf("record %s/%d@%d is gone (compacted)", topic, partition, offset)
			}
		}
	}
}
