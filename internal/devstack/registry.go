package devstack

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// journal makes srfake durable. srfake keeps everything in memory, but the
// records in Kafka carry schema ids: after a restart on the same data
// directory, the registry must answer the same id for the same schema, or
// every record written before the restart stops decoding. So every request
// that changes the registry and succeeds is appended to a JSON-lines file,
// and on start the file is replayed through a fresh srfake, in order,
// checking that each registration gets the id it got the first time.
//
// Replaying requests rather than snapshotting state keeps us off srfake's
// internals: whatever a request did (register, delete, set compatibility or
// mode), replaying it does again, and srfake assigns ids deterministically
// (the next unused id, or the id of an identical schema).
type journal struct {
	reg *srfake.Registry
	log *slog.Logger

	persist bool       // false: in memory only
	mu      sync.Mutex // serializes mutations with their journal append, so the file's order is the registry's
	f       *os.File
}

// entry is one journal line.
type entry struct {
	Method   string `json:"method"`
	URI      string `json:"uri"`
	Body     string `json:"body,omitempty"`
	Status   int    `json:"status"`
	Response string `json:"response,omitempty"`
}

// openJournal builds the registry, replays path (when not empty) into it and
// keeps path open for appending.
func openJournal(path string, log *slog.Logger) (*journal, error) {
	j := &journal{reg: srfake.NewRegistry(), log: log}
	if path == "" {
		return j, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open registry journal: %w", err)
	}
	n, valid, err := j.replay(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("registry journal %s: %w", path, err)
	}
	// A torn last line (the process died mid-write) is dropped: the client
	// that sent that request never got its answer.
	if err := f.Truncate(valid); err != nil {
		f.Close()
		return nil, fmt.Errorf("registry journal %s: %w", path, err)
	}
	if _, err := f.Seek(valid, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	j.f = f
	j.persist = true
	if n > 0 {
		log.Info("schema registry restored", "replayed", n, "journal", path)
	}
	return j, nil
}

func (j *journal) replay(r io.Reader) (n int, valid int64, err error) {
	br := bufio.NewReader(r)
	for {
		line, rerr := br.ReadBytes('\n')
		if rerr == io.EOF {
			return n, valid, nil // a partial line without its newline is torn
		}
		if rerr != nil {
			return n, valid, rerr
		}
		var e entry
		if err := json.Unmarshal(line, &e); err != nil {
			return n, valid, fmt.Errorf("line %d: %w", n+1, err)
		}
		req := httptest.NewRequest(e.Method, e.URI, strings.NewReader(e.Body))
		req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		rec := httptest.NewRecorder()
		j.reg.Handler().ServeHTTP(rec, req)
		if err := sameOutcome(e, rec.Code, rec.Body.Bytes()); err != nil {
			return n, valid, fmt.Errorf("line %d (%s %s): %w; the registry can no longer give records their schemas back: remove the data directory to start afresh", n+1, e.Method, e.URI, err)
		}
		n++
		valid += int64(len(line))
	}
}

// sameOutcome checks a replayed request against the recorded one: it must
// succeed again, and a registration must get the same schema id.
func sameOutcome(e entry, status int, body []byte) error {
	if status/100 != 2 {
		return fmt.Errorf("replay answered HTTP %d (%s), recorded %d", status, bytes.TrimSpace(body), e.Status)
	}
	var was, now struct {
		ID *int `json:"id"`
	}
	if json.Unmarshal([]byte(e.Response), &was) != nil || was.ID == nil {
		return nil
	}
	if json.Unmarshal(body, &now) != nil || now.ID == nil || *now.ID != *was.ID {
		return fmt.Errorf("replay gave %s, recorded schema id %d", bytes.TrimSpace(body), *was.ID)
	}
	return nil
}

// mutates reports whether a request can change the registry. Lookups by
// content (POST /subjects/S) and compatibility checks are POSTs that do
// not; producers send them on every start, so they are kept out of the
// journal.
func mutates(r *http.Request) bool {
	switch r.Method {
	case http.MethodPut, http.MethodDelete:
		return true
	case http.MethodPost:
		p := strings.TrimSuffix(r.URL.Path, "/")
		return strings.HasSuffix(p, "/versions") && !strings.Contains(p, "/compatibility/")
	}
	return false
}

// ServeHTTP serves the registry, journaling successful mutations.
func (j *journal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !j.persist || !mutates(r) {
		j.reg.Handler().ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	if err != nil {
		http.Error(w, `{"error_code":413,"message":"request body too large"}`, http.StatusRequestEntityTooLarge)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()

	j.mu.Lock()
	j.reg.Handler().ServeHTTP(rec, r)
	if rec.Code/100 == 2 {
		err = j.append(entry{Method: r.Method, URI: r.URL.RequestURI(), Body: string(body), Status: rec.Code, Response: rec.Body.String()})
	}
	j.mu.Unlock()

	if err != nil {
		// The change is in memory but would not survive a restart: tell
		// the client it failed rather than hand out an id we may lose.
		j.log.Error("schema registry: write journal", "err", err)
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(map[string]any{"error_code": 50001, "message": "ecst dev: could not persist the change: " + err.Error()})
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (j *journal) append(e entry) error {
	if j.f == nil {
		return errors.New("registry is closed")
	}
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := j.f.Write(append(line, '\n')); err != nil {
		return err
	}
	// Registrations are rare and an id handed out must not be lost.
	return j.f.Sync()
}

func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
