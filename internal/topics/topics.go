// Package topics creates the entities' compacted topics and finds drift
// between what ecst.yaml wants and what the cluster has.
package topics

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/ecst-io/ecst/config"
)

// Change is one difference between ecst.yaml and the cluster.
type Change struct {
	Topic   string
	Setting string // "(topic)" for a topic to create, "partitions", or a config key
	Want    string
	Have    string // "" when unset or missing
	// Refused is the reason a change cannot be applied, if so.
	Refused string
}

// Create reports a topic that does not exist yet.
func (c Change) Create() bool { return c.Setting == "(topic)" }

// Plan compares every entity's topic with the cluster.
func Plan(ctx context.Context, adm *kadm.Client, entities []*config.Entity) ([]Change, error) {
	names := make([]string, len(entities))
	for i, e := range entities {
		names[i] = e.Topic
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var existing []string
	var changes []Change
	for _, e := range entities {
		d, ok := details[e.Topic]
		if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			changes = append(changes, Change{Topic: e.Topic, Setting: "(topic)", Want: fmt.Sprintf("%d partitions, compacted", e.Partitions)})
			continue
		}
		if d.Err != nil {
			return nil, fmt.Errorf("describe topic %s: %w", e.Topic, d.Err)
		}
		existing = append(existing, e.Topic)
		if have := len(d.Partitions); have != e.Partitions {
			changes = append(changes, Change{
				Topic: e.Topic, Setting: "partitions", Want: fmt.Sprint(e.Partitions), Have: fmt.Sprint(have),
				Refused: "changing the partition count moves keys to other partitions and breaks per-key order; keep the count, or create a new topic and republish into it",
			})
		}
	}
	if len(existing) == 0 {
		return changes, nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	byTopic := map[string]map[string]string{}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe configs of %s: %w", rc.Name, rc.Err)
		}
		m := map[string]string{}
		for _, c := range rc.Configs {
			if c.Value != nil {
				m[c.Key] = *c.Value
			}
		}
		byTopic[rc.Name] = m
	}
	for _, e := range entities {
		have, ok := byTopic[e.Topic]
		if !ok {
			continue
		}
		want := e.WantTopicConfig()
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if have[k] != want[k] {
				changes = append(changes, Change{Topic: e.Topic, Setting: k, Want: want[k], Have: have[k]})
			}
		}
	}
	return changes, nil
}

// Create creates the topics that Plan found missing.
func Create(ctx context.Context, adm *kadm.Client, e *config.Entity) error {
	cfgs := map[string]*string{}
	for k, v := range e.WantTopicConfig() {
		cfgs[k] = &v
	}
	rf := int16(e.ReplicationFactor)                                          //nolint:gosec // validated small
	resp, err := adm.CreateTopic(ctx, int32(e.Partitions), rf, cfgs, e.Topic) //nolint:gosec // validated small
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", e.Topic, err)
	}
	return nil
}

// Fix aligns the configs of drifted topics (never the partition count).
func Fix(ctx context.Context, adm *kadm.Client, changes []Change) error {
	byTopic := map[string][]kadm.AlterConfig{}
	for _, c := range changes {
		if c.Create() || c.Refused != "" {
			continue
		}
		v := c.Want
		byTopic[c.Topic] = append(byTopic[c.Topic], kadm.AlterConfig{Op: kadm.SetConfig, Name: c.Setting, Value: &v})
	}
	for topic, alters := range byTopic {
		resps, err := adm.AlterTopicConfigs(ctx, alters, topic)
		if err != nil {
			return fmt.Errorf("alter configs of %s: %w", topic, err)
		}
		for _, r := range resps {
			if r.Err != nil {
				return fmt.Errorf("alter configs of %s: %w %s", r.Name, r.Err, r.ErrMessage)
			}
		}
	}
	return nil
}
