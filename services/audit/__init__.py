"""The audit service: an append-only Merkle log of every access to clinical data."""
