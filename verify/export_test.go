package verify

// PauseAfterSnapshot widens the window between a snapshot of the database
// and the topic read after it, where live changes look like drift.
func PauseAfterSnapshot(o *Options, pause func()) { o.afterSnapshot = pause }
