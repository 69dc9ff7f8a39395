"""The audit ledger's verifiable structures: Merkle proofs and signed tree heads."""
