"""The emergency value sets: which coded facts colour the light and fill the summary's lists.

One source of truth: the tables below. ``docs/value-sets.md`` is generated from them
(``python -m services.record_lookup.value_sets > docs/value-sets.md``; a test fails when it
is stale), so a clinician reviews exactly what the code applies.

Codes are matched on the terminology (``healthbank.contracts.terminology``: a FHIR URI or an
HL7 v2 name for the same system both match) and the code; ICD-10 and ATC entries marked
``prefix`` match every code below that stem (``I21`` matches ``I21.4``; dots ignored).

Pure data and functions: no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from healthbank.contracts.terminology import (
    ATC,
    ICD10,
    ICD10_CN,
    ICD10_PCS,
    RXNORM,
    SNOMED_CT,
    TERMINOLOGIES,
    canonical_system,
)

# ICD-10-CN shares the WHO stems: a WHO-edition entry also matches the Chinese edition.
_SAME_STEMS = {ICD10_CN: ICD10}


@dataclass(frozen=True)
class Concept:
    """One entry of a value set: a code of a terminology (canonical URI), its name, and
    whether it matches as a stem."""

    system: str
    code: str
    display: str
    prefix: bool = False

    def matches(self, system: str, code: str) -> bool:
        """Tell whether a canonical ``system`` and ``code`` fall under this entry."""
        if system != self.system:
            return False
        if self.prefix:
            return _normalized(code).startswith(_normalized(self.code))
        return code.strip() == self.code


@dataclass(frozen=True)
class ValueSet:
    """A reviewed list of concepts with what it is for."""

    name: str
    title: str
    purpose: str
    concepts: tuple[Concept, ...]

    def contains(self, system: str, code: str) -> bool:
        """Tell whether a stored (system, code) is in the set, whatever name the system had."""
        if not code:
            return False
        canonical = canonical_system(system)
        canonical = _SAME_STEMS.get(canonical, canonical)
        return any(concept.matches(canonical, code) for concept in self.concepts)

    def covers(self, system: str) -> bool:
        """Tell whether the set lists any code of ``system``'s terminology."""
        canonical = canonical_system(system)
        canonical = _SAME_STEMS.get(canonical, canonical)
        return any(concept.system == canonical for concept in self.concepts)


def _normalized(code: str) -> str:
    return code.replace(".", "").strip().upper()


def _sct(code: str, display: str) -> Concept:
    return Concept(SNOMED_CT, code, display)


def _icd10(stem: str, display: str) -> Concept:
    return Concept(ICD10, stem, display, prefix=True)


CRITICAL_CONDITIONS = ValueSet(
    "critical-conditions",
    "Critical conditions",
    "An active condition in this set makes the light RED: each changes what an emergency "
    "team does in the first minutes.",
    (
        _sct("57054005", "Acute myocardial infarction (disorder)"),
        _sct("401303003", "Acute ST segment elevation myocardial infarction (disorder)"),
        _sct("401314000", "Acute non-ST segment elevation myocardial infarction (disorder)"),
        _sct("22298006", "Myocardial infarction (disorder)"),
        _sct("410429000", "Cardiac arrest (disorder)"),
        _sct("84757009", "Epilepsy (disorder)"),
        _sct("128613002", "Seizure disorder (disorder)"),
        _sct("46635009", "Diabetes mellitus type 1 (disorder)"),
        _sct("28293008", "Hereditary factor VIII deficiency disease (haemophilia A) (disorder)"),
        _sct("1563006", "Hereditary factor IX deficiency disease (haemophilia B) (disorder)"),
        _sct("441509002", "Cardiac pacemaker in situ (finding)"),
        _sct("230690007", "Cerebrovascular accident (disorder)"),
        _sct("91302008", "Sepsis (disorder)"),
        _sct("27942005", "Shock (disorder)"),
        _sct("39579001", "Anaphylaxis (disorder)"),
        _sct("46177005", "End-stage renal disease (disorder)"),
        _icd10("I21", "Acute myocardial infarction"),
        _icd10("I22", "Subsequent myocardial infarction"),
        _icd10("I46", "Cardiac arrest"),
        _icd10("E10", "Type 1 diabetes mellitus (insulin dependent)"),
        _icd10("G40", "Epilepsy"),
        _icd10("G41", "Status epilepticus"),
        _icd10("D66", "Hereditary factor VIII deficiency (haemophilia A)"),
        _icd10("D67", "Hereditary factor IX deficiency (haemophilia B)"),
        _icd10("Z95.0", "Presence of cardiac pacemaker"),
        _icd10("Z95.81", "Presence of other cardiac implants (ICD-10-CM: defibrillator)"),
        _icd10("I63", "Cerebral infarction"),
        _icd10("A41", "Other sepsis"),
        _icd10("R57", "Shock, not elsewhere classified"),
        _icd10("T78.2", "Anaphylactic shock, unspecified"),
        _icd10("N18.6", "End stage renal disease (ICD-10-CM)"),
        _icd10("Z79.01", "Long term (current) use of anticoagulants (ICD-10-CM)"),
    ),
)

