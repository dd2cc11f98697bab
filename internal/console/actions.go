package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/verify"
)

// request is an action as the confirmation page states it and its form
// posts it.
type request struct {
	Action string // verify, republish or resume
	Entity string
	Mirror string   // verify: a mirror table to compare too
	Keys   []string // republish: these keys...
	All    bool     // ... or every key
	Run    int64    // resume: the run
}

// Summary says what the action will do, for the confirmation page.
func (q request) Summary() string {
	switch q.Action {
	case "verify":
		s := "Verify " + q.Entity + " now: compare its source with its topic"
		if q.Mirror != "" {
			s += " and mirror " + q.Mirror
		}
		return s + ", and record what it finds."
	case "republish":
		if q.All {
			return "Republish every key of " + q.Entity + ": write each key's current state from the source into the outbox, for the relay to publish."
		}
		return fmt.Sprintf("Republish %d key(s) of %s (%s): write their current state from the source into the outbox.", len(q.Keys), q.Entity, strings.Join(q.Keys, ", "))
	case "resume":
		return fmt.Sprintf("Resume republish run %d of %s after the last batch it wrote.", q.Run, q.Entity)
	}
	return ""
}

// Fields are the form fields that carry the request.
func (q request) Fields() url.Values {
	v := url.Values{"entity": {q.Entity}}
	if q.Mirror != "" {
		v.Set("mirror", q.Mirror)
	}
	if len(q.Keys) > 0 {
		v.Set("keys", strings.Join(q.Keys, "\n"))
	}
	if q.All {
		v.Set("all", "1")
	}
	if q.Run != 0 {
		v.Set("run", strconv.FormatInt(q.Run, 10))
	}
	return v
}

// parseRequest reads an action's request from a query or a form.
func (s *Server) parseRequest(action string, v url.Values) (request, error) {
	q := request{Action: action, Entity: v.Get("entity"), Mirror: strings.TrimSpace(v.Get("mirror")), All: v.Get("all") == "1"}
	if _, err := s.entityConfig(q.Entity); err != nil {
		return q, err
	}
	for _, k := range strings.FieldsFunc(v.Get("keys"), func(r rune) bool { return r == '\n' || r == '\r' || r == ',' }) {
		if k = strings.TrimSpace(k); k != "" {
			q.Keys = append(q.Keys, k)
		}
	}
	switch action {
	case "verify":
	case "republish":
		if q.All == (len(q.Keys) > 0) {
			return q, errors.New("republish: give keys (one per line), or choose every key, not both")
		}
	case "resume":
		var err error
		if q.Run, err = strconv.ParseInt(v.Get("run"), 10, 64); err != nil || q.Run <= 0 {
			return q, fmt.Errorf("resume: run %q is not a run id", v.Get("run"))
		}
	default:
		return q, fmt.Errorf("no action %q: verify, republish or resume", action)
	}
	return q, nil
}

// confirm is the confirmation step: what the action will do, and a form
// that posts it with the token.
func (s *Server) confirm(w http.ResponseWriter, r *http.Request) {
	q, err := s.parseRequest(r.PathValue("action"), r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	snap, err := s.gather(r.Context())
	if err != nil {
		http.Error(w, "cannot read the system's state: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	s.render(w, http.StatusOK, "confirm", view{Page: "confirm", Snap: snap, Actions: s.cfg.Token != "", Data: q})
}

// act runs a confirmed action with a valid token, in the background: the
// response redirects at once to the page that shows its progress.
func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !s.tokenOK(r.PostForm.Get("token")) {
		s.actions.WithLabelValues(action, "refused").Inc()
		// The token given is never logged, whatever it is.
		s.log.Warn("console: action refused: no valid token", "action", action, "remote", r.RemoteAddr)
		msg := "This action needs the console's token, and the one given is missing or wrong."
		if s.cfg.Token == "" {
			msg = "Actions are off: this console was started without a token. Start it with ECST_CONSOLE_TOKEN set, or --token-file naming a file that holds one."
		}
		snap, err := s.gather(r.Context())
		if err != nil {
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		s.render(w, http.StatusForbidden, "refused", view{Page: "refused", Snap: snap, Message: msg})
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		http.Error(w, "not confirmed: actions are posted from their confirmation page", http.StatusBadRequest)
		return
	}
	q, err := s.parseRequest(action, r.PostForm)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.actions.WithLabelValues(action, "started").Inc()
	s.log.Info("console: action started", "action", action, "entity", q.Entity, "keys", len(q.Keys), "all", q.All, "run", q.Run)
	s.background.Add(1)
	s.inflight.Add(1)
	go func() {
		defer s.background.Done()
		defer s.inflight.Add(-1)
		s.run(s.ctx, q)
	}()
	next := "/republish"
	if action == "verify" {
		next = "/drift/" + url.PathEscape(q.Entity)
	}
	http.Redirect(w, r, next+"?"+url.Values{"started": {action}, "entity": {q.Entity}}.Encode(), http.StatusSeeOther)
}

// run does the action; what it found is recorded where the pages read it
// (ecst.verify_runs, ecst.republish_runs), and its end is logged.
func (s *Server) run(ctx context.Context, q request) {
	e, err := s.entityConfig(q.Entity)
	if err == nil {
		switch q.Action {
		case "verify":
			var rep *verify.Report
			rep, err = verify.Run(ctx, verify.Config{Pool: s.cfg.Pool, Registry: s.cfg.Registry, Entity: e, Kafka: s.cfg.Kafka, Logger: s.log},
				verify.Options{Mirror: q.Mirror})
			if err == nil {
				s.log.Info("console: verify done", "entity", q.Entity, "result", verify.ResultOf(rep, nil))
			}
		case "republish", "resume":
			var res *republish.Result
			res, err = republish.Run(ctx, republish.Config{Pool: s.cfg.Pool, Publisher: s.cfg.Publisher, Entity: e, Kafka: s.cfg.Kafka, Logger: s.log},
				republish.Options{All: q.All, Keys: q.Keys, Resume: q.Run})
			if err == nil {
				s.log.Info("console: republish done", "entity", q.Entity, "run", res.RunID)
			}
		}
	}
	if err != nil {
		s.actions.WithLabelValues(q.Action, "failed").Inc()
		s.log.Error("console: action failed", "action", q.Action, "entity", q.Entity, "err", err)
		return
	}
	s.actions.WithLabelValues(q.Action, "done").Inc()
}
