//! Tuple platform names (filled in by the saifile work).
