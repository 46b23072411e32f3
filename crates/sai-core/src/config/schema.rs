//! Schema generation for every config kind.
