//! Config types: device (filled in by its owner).
