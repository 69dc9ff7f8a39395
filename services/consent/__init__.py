"""The consent service: patient grants, proxies, revocation, break-glass and the policy
decision point; every change is recorded in the audit log before it is stored.

Modules, from the inside out: :mod:`~services.consent.domain` (pure rules, :func:`decide`,
who manages a person's grants), :mod:`~services.consent.store` (grants, break-glass sessions,
proxies), :mod:`~services.consent.registry` (operations over the store, each change audited
first), :mod:`~services.consent.clients` (the audit log over gRPC),
:mod:`~services.consent.servicer` (the gRPC edge) and :mod:`~services.consent.app` (the
process bootstrap).
"""
