"""Planning with a world model: batched optimisers over action sequences (one module per optimiser)."""
