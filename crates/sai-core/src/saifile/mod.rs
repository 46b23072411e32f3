//! `.sai.json` parsing and task expansion (filled in by the saifile work).
