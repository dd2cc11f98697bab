// Package customers is the customer entity the ecst binary carries for
// `ecst demo` and `ecst bench`: the schema, ecst.yaml, table and generated
// type of examples/customers, copied so that the binary links nothing of
// examples/ (an example is for reading and copying, not a dependency). A
// test keeps each file the same as the example's.
package customers

import _ "embed"

// Schema is the Avro schema of the customer entity.
//
//go:embed schemas/customer.avsc
var Schema string

// Config is the example ecst.yaml.
//
//go:embed ecst.yaml
var Config string

// TableSQL creates the customers table.
//
//go:embed customers.sql
var TableSQL string

//go:generate go tool avrogen -pkg customers -o customer_gen.go -tags json:snake schemas/customer.avsc
