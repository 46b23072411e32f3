//! sai-web library.
