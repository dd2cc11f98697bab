package composecheck

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ecst-io/ecst/config"
)

// repoRoot is the directory that holds docker-compose.yml and Dockerfile.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// composeCommand finds docker-compose (Debian's package, which resolves a
// file without a daemon), or else the docker compose plugin.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("docker"); err == nil && exec.Command(p, "compose", "version").Run() == nil {
		return []string{p, "compose"}
	}
	t.Fatal("docker-compose is not installed: run `make setup-compose` (Debian's docker-compose package; it needs no Docker daemon)")
	return nil
}

// testPassword stands in for POSTGRES_PASSWORD, to follow where it goes.
const testPassword = "composecheck-pw-3f9a"

type service struct {
	Image       string
	Build       *struct{ Context, Target string }
	Command     []string
	Entrypoint  []string
	Environment map[string]string
	DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
	Healthcheck *struct {
		Test    []string
		Disable bool
	}
	Restart string
	Ports   []port
	Volumes []volume
}

// volume is a mount in either output: "source:target[:mode]" or the long
// mapping.
type volume struct{ Source, Target string }

func (v *volume) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		parts := strings.Split(n.Value, ":")
		if len(parts) >= 2 {
			v.Source, v.Target = parts[0], parts[1]
		} else {
			v.Target = parts[0]
		}
		return nil
	}
	var m struct{ Source, Target string }
	if err := n.Decode(&m); err != nil {
		return err
	}
	v.Source, v.Target = m.Source, m.Target
	return nil
}

// port is a published port in either of docker-compose's outputs: the
// short string (1.x) or the long mapping (2.x).
type port struct{ HostIP, Published, Target string }

func (p *port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s := strings.TrimSuffix(n.Value, "/tcp")
		parts := strings.Split(s, ":")
		switch len(parts) {
		case 3:
			p.HostIP, p.Published, p.Target = parts[0], parts[1], parts[2]
		case 2:
			p.Published, p.Target = parts[0], parts[1]
		default:
			p.Target = parts[0]
		}
		return nil
	}
	var m struct {
		HostIP    string `yaml:"host_ip"`
		Published any
		Target    any
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	p.HostIP, p.Published, p.Target = m.HostIP, fmt.Sprint(m.Published), fmt.Sprint(m.Target)
	return nil
}

// load resolves docker-compose.yml with docker-compose itself.
func load(t *testing.T) map[string]*service {
	t.Helper()
	root := repoRoot(t)
	argv := append(composeCommand(t), "-f", filepath.Join(root, "docker-compose.yml"), "config")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = root
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "POSTGRES_PASSWORD=") })
	cmd.Env = append(env, "POSTGRES_PASSWORD="+testPassword)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, stderr.String())
	}
	var doc struct{ Services map[string]*service }
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("docker-compose config printed YAML that does not parse: %v\n%s", err, out)
	}
	if len(doc.Services) == 0 {
		t.Fatalf("docker-compose config printed no services:\n%s", out)
	}
	return doc.Services
}

// dockerfileTargets lists the Dockerfile's named stages.
func dockerfileTargets(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`(?i)^FROM\s+\S+\s+AS\s+(\S+)\s*$`)
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			names = append(names, m[1])
		}
	}
	return names
}

// oneShot: a job that runs to completion, that others wait for.
func oneShot(name string, svcs map[string]*service) bool {
	if svcs[name].Restart != "no" {
		return false
	}
	for _, s := range svcs {
		if d, ok := s.DependsOn[name]; ok && d.Condition == "service_completed_successfully" {
			return true
		}
	}
	return false
}

func (s *service) healthy() bool {
	return s.Healthcheck != nil && !s.Healthcheck.Disable && len(s.Healthcheck.Test) > 1 && s.Healthcheck.Test[0] != "NONE"
}

// fromRepo: the service runs an image built from this repository.
func (s *service) fromRepo(root string) bool {
	if s.Build == nil {
		return false
	}
	abs, _ := filepath.Abs(root)
	return filepath.Clean(s.Build.Context) == abs || filepath.Clean(s.Build.Context) == "."
}

