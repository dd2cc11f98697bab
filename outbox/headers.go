package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Header is one Kafka record header.
type Header struct {
	Key   string // the header's name, ecst-event-id say
	Value []byte // its value, UTF-8 text for ecst's headers
}

// headerFormat is the first byte of an encoded header list, so that the
// encoding can change without a migration of rows in flight.
const headerFormat = 1

// EncodeHeaders packs headers into the outbox's bytea column: a format byte,
// then per header a uvarint key length, the key, a uvarint value length and
// the value. It is smaller and cheaper to write than jsonb, which matters on
// the hot path of every business transaction.
func EncodeHeaders(hs []Header) []byte {
	n := 1
	for _, h := range hs {
		n += 2*binary.MaxVarintLen32 + len(h.Key) + len(h.Value)
	}
	b := make([]byte, 1, n)
	b[0] = headerFormat
	for _, h := range hs {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

// ErrBadHeaders reports an outbox headers column that does not decode.
var ErrBadHeaders = errors.New("outbox headers do not decode")

// DecodeHeaders is the inverse of EncodeHeaders.
func DecodeHeaders(b []byte) ([]Header, error) {
	if len(b) == 0 || b[0] != headerFormat {
		return nil, fmt.Errorf("%w: unknown format", ErrBadHeaders)
	}
	b = b[1:]
	var hs []Header
	for len(b) > 0 {
		k, rest, err := readChunk(b)
		if err != nil {
			return nil, err
		}
		v, rest, err := readChunk(rest)
		if err != nil {
			return nil, err
		}
		hs = append(hs, Header{Key: string(k), Value: v})
		b = rest
	}
	return hs, nil
}

func readChunk(b []byte) (c, rest []byte, err error) {
	c, rest, ok := chunk(b)
	if !ok {
		return nil, nil, fmt.Errorf("%w: truncated", ErrBadHeaders)
	}
	return c, rest, nil
}

// chunk splits a uvarint length and that many bytes off b.
func chunk(b []byte) (c, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}
