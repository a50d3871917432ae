"""A test double of the SPIRE server/agent command line (never shipped; see tests/simulators/README.md)."""
