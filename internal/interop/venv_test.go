package interop_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// venvDir is $XDG_CACHE_HOME/ecst/pyvenv/<hash> (or ~/.cache/…): the hash
// covers the requirements and the interpreter (path and version), since a
// virtualenv is bound to the python that made it.
func venvDir(reqs, interpreter []byte) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory for the Python virtualenv: %w", err)
	}
	h := sha256.New()
	h.Write(reqs)
	h.Write([]byte{0})
	h.Write(interpreter)
	dir := filepath.Join(cache, "ecst", "pyvenv", hex.EncodeToString(h.Sum(nil))[:16])
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// lockFile holds an exclusive lock on path until unlock: two test processes
// (make test and make test-kafka in two shells) must not build the same
// virtualenv at once.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
