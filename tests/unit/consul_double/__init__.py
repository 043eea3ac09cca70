"""Self-tests of the Consul API double's KV store and sessions (tests/consul_double)."""
