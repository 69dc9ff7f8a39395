"""The witness: an outside keeper of the audit log's signed tree heads (``healthbank witness``).

It runs as its own process with its own SQLite store and Ed25519 key, and knows the audit
service only over gRPC (the public ``GetTreeHead`` and ``GetConsistencyProof``).
``judge`` holds the rules, ``store`` the heads it co-signed and the alarms it raised,
``runner`` the schedule.
"""
