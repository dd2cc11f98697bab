package relay

// WithBeforeProduce calls f with each batch's row ids after the batch is
// read and before it is produced: tests stall a leader there.
func WithBeforeProduce(cfg *Config, f func(shard int, ids []int64)) { cfg.beforeProduce = f }

// WithoutFencing makes the relay produce without a transactional id, so
// that a test can show what fencing prevents.
func WithoutFencing(cfg *Config) { cfg.noFencing = true }

// WithoutWatch makes the relay keep no watched transactions: it reads
// `id > cursor` alone, so that a test can show the late commits that
// skips.
func WithoutWatch(cfg *Config) { cfg.watch = watchNone }

// WithXipOnly makes the relay watch only its snapshots' xip lists, not the
// transactions from xmax up, so that a test can show the rows that loses.
func WithXipOnly(cfg *Config) { cfg.watch = watchXip }

// WithLSNOrder makes the WAL source sort each batch by the position where
// its messages were written instead of the commit order the slot delivers
// them in, so that a test can show the reordering that would cause.
func WithLSNOrder(cfg *Config) { cfg.sortByLSN = true }

// WithoutSwitchWait makes a switch open the new transport at once, without
// waiting for the old one's events to be published.
func WithoutSwitchWait(o *SwitchOptions) { o.noWait = true }

// WithoutSlotDrop makes a switch to the table transport leave the slot.
func WithoutSlotDrop(o *SwitchOptions) { o.keepSlot = true }

// ReadSQL is the relay's read of a shard from its cursor.
const ReadSQL = readSQL
