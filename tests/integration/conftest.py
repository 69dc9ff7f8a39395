"""The integration tests: the project's own pieces against the real engines (Redis cache,
the engines themselves) and the gRPC server's lifecycle as a real process.

Everything they share comes from tests/conftest.py (``engines``, ``engines_tool``,
``openbao``, ``vault_root``, ``keyspace_prefix``) and the support modules there
(engine_support.py, repo_paths.py); lifecycle_server.py beside this file is the server
process test_server_lifecycle.py starts. This folder adds no fixtures of its own.
"""
