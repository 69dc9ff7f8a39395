"""The consent service: patient grants, revocation, break-glass and the policy decision point.

Modules, from the inside out: :mod:`~services.consent.domain` (pure rules, :func:`decide`),
:mod:`~services.consent.store` (grants and break-glass sessions),
:mod:`~services.consent.registry` (operations over the store), :mod:`~services.consent.servicer`
(the gRPC edge) and :mod:`~services.consent.app` (the process bootstrap).
"""
