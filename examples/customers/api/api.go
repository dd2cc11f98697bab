// Package api is the customers service: customers over HTTP, where every
// write changes the customers table and publishes the customer's full new
// state (or its deletion) through the producer, in one PostgreSQL
// transaction. Either both happen or neither does.
//
//	POST   /customers        {"id"?, "name", "email", "tier"?}  201, or 409 if the id exists
//	PUT    /customers/{id}   {"name", "email", "tier"?}         200, or 404
//	DELETE /customers/{id}                                      204, or 404
//	GET    /customers/{id}                                      200, or 404
//	GET    /healthz, /readyz (the database answers)
//
// Errors are JSON, {"error": "...", "field": "..."}: 400 for a request
// that does not validate, 404 for an unknown customer.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecst-io/ecst/examples/customers"
	"github.com/ecst-io/ecst/examples/customers/internal/web"
	"github.com/ecst-io/ecst/producer"
)

// Entity is the entity name the service publishes under (ecst.yaml).
const Entity = "customer"

// Server serves the customers API.
type Server struct {
	pool *pgxpool.Pool
	pub  *producer.Publisher
	log  *slog.Logger
}

// New returns a Server that writes through pool and publishes with pub.
// The customers table must exist (EnsureTable).
func New(pool *pgxpool.Pool, pub *producer.Publisher, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{pool: pool, pub: pub, log: log}
}

// EnsureTable creates the customers table if it does not exist: the
// service owns it.
func EnsureTable(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, customers.TableSQL); err != nil {
		return fmt.Errorf("create the customers table: %w", err)
	}
	return nil
}

// Handler routes the API, with a log line per request.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /customers", s.create)
	mux.HandleFunc("PUT /customers/{id}", s.update)
	mux.HandleFunc("DELETE /customers/{id}", s.delete)
	mux.HandleFunc("GET /customers/{id}", s.get)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		web.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	return web.Log(mux, s.log)
}

// Input is the body of POST and PUT.
type Input struct {
	// ID is optional on POST (a UUIDv7 is assigned), and must match the
	// path on PUT when given.
	ID string `json:"id,omitempty"`
	// Name and Email are required.
	Name  string `json:"name"`
	Email string `json:"email"` // see Name
	// Tier is the billing tier; null or absent for none.
	Tier *string `json:"tier"`
}

// ValidationError is a request the API refuses with 400.
type ValidationError struct {
	// Field is the JSON field at fault ("" for the body as a whole).
	Field string
	// Msg says what is wrong with it.
	Msg string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var (
	idRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	tierRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
)

const maxName = 200

// validate normalizes in (trimmed name and email) and checks it.
func (in *Input) validate() error {
	if in.ID != "" && !idRE.MatchString(in.ID) {
		return invalid("id", "%q is not a valid id: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", in.ID)
	}
	in.Name = strings.TrimSpace(in.Name)
	switch {
	case in.Name == "":
		return invalid("name", "is required")
	case utf8.RuneCountInString(in.Name) > maxName:
		return invalid("name", "is longer than %d characters", maxName)
	case strings.ContainsFunc(in.Name, unicode.IsControl):
		return invalid("name", "contains control characters")
	}
	in.Email = strings.TrimSpace(in.Email)
	if in.Email == "" {
		return invalid("email", "is required")
	}
	if a, err := mail.ParseAddress(in.Email); err != nil || a.Address != in.Email || len(in.Email) > 254 {
		return invalid("email", "%q is not an email address (name@example.com)", in.Email)
	}
	if in.Tier != nil && !tierRE.MatchString(*in.Tier) {
		return invalid("tier", "%q is not a tier: lowercase letters, digits, '_' or '-', at most 32; or null for none", *in.Tier)
	}
	return nil
}

// errNotFound and errExists are what the handlers map to 404 and 409.
var (
	errNotFound = errors.New("not found")
	errExists   = errors.New("already exists")
)

const returning = `RETURNING id, version, name, email, tier, updated_at`

func scanCustomer(row pgx.Row) (customers.Customer, error) {
	var c customers.Customer
	err := row.Scan(&c.ID, &c.Version, &c.Name, &c.Email, &c.Tier, &c.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, errNotFound
	}
	// Avro's timestamp-micros and PostgreSQL's timestamptz agree on
	// precision; UTC keeps the JSON replies and the events alike.
	c.UpdatedAt = c.UpdatedAt.UTC()
	return c, err
}

// Create inserts a new customer at version 1 and publishes its state.
func (s *Server) Create(ctx context.Context, in Input) (customers.Customer, error) {
	if err := in.validate(); err != nil {
		return customers.Customer{}, err
	}
	if in.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return customers.Customer{}, fmt.Errorf("customer id: %w", err)
		}
		in.ID = id.String()
	}
	return s.write(ctx, func(tx pgx.Tx) (customers.Customer, error) {
		c, err := scanCustomer(tx.QueryRow(ctx, `
			INSERT INTO customers (id, version, name, email, tier, updated_at) VALUES ($1, 1, $2, $3, $4, now())
			ON CONFLICT (id) DO NOTHING `+returning, in.ID, in.Name, in.Email, in.Tier))
		if errors.Is(err, errNotFound) {
			return c, fmt.Errorf("customer %q: %w", in.ID, errExists)
		}
		return c, err
	})
}

