"""Cross-service contracts: what two or more services must agree on, in one place each."""
