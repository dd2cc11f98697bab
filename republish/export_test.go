package republish

// ReadBeforeLock makes every batch read its rows before it takes their key
// locks, pausing in between: the ordering bug the live-traffic test must
// catch.
func ReadBeforeLock(o *Options, pause func()) {
	o.readFirst = true
	o.beforeLock = pause
}

// BeforeLock calls f before every batch takes its key locks.
func BeforeLock(o *Options, f func()) { o.beforeLock = f }
