"""The ingest service: hospital messages (FHIR R4 JSON and NDJSON, HL7 v2, DICOM) into
canonical records.

Modules, from the inside out:

- :mod:`services.ingest.model`: the parsed-message types every format maps to, shared time
  and coding helpers (pure).
- :mod:`services.ingest.fhir`, :mod:`services.ingest.hl7v2`, :mod:`services.ingest.dicom`:
  one parser per wire format (pure; no gRPC).
- :mod:`services.ingest.canonical`: records, sealed-payload inputs and emergency facts from a
  parsed message (pure).
- :mod:`services.ingest.pipeline`: the intake flow against narrow ports (identity, archive,
  audit, record store, sealer); no gRPC.
- :mod:`services.ingest.store`: ingest's own store, the audit ledger of submitted messages
  and the hospitals' FHIR directories.
- :mod:`services.ingest.store_cassandra`: the same store on Cassandra.
- :mod:`services.ingest.clients`: the gRPC adapters behind the pipeline's ports.
- :mod:`services.ingest.servicer`, :mod:`services.ingest.app`: the protocol edge and the
  process bootstrap.
"""
