// Package web is the plumbing the customers example's two services share:
// their start (settings, listener), JSON replies, request logs, and a
// server that shuts down gracefully when its context ends.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ecst-io/ecst/config"
)

// Config is a service's settings: the ecst.yaml at path ("" for
// ./ecst.yaml) with the ECST_* variables env supplies, defaults filled and
// all checked, and the entity named that it works on.
func Config(path string, env func(string) string, entity string) (*config.Config, *config.Entity, error) {
	cfg, err := config.Load(path, env)
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.Finish(); err != nil {
		return nil, nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	e, err := cfg.Entity(entity)
	if err != nil {
		return nil, nil, err
	}
	return cfg, e, nil
}

// Listen is ln if it is set, else a new listener on addr.
func Listen(ln net.Listener, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// ShutdownGrace bounds how long a stopping server waits for requests in
// flight.
const ShutdownGrace = 10 * time.Second

// Serve serves h on ln until ctx ends, then stops accepting connections and
// waits (up to ShutdownGrace) for the requests in flight. It returns nil
// after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight", "grace", ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// JSON writes v as the response body with the given status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrorBody is the body of every error reply.
type ErrorBody struct {
	Error string `json:"error"`
	// Field names the offending request field, for validation errors.
	Field string `json:"field,omitempty"`
}

// Error writes {"error": msg} with the given status.
func Error(w http.ResponseWriter, status int, msg string) {
	JSON(w, status, ErrorBody{Error: msg})
}

// Log logs one line per request: method, path, status and duration. It
// logs neither bodies nor query strings, which may carry personal data.
func Log(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		lvl := slog.LevelInfo
		if rec.status >= 500 {
			lvl = slog.LevelError
		}
		log.LogAttrs(r.Context(), lvl, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Duration("took", time.Since(start)))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Logger returns the services' logger: JSON lines on w at level (debug,
// info, warn or error; info when it does not parse).
func Logger(w io.Writer, level string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
}
