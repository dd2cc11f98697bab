package console_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ecst-io/ecst/config"
	"github.com/ecst-io/ecst/internal/console"
	"github.com/ecst-io/ecst/internal/ecsttest"
	"github.com/ecst-io/ecst/internal/pgtest"
	"github.com/ecst-io/ecst/internal/status"
	"github.com/ecst-io/ecst/internal/topics"
	"github.com/ecst-io/ecst/internal/wait"
	"github.com/ecst-io/ecst/republish"
	"github.com/ecst-io/ecst/verify"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const token = "console-test-token-5f1c"

// system is a world whose topic matches ecst.yaml, with a relay running
// and a console serving it.
type system struct {
	*ecsttest.World
	url string
}

func newSystem(t *testing.T, tok string) *system {
	w := ecsttest.New(t, ecsttest.Options{})
	ctx := context.Background()
	w.Entity.Partitions = ecsttest.Partitions
	cl, err := kgo.NewClient(w.Kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	changes, err := topics.Plan(ctx, adm, []*config.Entity{w.Entity})
	if err != nil {
		t.Fatal(err)
	}
	if err := topics.Fix(ctx, adm, changes); err != nil {
		t.Fatal(err)
	}
	stop := w.StartRelay()
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	w.WaitRelayLeads()

	srv, err := console.New(console.Config{
		Status: status.Options{DB: w.Pool, Admin: adm, Config: w.Config, MaxBacklogAge: time.Hour},
		Token:  tok, Pool: w.Pool, Registry: w.Registry, Publisher: w.Pub, Kafka: w.Kafka(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &system{World: w, url: "http://" + ln.Addr().String()}
}

// browser starts Debian's chromium, headless, with a fresh profile. The
// tests need it: `make setup-chromium` installs it.
func browser(t *testing.T) context.Context {
	path := os.Getenv("ECST_CHROMIUM")
	if path == "" {
		var err error
		if path, err = exec.LookPath("chromium"); err != nil {
			t.Fatal("chromium not found: run `make setup-chromium` (scripts/setup.sh chromium installs Debian's chromium), or set ECST_CHROMIUM to a Chromium binary")
		}
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	return ctx
}

// screenshot saves the page as artifacts/console/name.png at the root of
// the repository (README: "Console"), which CI keeps.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "artifacts", "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// do runs the steps, each within 30 seconds; when one fails it says where
// the browser is and what the page shows.
func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	for i, step := range steps {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := chromedp.Do(sctx, step)
		cancel()
		if err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("step %d: %v\nat %s, the page says:\n%s", i+1, err, loc, body)
		}
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return s
}

// waitPage loads u until the expression is true in it.
func waitPage(t *testing.T, ctx context.Context, what, u, expr string) {
	t.Helper()
	var body string
	err := wait.Until(ctx, 90*time.Second, 100*time.Millisecond, what, func() (bool, error) {
		if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
			return false, err
		}
		var err error
		if body, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body"))); err != nil {
			return false, err
		}
		return chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
	})
	if err != nil {
		t.Fatalf("%v; the page says:\n%s", err, body)
	}
}

// TestConsoleInBrowser: the page shows a planted drift, side by side; a
// republish of every key, started and confirmed on the page with the
// token, completes and the topic converges, as a verify started from the
// page then finds; an action with a wrong token is refused; and the
// overview stays readable on a phone.
func TestConsoleInBrowser(t *testing.T) {
	s := newSystem(t, token)
	ctx := browser(t)
	bg := context.Background()
	s.Seed(bg, ecsttest.Keys(12))
	if err := wait.Until(bg, 30*time.Second, 20*time.Millisecond, "the relay to publish the seed", func() (bool, error) {
		return s.OutboxLen() == 0, nil
	}); err != nil {
		t.Fatal(err)
	}

	// A mirror, caught up now: the republish below leaves it behind.
	if err := s.MirrorCatchUp("billing"); err != nil {
		t.Fatal(err)
	}

	// Drift behind ecst's back, found by a verify.
	s.Exec(`UPDATE customers SET name = 'planted drift' WHERE id = 'c00004'`)
	if _, err := verify.Run(bg, verify.Config{Pool: s.Pool, Registry: s.Registry, Entity: s.Entity, Kafka: s.Kafka()}, verify.Options{}); err != nil {
		t.Fatal(err)
	}

	do(t, ctx, chromedp.Navigate(s.url+"/"))
	if a := text(t, ctx, "#attention"); !strings.Contains(a, "found drift: topic: 0 missing, 0 extra, 1 stale") || !strings.Contains(a, "ecst verify customer --repair") {
		t.Fatalf("attention:\n%s", a)
	}
	if e := text(t, ctx, "#entities"); !strings.Contains(e, s.Topic) || !strings.Contains(e, "drift") {
		t.Fatalf("entities:\n%s", e)
	}
	screenshot(t, ctx, "overview")

	do(t, ctx, chromedp.Navigate(s.url+"/drift/customer"))
	if r := text(t, ctx, "#verify-result"); r != "drift" {
		t.Fatalf("verify result %q", r)
	}
	d := text(t, ctx, "table.diffs tbody")
	if !strings.Contains(d, "c00004") || !strings.Contains(d, "name") {
		t.Fatalf("diffs:\n%s", d)
	}
	if w, g := text(t, ctx, "table.diffs td.want"), text(t, ctx, "table.diffs td.got"); w != "planted drift" || g != "name-c00004" {
		t.Fatalf("side by side: source %q, topic %q", w, g)
	}
	screenshot(t, ctx, "drift")

	// A wrong token: refused, and nothing runs.
	do(t, ctx,
		chromedp.Navigate(s.url+"/republish"),
		chromedp.Click(chromedp.CSS("#republish-all-customer")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-button")),
		chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"),
		chromedp.Click(chromedp.CSS("#confirm-button")),
		chromedp.WaitVisible(chromedp.CSS("#refused")),
	)
	if r := text(t, ctx, "#refused"); !strings.Contains(r, "Refused (403)") || !strings.Contains(r, "missing or wrong") {
		t.Fatalf("refused page:\n%s", r)
	}
	screenshot(t, ctx, "refused")
	var runs int
	if err := s.Pool.QueryRow(bg, `SELECT count(*) FROM ecst.republish_runs`).Scan(&runs); err != nil || runs != 0 {
		t.Fatalf("republish runs after a refused action: %d (%v)", runs, err)
	}

	// With the token: the confirmation page, then the run.
	do(t, ctx,
		chromedp.Navigate(s.url+"/republish"),
		chromedp.Click(chromedp.CSS("#republish-all-customer")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-button")),
	)
	if c := text(t, ctx, "#confirm"); !strings.Contains(c, "Republish every key of customer") {
		t.Fatalf("confirmation:\n%s", c)
	}
	do(t, ctx, chromedp.SendKeys(chromedp.CSS("#token"), token))
	screenshot(t, ctx, "republish-confirm")
	do(t, ctx, chromedp.Click(chromedp.CSS("#confirm-button")), chromedp.WaitVisible(chromedp.CSS("#message")))
	if m := text(t, ctx, "#message"); m != "Started: republish of customer. This page reloads while it runs." {
		t.Fatalf("message %q", m)
	}
	waitPage(t, ctx, "the run to complete", s.url+"/republish", `document.querySelector('tr.run[data-state="completed"]') !== null`)
	if p := text(t, ctx, "tr.run"); !strings.Contains(p, "12/12 (100%)") {
		t.Fatalf("run:\n%s", p)
	}
	if full, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('tr.run progress').value === 1`)); err != nil || !full {
		t.Fatalf("the run's progress bar is not full (%v)", err)
	}
	screenshot(t, ctx, "republish-done")
	if err := wait.Until(bg, 60*time.Second, 50*time.Millisecond, "the topic to converge on the source", func() (bool, error) {
		return len(s.TopicMatchesSource()) == 0, nil
	}); err != nil {
		t.Fatalf("%v: %v", err, s.TopicMatchesSource())
	}

	// Verify now, from the drift page: in sync.
	do(t, ctx,
		chromedp.Navigate(s.url+"/drift/customer"),
		chromedp.Click(chromedp.CSS("#drift a.button")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-button")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#confirm-button")),
		chromedp.WaitVisible(chromedp.CSS("#message")),
	)
	waitPage(t, ctx, "a verify in sync", s.url+"/drift/customer", `document.querySelector('#verify-result').textContent === 'in_sync'`)
	do(t, ctx, chromedp.Navigate(s.url+"/"))
	if a := text(t, ctx, "#attention"); !strings.Contains(a, "Nothing needs attention") {
		t.Fatalf("attention after the repair:\n%s", a)
	}
	if m := text(t, ctx, "#read-models tbody"); !strings.Contains(m, "mirror:billing") {
		t.Fatalf("read models:\n%s", m)
	}
	if behind, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#read-models progress').value > 0`)); err != nil || !behind {
		t.Fatalf("the mirror's lag bar shows no lag (%v)", err)
	}

	// A phone: one column, nothing wider than the screen.
	do(t, ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(s.url+"/"),
	)
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Error("the overview is wider than a phone's screen")
	}
	screenshot(t, ctx, "overview-phone")
	do(t, ctx, chromedp.Navigate(s.url+"/republish"))
	if overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`)); err != nil || overflow {
		t.Errorf("the republish page is wider than a phone's screen (%v)", err)
	}
	screenshot(t, ctx, "republish-phone")
}

// TestActionsNeedTheToken: a POST without the token, with a wrong one, or
// to a console started without one is refused with 403 and runs nothing;
// the refusal never echoes or logs the token.
func TestActionsNeedTheToken(t *testing.T) {
	for _, tc := range []struct {
		name, configured, given, says string
	}{
		{"none given", token, "", "missing or wrong"},
		{"wrong", token, "guess", "missing or wrong"},
		{"console without a token", "", "anything", "Actions are off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSystem(t, tc.configured)
			resp, err := http.PostForm(s.url+"/actions/republish", url.Values{"entity": {"customer"}, "all": {"1"}, "confirm": {"yes"}, "token": {tc.given}})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), tc.says) || (tc.given != "" && strings.Contains(string(body), tc.given)) {
				t.Fatalf("%d\n%s", resp.StatusCode, body)
			}
			var runs int
			if err := s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ecst.republish_runs`).Scan(&runs); err != nil || runs != 0 {
				t.Fatalf("republish runs: %d (%v)", runs, err)
			}
		})
	}
	// The right token, not confirmed: not run either.
	s := newSystem(t, token)
	resp, err := http.PostForm(s.url+"/actions/republish", url.Values{"entity": {"customer"}, "all": {"1"}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unconfirmed: %d", resp.StatusCode)
	}
	for _, p := range []string{"/healthz", "/metrics", "/api/status", "/static/console.css"} {
		resp, err := http.Get(s.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
}

// TestResumeFromConsole: a run stopped half way is resumed by the
// console's resume action, confirmed with the token, and completes.
func TestResumeFromConsole(t *testing.T) {
	s := newSystem(t, token)
	ctx := context.Background()
	s.Seed(ctx, ecsttest.Keys(20))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := republish.Run(runCtx, republish.Config{Pool: s.Pool, Publisher: s.Pub, Entity: s.Entity}, republish.Options{All: true, Batch: 2, Rate: 10})
		done <- err
	}()
	var id int64
	if err := wait.Until(ctx, 30*time.Second, 10*time.Millisecond, "the run to write a batch", func() (bool, error) {
		err := s.Pool.QueryRow(ctx, `SELECT id FROM ecst.republish_runs WHERE rows_written > 0`).Scan(&id)
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done

	// The confirmation page says what resuming does.
	resp, err := http.Get(fmt.Sprintf("%s/confirm/resume?entity=customer&run=%d", s.url, id))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("Resume republish run %d of customer", id); resp.StatusCode != 200 || !strings.Contains(string(body), want) {
		t.Fatalf("%d:\n%s", resp.StatusCode, body)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = client.PostForm(s.url+"/actions/resume", url.Values{"entity": {"customer"}, "run": {fmt.Sprint(id)}, "confirm": {"yes"}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/republish?entity=customer&started=resume" {
		t.Fatalf("%d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if err := wait.Until(ctx, 60*time.Second, 20*time.Millisecond, "the resumed run to complete", func() (bool, error) {
		var state string
		var written int64
		err := s.Pool.QueryRow(ctx, `SELECT state, rows_written FROM ecst.republish_runs WHERE id = $1`, id).Scan(&state, &written)
		return state == "completed" && written == 20, err
	}); err != nil {
		t.Fatal(err)
	}
}
