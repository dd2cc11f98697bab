package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// connect is one Kafka Connect standalone worker (a JVM) running one
// connector.
type connect struct {
	dir     string // worker.properties, connector.properties, offsets, connect.log
	port    int    // REST listener on 127.0.0.1
	name    string // the connector's name
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
}

// startConnect writes the worker's and the connector's properties into dir
// and launches ConnectStandalone with every jar in libs on one classpath.
// The JVM dies with this process (Pdeathsig), so no exit path leaves it
// running; stop ends it cleanly.
func startConnect(libs, dir string, port int, heap string, worker, connector map[string]string) (*connect, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	jars, _ := filepath.Glob(filepath.Join(libs, "connect-runtime-*.jar"))
	if len(jars) == 0 {
		return nil, fmt.Errorf("no connect-runtime jar in -connect-libs %s: run bench/debezium/run.sh, which fetches them", libs)
	}
	wp, cp := filepath.Join(dir, "worker.properties"), filepath.Join(dir, "connector.properties")
	if err := writeProps(wp, worker); err != nil {
		return nil, err
	}
	if err := writeProps(cp, connector); err != nil {
		return nil, err
	}
	logConf := filepath.Join(dir, "log4j2.properties")
	if err := os.WriteFile(logConf, []byte(connectLog4j), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "connect.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := strings.Fields(heap)
	args = append(args,
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+logConf,
		"-cp", filepath.Join(libs, "*"),
		"org.apache.kafka.connect.cli.ConnectStandalone", wp, cp)
	java := "java"
	if h := os.Getenv("JAVA_HOME"); h != "" {
		java = filepath.Join(h, "bin", "java")
	}
	cmd := exec.Command(java, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start Kafka Connect (%s): %w", java, err)
	}
	c := &connect{dir: dir, port: port, name: connector["name"], cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func writeProps(path string, m map[string]string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by bench/debezium.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, m[k])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

type connectorStatus struct {
	Connector struct {
		State string `json:"state"`
		Trace string `json:"trace"`
	} `json:"connector"`
	Tasks []struct {
		ID    int    `json:"id"`
		State string `json:"state"`
		Trace string `json:"trace"`
	} `json:"tasks"`
}

// waitRunning polls the REST API until the connector's task is RUNNING. A
// FAILED task or a JVM that exits ends the wait with the reason.
func (c *connect) waitRunning(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	url := "http://127.0.0.1:" + strconv.Itoa(c.port) + "/connectors/" + c.name + "/status"
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		var st connectorStatus
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			if resp.StatusCode == http.StatusOK {
				err = json.NewDecoder(resp.Body).Decode(&st)
			}
			resp.Body.Close()
			if err == nil && len(st.Tasks) > 0 {
				switch t := st.Tasks[0]; t.State {
				case "RUNNING":
					return nil
				case "FAILED":
					return fmt.Errorf("the connector's task FAILED:\n%s\n(log: %s)", firstLines(t.Trace, 30), c.logPath())
				}
			}
			if st.Connector.State == "FAILED" {
				return fmt.Errorf("the connector FAILED:\n%s\n(log: %s)", firstLines(st.Connector.Trace, 30), c.logPath())
			}
		}
		select {
		case <-c.exited:
			return fmt.Errorf("the Kafka Connect worker exited during start-up (%v); the end of its log:\n%s", c.exitErr, c.logTail(40))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the connector's task was not RUNNING within %s; the end of the log:\n%s", timeout, c.logTail(40))
		}
	}
}

// failed reports why the worker or its task stopped working, or nil: the
// drain loop checks it so that a failed task does not look like a slow one.
func (c *connect) failed() error {
	select {
	case <-c.exited:
		return fmt.Errorf("the Kafka Connect worker exited (%v); the end of its log:\n%s", c.exitErr, c.logTail(40))
	default:
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://127.0.0.1:" + strconv.Itoa(c.port) + "/connectors/" + c.name + "/status")
	if err != nil {
		return nil // busy; the JVM is alive
	}
	defer resp.Body.Close()
	var st connectorStatus
	if json.NewDecoder(resp.Body).Decode(&st) == nil && len(st.Tasks) > 0 && st.Tasks[0].State == "FAILED" {
		return fmt.Errorf("the connector's task FAILED:\n%s", firstLines(st.Tasks[0].Trace, 30))
	}
	return nil
}

// stop asks the worker to shut down (SIGTERM: Connect stops the task and
// flushes its offsets), and kills it if it has not exited within 30 s.
func (c *connect) stop() error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(30 * time.Second):
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
	return errors.New("the Kafka Connect worker did not stop within 30 s of SIGTERM and was killed")
}

func (c *connect) logPath() string { return filepath.Join(c.dir, "connect.log") }

func (c *connect) logTail(n int) string {
	b, err := os.ReadFile(c.logPath())
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// connectLog4j: INFO to connect.log, as Connect's own config does, minus the
// per-request chatter. log4j2's shutdown hook is off so that the end of a
// clean shutdown is logged.
const connectLog4j = `status = warn
name = ecst-bench-connect
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.restserver.name = org.apache.kafka.connect.runtime.rest.RestServer
logger.restserver.level = WARN
`