SOCIAL_AND_ADMINISTRATIVE = ValueSet(
    "social-and-administrative",
    "Social and administrative findings",
    "Conditions in this set are about a person's circumstances or the record, not their "
    "health now: never listed among the summary's conditions, never colour the light.",
    (
        _sct("160903007", "Full-time employment (finding)"),
        _sct("160904001", "Part-time employment (finding)"),
        _sct("73438004", "Unemployed (finding)"),
        _sct("741062008", "Not in labor force (finding)"),
        _sct("224295006", "Only received primary school education (finding)"),
        _sct("224299000", "Received higher education (finding)"),
        _sct("5251000175109", "Received certificate of high school equivalency (finding)"),
        _sct("224355006", "Served in armed forces (finding)"),
        _sct("266948004", "Has a criminal record (finding)"),
        _sct("706893006", "Victim of intimate partner abuse (finding)"),
        _sct("424393004", "Reports of violence in the environment (finding)"),
        _sct("422650009", "Social isolation (finding)"),
        _sct("423315002", "Limited social contact (finding)"),
        _sct("73595000", "Stress (finding)"),
        _sct("105531004", "Housing unsatisfactory (finding)"),
        _sct("266934004", "Transport problem (finding)"),
        _sct("713458007", "Lack of access to transportation (finding)"),
        _sct("446654005", "Refugee (person)"),
        _sct("160968000", "Risk activity involvement (finding)"),
        _sct("314529007", "Medication review due (situation)"),
        _sct("876882001", "Died in hospice (finding)"),
        _icd10("Z55", "Problems related to education and literacy"),
        _icd10("Z56", "Problems related to employment and unemployment"),
        _icd10("Z59", "Problems related to housing and economic circumstances"),
        _icd10("Z60", "Problems related to social environment"),
        _icd10("Z62", "Problems related to upbringing"),
        _icd10("Z63", "Other problems related to primary support group"),
        _icd10("Z64", "Problems related to certain psychosocial circumstances"),
        _icd10("Z65", "Problems related to other psychosocial circumstances"),
    ),
)

SURGICAL_PROCEDURES = ValueSet(
    "surgical-procedures",
    "Surgical procedures",
    "A procedure coded in SNOMED CT or ICD-10-PCS is listed among the summary's surgeries "
    "only when it is in this set (screenings, assessments, tests, dental cleaning, "
    "education and referrals are not surgeries). A procedure coded in any other system, or "
    "as text only, is listed: an unknown past operation is worth a look.",
    (
        _sct("80146002", "Appendectomy (procedure)"),
        _sct("45595009", "Laparoscopic cholecystectomy (procedure)"),
        _sct("38102005", "Cholecystectomy (procedure)"),
        _sct("232717009", "Coronary artery bypass grafting (procedure)"),
        _sct("63697000", "Cardiopulmonary bypass operation (procedure)"),
        _sct("359672006", "Median sternotomy (procedure)"),
        _sct("415070008", "Percutaneous coronary intervention (procedure)"),
        _sct("433112001", "Percutaneous mechanical thrombectomy of portal vein (procedure)"),
        _sct("70536003", "Transplant of kidney (procedure)"),
        _sct("90470006", "Prostatectomy (procedure)"),
        _sct("65575008", "Biopsy of prostate (procedure)"),
        _sct("274031008", "Rectal polypectomy (procedure)"),
        _sct("609588000", "Total knee replacement (procedure)"),
        _sct("52734007", "Total replacement of hip (procedure)"),
        _sct("11466000", "Cesarean section (procedure)"),
        _sct("236886002", "Hysterectomy (procedure)"),
        _sct("392021009", "Lumpectomy of breast (procedure)"),
        _sct("69031006", "Excision of breast tissue (procedure)"),
        _sct("307280005", "Implantation of cardiac pacemaker (procedure)"),
        _sct("34068001", "Heart valve replacement (procedure)"),
        Concept(ICD10_PCS, "0", "ICD-10-PCS section 0: Medical and Surgical", prefix=True),
    ),
)

