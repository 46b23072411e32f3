//! sai-expect library.
