"""The authorization table: complete, deny by default, scopes, and its generated document."""

from __future__ import annotations

import importlib
from pathlib import Path

import grpc
import pytest
from repo_paths import REPO

from healthbank.consent.v1 import consent_pb2
from healthbank.contracts.principal import Principal, PrincipalKind
from healthbank.dev.scripts import load_script
from healthbank.ingest.v1 import ingest_pb2
from healthbank.rpc import ServiceError
from healthbank.rpc.authz import (
    AUTHORIZATION_TABLE,
    INTERNAL_SERVICES,
    authorization_markdown,
    check_call,
    refusal,
    services_calling,
)

SERVICES = ("ingest", "identity", "consent", "record_lookup", "archive", "audit", "ai_alert")
PERSON = "ab" * 32
OTHER_PERSON = "cd" * 32
SUBMIT = "/healthbank.ingest.v1.IngestService/Submit"
CREATE_GRANT = "/healthbank.consent.v1.ConsentService/CreateGrant"
ENGINE_A = Principal(PrincipalKind.HOSPITAL_ENGINE, "hospital-a-engine", "hospital-a")


def every_rpc() -> list[str]:
    methods = []
    for service in SERVICES:
        module = importlib.import_module(f"healthbank.{service}.v1.{service}_pb2")
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{descriptor.full_name}/{method.name}" for method in descriptor.methods]
    return methods


def test_the_table_covers_every_method_of_every_service() -> None:
    rpcs = every_rpc()
    # Every one of the seven services contributes methods (the enumeration is not empty).
    assert {method.split("/")[1].split(".")[1] for method in rpcs} == set(SERVICES)
    assert [method for method in rpcs if method not in AUTHORIZATION_TABLE] == []


def test_the_table_names_only_real_methods_and_known_services() -> None:
    infrastructure = {m for m in AUTHORIZATION_TABLE if m.startswith("/grpc.")}
    assert set(AUTHORIZATION_TABLE) - infrastructure == set(every_rpc())
    for method, rule in AUTHORIZATION_TABLE.items():
        assert rule.services <= set(INTERNAL_SERVICES), method
        assert rule.why, method
        assert PrincipalKind.SERVICE not in rule.callers, method


def test_a_method_not_in_the_table_is_refused_even_to_services() -> None:
    service = Principal(PrincipalKind.SERVICE, "ingest")
    found = refusal("/healthbank.ingest.v1.IngestService/Purge", service)
    assert found is not None and found.reason == "METHOD_NOT_AUTHORIZED"


def test_only_tree_heads_consistency_proofs_and_probes_are_public() -> None:
    public = {method for method, rule in AUTHORIZATION_TABLE.items() if rule.public}
    assert {m for m in public if not m.startswith("/grpc.")} == {
        "/healthbank.audit.v1.AuditService/GetTreeHead",
        "/healthbank.audit.v1.AuditService/GetConsistencyProof",
    }
    assert refusal("/healthbank.audit.v1.AuditService/GetTreeHead", None) is None
    missing = refusal("/healthbank.audit.v1.AuditService/GetInclusionProof", None)
    assert missing is not None and missing.reason == "CREDENTIALS_REQUIRED"


def test_missing_credentials_are_unauthenticated_and_other_refusals_permission_denied() -> None:
    with pytest.raises(ServiceError) as anonymous:
        check_call(SUBMIT, None)
    assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ServiceError) as clinician:
        check_call(SUBMIT, Principal(PrincipalKind.CLINICIAN, "dr-1", "hospital-a"))
    assert clinician.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert clinician.value.reason == "PRINCIPAL_KIND_NOT_ALLOWED"


def test_a_service_is_admitted_only_where_the_call_graph_has_it() -> None:
    resolve = "/healthbank.identity.v1.IdentityService/Resolve"
    assert refusal(resolve, Principal(PrincipalKind.SERVICE, "ingest")) is None
    refused = refusal(resolve, Principal(PrincipalKind.SERVICE, "record-lookup"))
    assert refused is not None and refused.reason == "SERVICE_NOT_ALLOWED"


def test_an_engine_submits_only_its_own_hospitals_messages_per_message() -> None:
    check = check_call(SUBMIT, ENGINE_A)
    assert check is not None
    check(ingest_pb2.SubmitRequest(hospital_id="hospital-a"))
    check(ingest_pb2.SubmitRequest())  # unset: the servicer names the field instead
    with pytest.raises(ServiceError) as other:
        check(ingest_pb2.SubmitRequest(hospital_id="hospital-b"))
    assert (other.value.code, other.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "HOSPITAL_MISMATCH",
    )
    assert "hospital-b" not in str(other.value) and "hospital-a" not in str(other.value)


def test_an_engine_without_a_hospital_is_refused_before_any_message() -> None:
    with pytest.raises(ServiceError) as unbound:
        check_call(SUBMIT, Principal(PrincipalKind.HOSPITAL_ENGINE, "stray"))
    assert unbound.value.reason == "HOSPITAL_REQUIRED"


def test_a_patient_manages_only_their_own_grants() -> None:
    patient = Principal(PrincipalKind.PATIENT, PERSON)
    check = check_call(CREATE_GRANT, patient)
    assert check is not None
    check(consent_pb2.CreateGrantRequest(parent=f"persons/{PERSON}"))
    with pytest.raises(ServiceError) as other:
        check(consent_pb2.CreateGrantRequest(parent=f"persons/{OTHER_PERSON}"))
    assert other.value.reason == "NOT_DATA_SUBJECT"
    assert OTHER_PERSON not in str(other.value)
    revoke = "/healthbank.consent.v1.ConsentService/RevokeGrant"
    name = f"persons/{OTHER_PERSON}/grants/01HZY0000000000000000000AB"
    refused = refusal(revoke, patient, consent_pb2.RevokeGrantRequest(name=name))
    assert refused is not None and refused.reason == "NOT_DATA_SUBJECT"


@pytest.mark.parametrize(
    "kind", [PrincipalKind.SERVICE, PrincipalKind.HOSPITAL_ENGINE, PrincipalKind.CLINICIAN]
)
def test_consent_grants_are_not_created_by_services_engines_or_clinicians(
    kind: PrincipalKind,
) -> None:
    caller = Principal(kind, "record-lookup", "hospital-a")
    assert refusal(CREATE_GRANT, caller) is not None


def test_the_checked_in_document_is_the_generated_one() -> None:
    checked_in = (REPO / "docs" / "authorization.md").read_text()
    assert checked_in == authorization_markdown(), "run python tools/authz_doc.py"


def test_the_doc_command_writes_the_table_and_check_fails_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = load_script(REPO / "tools" / "authz_doc.py", "authz_doc")
    doc = tmp_path / "authorization.md"
    monkeypatch.setattr(tool, "DOC", doc)
    doc.write_text("# stale\n")
    assert tool.main(["--check"]) == 1
    assert tool.main([]) == 0
    assert doc.read_text() == authorization_markdown()
    assert tool.main(["--check"]) == 0


def test_services_calling_follows_the_call_graph() -> None:
    assert services_calling("identity") == {"ingest", "record-lookup"}
    assert services_calling("archive") >= {"ingest", "record-lookup"}
    assert services_calling("ingest") == frozenset()  # only hospital engines submit
