"""Principal <-> common.v1.Principal conversion (what consent and audit receive)."""

from __future__ import annotations

import pytest

from healthbank.common.v1 import common_pb2
from healthbank.contracts.principal import (
    Principal,
    PrincipalKind,
    Purpose,
    principal_from_proto,
    principal_to_proto,
)


@pytest.mark.parametrize("kind", list(PrincipalKind))
@pytest.mark.parametrize("purpose", list(Purpose))
def test_round_trip(kind: PrincipalKind, purpose: Purpose) -> None:
    principal = Principal(kind, "subject-1", "hospital-a", ("er",), purpose)
    message = principal_to_proto(principal)
    assert common_pb2.PrincipalKind.Name(message.kind) == f"PRINCIPAL_KIND_{kind.name}"
    assert principal_from_proto(message) == principal


def test_unspecified_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        principal_from_proto(common_pb2.Principal(subject="x", purpose=1))
