// Package deploy holds the monitoring ecst ships: the Grafana dashboard
// (grafana/ecst.json) and the Prometheus alerting rules
// (prometheus/alerts.yml) with their promtool unit tests
// (prometheus/alerts_test.yml); docs/operations.md is their runbook. It has
// no code: its tests check the dashboard and the rules against the metrics
// the code exports, every alert against its runbook section and its unit
// tests. `make alerts-test` runs promtool on the rules themselves.
package deploy
