//! Config types: builder (filled in by its owner).