// flag returns the value of --name in args.
func flag(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// healthPort is the port of the URL a health check fetches.
func healthPort(s *service) string {
	if s.Healthcheck == nil {
		return ""
	}
	for _, a := range s.Healthcheck.Test {
		if u, err := url.Parse(a); err == nil && u.Scheme == "http" {
			return u.Port()
		}
	}
	return ""
}

func addrPort(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return p
}

// TestEveryServiceIsHealthCheckedOrOneShot: compose waits on health or on
// completion, never on a container merely having started, so every service
// must offer one of them; and every wait names a condition its target can
// meet.
func TestEveryServiceIsHealthCheckedOrOneShot(t *testing.T) {
	svcs := load(t)
	for name, s := range svcs {
		switch {
		case oneShot(name, svcs):
			if s.Healthcheck != nil && !s.Healthcheck.Disable {
				t.Errorf("%s: a one-shot job with a health check (it exits; nothing can wait on its health)", name)
			}
		case !s.healthy():
			t.Errorf("%s: neither health-checked nor a one-shot job that another service waits for (restart: \"no\" and a service_completed_successfully dependency)", name)
		case s.Restart != "unless-stopped" && s.Restart != "always" && s.Restart != "on-failure":
			t.Errorf("%s: a long-running service with restart %q; use unless-stopped", name, s.Restart)
		}
		for dep, d := range s.DependsOn {
			target, ok := svcs[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on %s, which is not a service", name, dep)
			case d.Condition == "service_healthy" && !target.healthy():
				t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, dep, dep)
			case d.Condition == "service_completed_successfully" && target.Restart != "no":
				t.Errorf("%s waits for %s to complete, but %s restarts (restart %q)", name, dep, dep, target.Restart)
			case d.Condition != "service_healthy" && d.Condition != "service_completed_successfully":
				t.Errorf("%s depends on %s with condition %q: wait for service_healthy or service_completed_successfully", name, dep, d.Condition)
			}
		}
	}
}

// TestSetupJobsGateTheServices: the relay starts only after the ecst
// schema and the topics exist; the producer only after the schema is
// registered (it never registers one itself); the consumer after the
// topic exists.
func TestSetupJobsGateTheServices(t *testing.T) {
	svcs := load(t)
	jobs := map[string]string{"migrate": "migrate", "topics": "topics apply", "schema-register": "schema register", "relay": "relay"}
	for name, sub := range jobs {
		s, ok := svcs[name]
		if !ok {
			t.Errorf("no %s service", name)
			continue
		}
		if got := strings.Join(s.Command, " "); !strings.HasSuffix(got, " "+sub) {
			t.Errorf("%s runs `ecst %s`, want `ecst ... %s`", name, got, sub)
		}
	}
	waits := map[string][]string{
		"relay":         {"migrate", "topics"},
		"customers-api": {"migrate", "schema-register"},
		"billing":       {"topics"},
	}
	for name, deps := range waits {
		s, ok := svcs[name]
		if !ok {
			t.Errorf("no %s service", name)
			continue
		}
		for _, dep := range deps {
			if s.DependsOn[dep].Condition != "service_completed_successfully" {
				t.Errorf("%s must wait for %s to complete (condition: service_completed_successfully)", name, dep)
			}
		}
	}
	if s := svcs["relay"]; s != nil {
		addr := s.Environment["ECST_METRICS_ADDR"]
		if addr == "" {
			addr = config.DefaultMetricsAddr
		}
		if hp := healthPort(s); hp != addrPort(addr) || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "/healthz") {
			t.Errorf("relay: the health check fetches port %q, the relay serves /healthz on %s", hp, addr)
		}
	}
}

