//! Config types: server (filled in by its owner).
