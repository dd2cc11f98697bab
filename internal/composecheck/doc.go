// Package composecheck holds the test that keeps docker-compose.yml honest:
// it asks docker-compose for the resolved file (`docker-compose config`),
// then checks the structure the stack relies on and that no daemon can
// check here: health checks, one-shot jobs and their ordering, pinned
// images, Dockerfile targets, ports and ECST_* names. `make compose-check`
// runs it; `make setup-compose` installs docker-compose.
package composecheck