// TestImagesAndBuilds: third-party images are pinned; images built here
// name a Dockerfile target that exists and mount the example's config
// where their --config points.
func TestImagesAndBuilds(t *testing.T) {
	svcs := load(t)
	root := repoRoot(t)
	targets := dockerfileTargets(t)
	pinned := regexp.MustCompile(`^[^@]+:[A-Za-z0-9._-]*[0-9][A-Za-z0-9._-]*$`)
	for name, s := range svcs {
		if !s.fromRepo(root) {
			last := s.Image[strings.LastIndex(s.Image, "/")+1:]
			if !pinned.MatchString(last) || strings.HasSuffix(last, ":latest") {
				t.Errorf("%s: image %q is not pinned to a version tag", name, s.Image)
			}
			continue
		}
		if !slices.Contains(targets, s.Build.Target) {
			t.Errorf("%s: build target %q is not a stage of the Dockerfile (stages: %s)", name, s.Build.Target, strings.Join(targets, ", "))
		}
		cfg, ok := flag(s.Command, "config")
		if !ok {
			t.Errorf("%s: no --config in its command", name)
			continue
		}
		want := filepath.Join(root, "examples", "customers")
		wantAbs, _ := filepath.Abs(want)
		mounted := false
		for _, v := range s.Volumes {
			if filepath.Clean(v.Source) == wantAbs && v.Target == filepath.Dir(cfg) {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: --config %s, but examples/customers is not mounted at %s (volumes %v)", name, cfg, filepath.Dir(cfg), s.Volumes)
		}
		if _, err := os.Stat(filepath.Join(want, filepath.Base(cfg))); err != nil {
			t.Errorf("%s: --config %s: %v", name, cfg, err)
		}
	}
}

// TestPortsAndAddresses: host ports bind to loopback; each service listens
// where its health check and its published port say; the ECST_* addresses
// point at listeners that exist.
func TestPortsAndAddresses(t *testing.T) {
	svcs := load(t)
	for name, s := range svcs {
		for _, p := range s.Ports {
			if p.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %s is published on %q; bind it to 127.0.0.1", name, p.Target, p.HostIP)
			}
		}
		addr, ok := flag(s.Command, "addr")
		if !ok {
			continue
		}
		if hp := healthPort(s); hp != addrPort(addr) {
			t.Errorf("%s: listens on %s, its health check fetches port %q", name, addr, hp)
		}
		if len(s.Ports) > 0 && s.Ports[0].Target != addrPort(addr) {
			t.Errorf("%s: listens on %s, publishes container port %s", name, addr, s.Ports[0].Target)
		}
	}

	kafka, registry := svcs["kafka"], svcs["schema-registry"]
	if kafka == nil || registry == nil {
		t.Fatal("no kafka or schema-registry service")
	}
	advertised := strings.Split(kafka.Environment["KAFKA_ADVERTISED_LISTENERS"], ",")
	for name, s := range svcs {
		if b, ok := s.Environment["ECST_BROKERS"]; ok {
			for _, seed := range strings.Split(b, ",") {
				if !slices.ContainsFunc(advertised, func(l string) bool { return strings.HasSuffix(l, "://"+seed) }) {
					t.Errorf("%s: ECST_BROKERS seed %s is not an advertised listener of kafka (%v)", name, seed, advertised)
				}
			}
		}
		if r, ok := s.Environment["ECST_SCHEMA_REGISTRY_URL"]; ok {
			u, err := url.Parse(r)
			if err != nil || u.Hostname() != "schema-registry" || !strings.HasSuffix(registry.Environment["SCHEMA_REGISTRY_LISTENERS"], ":"+u.Port()) {
				t.Errorf("%s: ECST_SCHEMA_REGISTRY_URL %s is not where schema-registry listens (%s)", name, r, registry.Environment["SCHEMA_REGISTRY_LISTENERS"])
			}
		}
		if d, ok := s.Environment["ECST_DATABASE_URL"]; ok {
			u, err := url.Parse(d)
			if err != nil || u.Hostname() != "postgres" || u.Port() != "5432" || u.User.Username() != svcs["postgres"].Environment["POSTGRES_USER"] ||
				strings.TrimPrefix(u.Path, "/") != svcs["postgres"].Environment["POSTGRES_DB"] {
				t.Errorf("%s: ECST_DATABASE_URL %s is not the postgres service's database and user", name, config.RedactURL(d))
			}
		}
	}
}

// TestSecretsAndSettings: the database password reaches the services only
// through ECST_DATABASE_URL (never a command-line flag, which any process
// list shows); the services built here read only ECST_* variables that
// ecst knows.
func TestSecretsAndSettings(t *testing.T) {
	svcs := load(t)
	root := repoRoot(t)
	known := map[string]bool{}
	for _, o := range config.Overrides {
		known[o.Env] = true
	}
	for name, s := range svcs {
		for _, a := range append(slices.Clone(s.Entrypoint), s.Command...) {
			if strings.Contains(a, testPassword) || strings.Contains(strings.ToLower(a), "password") {
				t.Errorf("%s: a command-line argument carries a password: use the environment", name)
			}
		}
		if s.Healthcheck != nil && strings.Contains(strings.Join(s.Healthcheck.Test, " "), testPassword) {
			t.Errorf("%s: the health check carries the password", name)
		}
		for k, v := range s.Environment {
			if strings.Contains(v, testPassword) && k != "ECST_DATABASE_URL" && !(name == "postgres" && k == "POSTGRES_PASSWORD") {
				t.Errorf("%s: %s carries the database password", name, k)
			}
		}
		if !s.fromRepo(root) {
			continue
		}
		for k := range s.Environment {
			if !known[k] {
				t.Errorf("%s: %s is not a variable ecst reads (config.Overrides)", name, k)
			}
		}
	}
	if u := svcs["postgres"].Environment["POSTGRES_PASSWORD"]; u != testPassword {
		t.Errorf("postgres: POSTGRES_PASSWORD does not come from the environment (got %q)", u)
	}
	for _, name := range []string{"migrate", "relay", "customers-api"} {
		if u, err := url.Parse(svcs[name].Environment["ECST_DATABASE_URL"]); err != nil || func() string { p, _ := u.User.Password(); return p }() != testPassword {
			t.Errorf("%s: ECST_DATABASE_URL does not carry POSTGRES_PASSWORD from the environment", name)
		}
	}
}
