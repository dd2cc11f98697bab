// Package customers is the example used throughout ecst's docs, demo and
// tests: a customers service that owns its table and publishes each
// customer's full state to the customers.state topic.
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
