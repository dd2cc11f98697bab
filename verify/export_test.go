package verify

import "time"

// PauseAfterSnapshot widens the window between a snapshot of the database
// and the topic read after it, where live changes look like drift.
func PauseAfterSnapshot(o *Options, pause func()) { o.afterSnapshot = pause }

// LeaderGrace shortens how long a repair waits for a relay to lead a shard
// holding its rows.
func LeaderGrace(o *Options, d time.Duration) { o.leaderGrace = d }
