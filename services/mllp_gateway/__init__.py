"""The MLLP gateway: HL7 v2 over MLLP in front of ingest, for engines that speak only MLLP.

It is a gRPC client of ingest (never imports ingest's code): each framed message is
submitted as the configured hospital's HOSPITAL_ENGINE principal and ingest's HL7 ACK is
written back framed. See docs/adr/0015-hl7v2-tolerance-ack-mllp-dicom.md.
"""
