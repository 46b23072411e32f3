//! Config types: jig (filled in by its owner).
