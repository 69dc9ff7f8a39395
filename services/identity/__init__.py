"""The identity service: the master patient index (national IDs and MRNs to person tokens).

Modules, from the inside out: :mod:`~services.identity.domain` (pure matching and validation
rules), :mod:`~services.identity.store` (persons, MRN-hash links, national-ID claims, pending
merges), :mod:`~services.identity.index` (resolve and audited lookups over the store, the key
provider and the audit port), :mod:`~services.identity.clients` (the audit port over gRPC),
:mod:`~services.identity.servicer` (the gRPC edge) and :mod:`~services.identity.app` (the
process bootstrap).
"""
