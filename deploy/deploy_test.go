package deploy_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/consumer"
	"github.com/ecst-io/ecst/relay"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/schemas"
	"github.com/ecst-io/ecst/verify"
)

// pending are metrics the dashboard and the rules use that are exported by
// work not merged yet, each with the work that will export it. Once a name
// is exported, the test says to remove it from this list.
var pending = map[string]string{}

// recorder is a registry that remembers what was registered with it, to
// describe every collector: a vector with no children yet is in no Gather.
type recorder struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// exported builds every metric ecst's code registers (the relay's, a
// consumer's, the verifier's, the republish runs' collector) and returns
// the series names a query may use: each metric's name, and for histograms
// and summaries the names of their parts.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	reg := &recorder{Registry: prometheus.NewRegistry()}
	relay.NewMetrics(reg)
	verify.NewMetrics(reg)
	// Described, not registered: it collects from the database. Its
	// metrics are gauges.
	reg.collectors = append(reg.collectors, republish.NewCollector(nil, nil))
	sr, err := schemas.NewRegistry(config.Registry{URL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	if _, err := consumer.New(consumer.Config[map[string]any]{Name: "c", Topic: "t", Registry: sr,
		Store: consumer.NewMemory[map[string]any](), Registerer: reg}); err != nil {
		t.Fatal(err)
	}

	names := map[string]bool{}
	descs := make(chan *prometheus.Desc, 100)
	go func() {
		for _, c := range reg.collectors {
			c.Describe(descs)
		}
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names[m[1]] = true
	}
	// The types of what Gather shows (every metric that is not a vector,
	// histograms included: the relay's and the consumer's are plain).
	mfs, err := reg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[mf.GetName()+"_bucket"] = true
			fallthrough
		case dto.MetricType_SUMMARY:
			names[mf.GetName()+"_sum"] = true
			names[mf.GetName()+"_count"] = true
		}
	}
	return names
}

var (
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlLabelSets = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlTokens    = regexp.MustCompile(`\d[\d.]*(?:[eE][+-]?\d+)?[a-zA-Z0-9]*|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`) // a number, a duration (5m), or a name
	promqlKeywords  = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "atan2"}
)

// metricNames returns the metric names a PromQL expression selects: every
// identifier outside strings, label matchers, ranges and label lists that
// is not a function or aggregation (followed by a parenthesis), a keyword,
// a number or a duration.
func metricNames(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, " ")
	e = promqlRanges.ReplaceAllString(e, " ")
	e = promqlLabelSets.ReplaceAllString(e, " ")
	var out []string
	for _, m := range promqlTokens.FindAllStringSubmatch(e, -1) {
		tok := m[0]
		if m[1] != "" || tok[0] >= '0' && tok[0] <= '9' || slices.Contains(promqlKeywords, strings.ToLower(tok)) {
			continue
		}
		out = append(out, tok)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (job, shard) (ecst_relay_leader) < 1 or absent(ecst_relay_leader)`:                                            {"ecst_relay_leader", "ecst_relay_leader"},
		`histogram_quantile(0.99, sum by (le) (rate(x_bucket{job=~"$job", le!="+Inf"}[$__rate_interval]))) > 1e3`:             {"x_bucket"},
		`time() - max by (entity) (a) > 3 * max by (entity) (b) or (c unless on (job, entity) d) and ignoring(x) e offset 5m`: {"a", "b", "c", "d", "e"},
		`{__name__="x"}`: nil,
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// rules is alerts.yml.
type rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTests is alerts_test.yml.
type ruleTests struct {
	Tests []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestDashboardAndRulesUseExportedMetrics: every metric the dashboard's
// queries, the rules and their unit tests name is one the code exports (or
// one listed as pending).
func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	have := exported(t)
	used := map[string][]string{} // metric → where

	var d dashboard
	if err := json.Unmarshal(readFile(t, "grafana/ecst.json"), &d); err != nil {
		t.Fatalf("grafana/ecst.json: %v", err)
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				for _, n := range metricNames(tg.Expr) {
					used[n] = append(used[n], "dashboard panel "+p.Title)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	var r rules
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts.yml"), &r); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			for _, n := range metricNames(rule.Expr) {
				used[n] = append(used[n], "alert "+rule.Alert)
			}
		}
	}
	var rt ruleTests
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts_test.yml"), &rt); err != nil {
		t.Fatalf("prometheus/alerts_test.yml: %v", err)
	}
	for _, tc := range rt.Tests {
		for _, s := range tc.InputSeries {
			n, _, _ := strings.Cut(s.Series, "{")
			used[n] = append(used[n], "alerts_test.yml: "+tc.Name)
		}
	}

	if len(used) < 20 {
		t.Fatalf("only %d metric names found in the dashboard and the rules: is metricNames still reading them?", len(used))
	}
	for n, where := range used {
		switch {
		case have[n] && pending[n] != "":
			t.Errorf("%s is exported now: remove it from pending", n)
		case !have[n] && pending[n] == "":
			t.Errorf("%s is not a metric ecst exports; used by %s", n, strings.Join(slices.Compact(slices.Sorted(slices.Values(where))), ", "))
		}
	}
	for n := range pending {
		if used[n] == nil {
			t.Errorf("pending %s is used nowhere: remove it from pending", n)
		}
	}
	for n := range have {
		if used[n] == nil && !have[n+"_bucket"] && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") {
			t.Logf("exported but on no panel nor alert: %s", n)
		}
	}
}

// TestDashboard: valid dashboard JSON, on a Prometheus data source chosen
// by a variable, in rows for the relay, the consumers and recovery.
func TestDashboard(t *testing.T) {
	var d dashboard
	if err := json.Unmarshal(readFile(t, "grafana/ecst.json"), &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q", d.Title, d.UID)
	}
	hasVar := slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query any    `json:"query"`
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasVar {
		t.Error("no datasource variable of type prometheus")
	}
	var rows []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not query the ${datasource} variable: %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("panel %q: a target without expr or refId", p.Title)
			}
		}
	}
	if !slices.Equal(rows, []string{"Relay", "Consumers", "Recovery"}) {
		t.Errorf("rows %v, want Relay, Consumers, Recovery", rows)
	}
}

// TestAlertsHaveRunbooksAndTests: each alert has a severity, a summary and
// a runbook_url naming a section of docs/operations.md, and alerts_test.yml
// makes it fire at least once and stay quiet at least once.
func TestAlertsHaveRunbooksAndTests(t *testing.T) {
	var r rules
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts.yml"), &r); err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(readFile(t, "../docs/operations.md")), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[slug(strings.TrimLeft(line, "# "))] = true
		}
	}
	var rt ruleTests
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts_test.yml"), &rt); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	const base = "https://github.com/ecst-io/ecst/blob/main/docs/operations.md#"
	n := 0
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			n++
			a := rule.Alert
			if rule.Labels["severity"] != "warning" && rule.Labels["severity"] != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", a, rule.Labels["severity"])
			}
			if rule.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", a)
			}
			u := rule.Annotations["runbook_url"]
			if anchor, ok := strings.CutPrefix(u, base); !ok || !anchors[anchor] || anchor != strings.ToLower(a) {
				t.Errorf("%s: runbook_url %q is not %s%s, a section of docs/operations.md", a, u, base, strings.ToLower(a))
			}
			if !fires[a] || !quiet[a] {
				t.Errorf("%s: alerts_test.yml has it firing %v, quiet %v; want both", a, fires[a], quiet[a])
			}
		}
	}
	if n < 7 {
		t.Fatalf("%d alerts", n)
	}
}

// slug is the anchor GitHub gives a Markdown heading.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
