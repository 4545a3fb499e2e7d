"""Real servers started by tests and benchmarks (slapd), on loopback ports, from temporary config."""
