//! Config types: expect (filled in by its owner).
