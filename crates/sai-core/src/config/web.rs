//! Config types: web (filled in by its owner).
