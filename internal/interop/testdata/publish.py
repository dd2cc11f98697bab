"""A Python service that publishes its customers' state with ecst and no
ecst code: it writes its own table and calls ecst.publish in the same
transaction; the relay reads the full state and publishes it.

    publish.py DATABASE_URL
"""
import sys

import psycopg

with psycopg.connect(sys.argv[1]) as conn:
    # One key per transaction, with the service's own write.
    for i in range(20):
        with conn.transaction():
            key = f"py{i:02d}"
            conn.execute(
                "INSERT INTO customers (id, version, name, email) VALUES (%s, 1, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET version = customers.version + 1, name = EXCLUDED.name",
                (key, f"Python {i}", f"{key}@example.com"),
            )
            conn.execute("SELECT ecst.publish('customer', %s)", (key,))
    # Many keys at once: a list, cast to text[] (psycopg sends a list of
    # str untyped, which would reach the one-key overload: refused).
    keys = [f"py{i:02d}" for i in range(10, 20)]
    try:
        with conn.transaction():
            conn.execute("SELECT ecst.publish('customer', %s)", (keys,))
        sys.exit("an untyped list was taken as one key")
    except psycopg.errors.InvalidParameterValue:
        pass
    with conn.transaction():
        conn.execute("UPDATE customers SET version = version + 1, tier = 'gold' WHERE id LIKE 'py1%'")
        conn.execute("SELECT ecst.publish('customer', %s::text[])", (keys,))
    # A deletion: the relay finds no row and publishes a tombstone.
    with conn.transaction():
        conn.execute("DELETE FROM customers WHERE id = 'py00'")
        conn.execute("SELECT ecst.publish('customer', %s)", ("py00",))
    # A rolled-back transaction publishes nothing.
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE customers SET name = 'never' WHERE id = 'py01'")
        conn.execute("SELECT ecst.publish('customer', %s)", ("py01",))
print("published")
