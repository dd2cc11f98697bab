package migrate

// UpTo applies the migrations up to version last.
var UpTo = upTo
