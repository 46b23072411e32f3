//! sai-jig library.
