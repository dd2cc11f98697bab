// Package interop holds the tests that read ecst's topics with clients that
// share no code with ecst: confluent-kafka-python (librdkafka, with its
// AvroDeserializer and the registry over HTTP) and kcat. They prove the
// wire contract from the outside: a consumer in any language with a
// Confluent Avro deserializer reads every record, header and tombstone.
//
// TestPythonPublishes is the other direction: a Python service (psycopg 3)
// that publishes with SELECT ecst.publish(...) and no ecst code.
//
// The package has no code of its own; see interop_test.go. The tools come
// from `make setup-interop` (kcat, python3-venv); the test builds and caches
// its own virtualenv from testdata/requirements.txt.
package interop
