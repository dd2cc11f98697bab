package ecsttest

import (
	"fmt"
	"strconv"
	"time"
)

// SeedFrom is the seed of a randomized test: the value of the environment
// variable env when it is set (to replay a run), else one from the clock.
// fromEnv says which. A value that is not an unsigned integer is an error
// naming the variable: a typo must not quietly run another seed. The caller
// logs the seed with the command that replays it.
func SeedFrom(getenv func(string) string, env string) (seed uint64, fromEnv bool, err error) {
	s := getenv(env)
	if s == "" {
		return uint64(time.Now().UnixNano() % 1_000_000), false, nil
	}
	seed, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s=%q: want an unsigned integer, the seed a failed run logged", env, s)
	}
	return seed, true, nil
}
