// Package doccheck holds the tests that keep ecst's documentation true to
// its code: README's Go blocks are the runnable examples' code, word for
// word; every exported field of the library's structs has a comment; and
// docs/architecture.md's package map lists every package. It has no code
// of its own.
package doccheck
