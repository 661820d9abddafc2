"""Transfer backends: the ways a batch of transfer items gets copied (local, globus)."""