ANAPHYLAXIS_CLASS_ALLERGENS = ValueSet(
    "anaphylaxis-class-allergens",
    "Anaphylaxis-class allergens",
    "A current allergy to one of these makes the light RED unless the source rated its "
    "criticality low (a high criticality makes any allergy RED).",
    (
        _sct("762952008", "Peanut (substance)"),
        _sct("91935009", "Allergy to peanut (finding)"),
        _sct("442571000124108", "Tree nut (substance)"),
        _sct("735029006", "Shellfish (substance)"),
        _sct("735971005", "Fish (substance)"),
        _sct("288328004", "Bee venom (substance)"),
        _sct("111088007", "Latex (substance)"),
        _sct("764146007", "Penicillin (substance)"),
        _sct("91936005", "Allergy to penicillin (finding)"),
        _sct("39579001", "Anaphylaxis (disorder)"),
    ),
)

ANTICOAGULANTS = ValueSet(
    "anticoagulants",
    "Anticoagulants",
    "A current medication in this set makes the light RED (bleeding risk, reversal).",
    (
        Concept(RXNORM, "11289", "warfarin"),
        Concept(RXNORM, "855332", "warfarin sodium 5 MG Oral Tablet"),
        Concept(RXNORM, "1364430", "apixaban"),
        Concept(RXNORM, "1364445", "apixaban 5 MG Oral Tablet"),
        Concept(RXNORM, "1114195", "rivaroxaban"),
        Concept(RXNORM, "1232082", "rivaroxaban 20 MG Oral Tablet"),
        Concept(RXNORM, "1037042", "dabigatran etexilate"),
        Concept(RXNORM, "1599538", "edoxaban"),
        Concept(RXNORM, "5224", "heparin"),
        Concept(RXNORM, "67108", "enoxaparin"),
        Concept(ATC, "B01AA", "Vitamin K antagonists", prefix=True),
        Concept(ATC, "B01AB", "Heparin group", prefix=True),
        Concept(ATC, "B01AE", "Direct thrombin inhibitors", prefix=True),
        Concept(ATC, "B01AF", "Direct factor Xa inhibitors", prefix=True),
    ),
)

IMPLANTED_CARDIAC_DEVICES = ValueSet(
    "implanted-cardiac-devices",
    "Implanted cardiac devices",
    "An active Device of one of these types makes the light RED (no MRI, magnet response).",
    (
        _sct("14106009", "Cardiac pacemaker, device (physical object)"),
        _sct("72506001", "Implantable defibrillator, device (physical object)"),
    ),
)

VALUE_SETS: tuple[ValueSet, ...] = (
    CRITICAL_CONDITIONS,
    SOCIAL_AND_ADMINISTRATIVE,
    SURGICAL_PROCEDURES,
    ANAPHYLAXIS_CLASS_ALLERGENS,
    ANTICOAGULANTS,
    IMPLANTED_CARDIAC_DEVICES,
)


def render_markdown(value_sets: Iterable[ValueSet] = VALUE_SETS) -> str:
    """docs/value-sets.md: every value set as a table of its codes and their names."""
    titles = {terminology.uri: terminology.title for terminology in TERMINOLOGIES}
    lines = [
        "# Emergency value sets",
        "",
        "Generated from `services/record_lookup/value_sets.py` by",
        "`python -m services.record_lookup.value_sets > docs/value-sets.md`; do not edit by",
        "hand (a test fails when this page and the code differ). How the emergency light uses",
        "them: `services/record_lookup/domain.py` and [ADR 14](adr/0014-fhir-mapping-documents"
        "-directory-value-sets.md). Stems (*) match every code that starts with them.",
    ]
    for value_set in value_sets:
        lines += ["", f"## {value_set.title} (`{value_set.name}`)", "", value_set.purpose, ""]
        lines += ["| system | code | name |", "|---|---|---|"]
        for concept in value_set.concepts:
            stem = "*" if concept.prefix else ""
            system = titles.get(concept.system, concept.system)
            lines.append(f"| {system} | `{concept.code}`{stem} | {concept.display} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
