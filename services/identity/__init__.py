"""The identity service: the master patient index (national IDs and MRNs to person tokens).

Modules, from the inside out: :mod:`~services.identity.domain` (pure matching and validation
rules), :mod:`~services.identity.store` (persons and MRN links), :mod:`~services.identity.index`
(resolve and lookup over the store and key provider), :mod:`~services.identity.servicer` (the
gRPC edge) and :mod:`~services.identity.app` (the process bootstrap).
"""
