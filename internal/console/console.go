// Package console is `ecst console`: a web page over the same snapshot
// `ecst status` prints (internal/status), server-rendered from templates
// embedded in the binary, readable on a phone. Its actions (verify now,
// republish keys or all, resume a run) change the system, so each needs
// the console's token and a confirmation step; without the token they are
// refused with 403. The token is a form field, never a cookie, so another
// site cannot make a browser act (no ambient credential to ride on).
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/status"
	"github.com/ecst-io/ecst/producer"
	"github.com/ecst-io/ecst/schemas"
)

//go:embed templates/*.html static/*
var files embed.FS

// Config is what the console serves and acts on.
type Config struct {
	// Status gathers the snapshot every page shows (required).
	Status status.Options
	// Token authorizes actions; "" refuses them all.
	Token string
	// Pool, Registry, Publisher and Kafka run the actions: verify needs the
	// pool, the registry and Kafka; republish the pool and the publisher.
	Pool      *pgxpool.Pool
	Registry  *schemas.Registry
	Publisher *producer.Publisher
	Kafka     []kgo.Opt
	// Logger hears of requests that failed and of actions (nil: none).
	Logger *slog.Logger
	// Metrics gets the console's metrics, and is what /metrics serves
	// (nil: a registry of the console's own metrics).
	Metrics *prometheus.Registry
}

// Server is the console.
type Server struct {
	cfg     Config
	log     *slog.Logger
	pages   map[string]*template.Template
	mux     *http.ServeMux
	actions *prometheus.CounterVec

	// background holds the actions under way; they stop with the server.
	background sync.WaitGroup
	inflight   atomic.Int32
	ctx        context.Context
	cancel     context.CancelFunc
}

// New builds the console.
func New(cfg Config) (*Server, error) {
	if cfg.Status.DB == nil || cfg.Status.Admin == nil || cfg.Status.Config == nil {
		return nil, errors.New("console: Config.Status needs DB, Admin and Config")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, mux: http.NewServeMux()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s.actions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ecst_console_actions_total",
		Help: "Actions asked of the console, by action and result (started, refused, failed, done).",
	}, []string{"action", "result"})
	reg.MustRegister(s.actions)
	if err := s.parse(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(files, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /{$}", s.page("overview", nil))
	s.mux.HandleFunc("GET /drift/{entity}", s.page("drift", s.driftData))
	s.mux.HandleFunc("GET /republish", s.page("republish", nil))
	s.mux.HandleFunc("GET /confirm/{action}", s.confirm)
	s.mux.HandleFunc("POST /actions/{action}", s.act)
	s.mux.HandleFunc("GET /api/status", s.apiStatus)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

// Serve serves on ln until ctx ends, then shuts down gracefully: requests
// in flight get up to 10 seconds, actions under way are cancelled (a
// republish run stops after its batch, and can be resumed) and waited for.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		s.Close()
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutCtx)
	s.Close()
	if err != nil {
		return fmt.Errorf("console: shut down: %w", err)
	}
	return nil
}

// Close cancels the actions under way and waits for them.
func (s *Server) Close() {
	s.cancel()
	s.background.Wait()
}

func (s *Server) parse() error {
	funcs := template.FuncMap{
		"age":     status.Age,
		"ago":     func(at, t time.Time) string { return status.Age(at.Sub(t)) },
		"seconds": func(sec status.Seconds) string { return status.Age(sec.Duration()) },
		"pct":     func(f float64) string { return strconv.FormatFloat(math.Round(f*1000)/10, 'f', -1, 64) },
		"lagPct": func(lag, end int64) float64 {
			if end <= 0 || lag <= 0 {
				return 0
			}
			return math.Max(float64(lag)/float64(end), 0.02)
		},
		"value": func(v any) string {
			if v == nil {
				return "null"
			}
			return fmt.Sprint(v)
		},
		"join": strings.Join,
		"dict": func(kv ...any) map[string]any {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		},
		"summary":  status.DriftSummary,
		"entities": func(s *status.Snapshot) []string { return names(s) },
	}
	base, err := template.New("base").Funcs(funcs).ParseFS(files, "templates/base.html")
	if err != nil {
		return fmt.Errorf("console: parse templates: %w", err)
	}
	s.pages = map[string]*template.Template{}
	for _, p := range []string{"overview", "drift", "republish", "confirm", "refused"} {
		t, err := template.Must(base.Clone()).ParseFS(files, "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("console: parse templates: %w", err)
		}
		s.pages[p] = t
	}
	return nil
}

func names(s *status.Snapshot) []string {
	out := make([]string, len(s.Entities))
	for i, e := range s.Entities {
		out[i] = e.Name
	}
	return out
}

// view is what a page template gets.
type view struct {
	Page    string
	Snap    *status.Snapshot
	Message string
	// Actions: a token is configured (the buttons lead somewhere).
	Actions bool
	Data    any
	// Refresh, in seconds, reloads the page while something runs (0: no).
	Refresh int
}

func (s *Server) gather(ctx context.Context) (*status.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return status.Gather(ctx, s.cfg.Status)
}

// page renders a page over a fresh snapshot; data, if set, adds the
// page's own data (an error is a 404: what the URL names is not there).
func (s *Server) page(name string, data func(*http.Request, *status.Snapshot) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		snap, err := s.gather(r.Context())
		if err != nil {
			s.log.Error("console: gather the status", "err", err)
			http.Error(w, "cannot read the system's state: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		v := view{Page: name, Snap: snap, Message: s.startedMessage(r.URL.Query()), Actions: s.cfg.Token != ""}
		if data != nil {
			if v.Data, err = data(r, snap); err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
		}
		// Live progress: reload while a run or an action is under way.
		for _, run := range snap.Republish {
			if run.State == "running" {
				v.Refresh = 2
			}
		}
		if s.inflight.Load() > 0 {
			v.Refresh = 2
		}
		s.render(w, http.StatusOK, name, v)
	}
}

// startedMessage says which action just started, from the redirect's
// query: built here from known words, so that a link cannot make the page
// say what it likes.
func (s *Server) startedMessage(q url.Values) string {
	action, entity := q.Get("started"), q.Get("entity")
	if _, err := s.entityConfig(entity); err != nil {
		return ""
	}
	switch action {
	case "verify", "republish", "resume":
		return fmt.Sprintf("Started: %s of %s. This page reloads while it runs.", action, entity)
	}
	return ""
}

func (s *Server) render(w http.ResponseWriter, code int, name string, v view) {
	var b strings.Builder
	if err := s.pages[name].ExecuteTemplate(&b, "base", v); err != nil {
		s.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (s *Server) driftData(r *http.Request, snap *status.Snapshot) (any, error) {
	e := snap.Entity(r.PathValue("entity"))
	if e == nil {
		return nil, fmt.Errorf("no entity %q in ecst.yaml", r.PathValue("entity"))
	}
	return e, nil
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	snap, err := s.gather(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(snap)
}

// TokenFromFile reads a token file: its first line, spaces trimmed.
func TokenFromFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the console token file: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", fmt.Errorf("the console token file %s is empty", path)
	}
	return tok, nil
}

func (s *Server) tokenOK(given string) bool {
	return s.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(given), []byte(s.cfg.Token)) == 1
}

// entityConfig is the named entity of ecst.yaml.
func (s *Server) entityConfig(name string) (*config.Entity, error) {
	return s.cfg.Status.Config.Entity(name)
}