// Update replaces a customer's name, email and tier, bumps its version and
// publishes the new state.
func (s *Server) Update(ctx context.Context, id string, in Input) (customers.Customer, error) {
	if in.ID != "" && in.ID != id {
		return customers.Customer{}, invalid("id", "%q does not match the id in the path, %q", in.ID, id)
	}
	in.ID = ""
	if err := in.validate(); err != nil {
		return customers.Customer{}, err
	}
	return s.write(ctx, func(tx pgx.Tx) (customers.Customer, error) {
		c, err := scanCustomer(tx.QueryRow(ctx, `
			UPDATE customers SET name = $2, email = $3, tier = $4, version = version + 1, updated_at = now()
			WHERE id = $1 `+returning, id, in.Name, in.Email, in.Tier))
		if errors.Is(err, errNotFound) {
			return c, fmt.Errorf("customer %q: %w", id, errNotFound)
		}
		return c, err
	})
}

// write runs change and publishes the state it returns, in one
// transaction.
func (s *Server) write(ctx context.Context, change func(pgx.Tx) (customers.Customer, error)) (customers.Customer, error) {
	var c customers.Customer
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if c, err = change(tx); err != nil {
			return err
		}
		return s.pub.Publish(ctx, tx, Entity, c.ID, c.Version, &c)
	})
	return c, err
}

// Delete removes a customer and publishes its deletion (a tombstone) at
// the next version.
func (s *Server) Delete(ctx context.Context, id string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var version int64
		err := tx.QueryRow(ctx, `DELETE FROM customers WHERE id = $1 RETURNING version + 1`, id).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("customer %q: %w", id, errNotFound)
		}
		if err != nil {
			return err
		}
		return s.pub.Delete(ctx, tx, Entity, id, version)
	})
}

// Get reads a customer.
func (s *Server) Get(ctx context.Context, id string) (customers.Customer, error) {
	c, err := scanCustomer(s.pool.QueryRow(ctx, `SELECT id, version, name, email, tier, updated_at FROM customers WHERE id = $1`, id))
	if errors.Is(err, errNotFound) {
		return c, fmt.Errorf("customer %q: %w", id, errNotFound)
	}
	return c, err
}

const maxBody = 64 << 10

// decode reads a JSON body strictly: unknown fields, trailing data and
// oversized bodies are 400s.
func decode(w http.ResponseWriter, r *http.Request) (Input, error) {
	var in Input
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return in, invalid("", "the body is larger than %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return in, invalid("", "the body is empty; send a JSON object with name, email and tier")
		}
		return in, invalid("", "the body is not a customer as JSON: %v", err)
	}
	if dec.More() {
		return in, invalid("", "the body holds more than one JSON value")
	}
	return in, nil
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	in, err := decode(w, r)
	if err == nil {
		var c customers.Customer
		if c, err = s.Create(r.Context(), in); err == nil {
			w.Header().Set("Location", "/customers/"+c.ID)
			web.JSON(w, http.StatusCreated, c)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	in, err := decode(w, r)
	if err == nil {
		var c customers.Customer
		if c, err = s.Update(r.Context(), r.PathValue("id"), in); err == nil {
			web.JSON(w, http.StatusOK, c)
			return
		}
	}
	s.fail(w, r, err)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	if err := s.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	c, err := s.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	web.JSON(w, http.StatusOK, c)
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		s.log.Warn("not ready: the database does not answer", "err", err)
		web.Error(w, http.StatusServiceUnavailable, "the database does not answer")
		return
	}
	web.JSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// fail maps err to a status. Messages of 4xx replies are the client's
// own input echoed back; a 5xx says nothing about the server's insides
// (which are logged instead).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		web.JSON(w, http.StatusBadRequest, web.ErrorBody{Error: ve.Error(), Field: ve.Field})
	case errors.Is(err, errNotFound):
		web.Error(w, http.StatusNotFound, err.Error())
	case errors.Is(err, errExists):
		web.Error(w, http.StatusConflict, err.Error())
	case r.Context().Err() != nil:
		// The client went away; nobody reads the reply.
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		web.Error(w, http.StatusInternalServerError, "internal error; the server's log has the cause")
	}
}
