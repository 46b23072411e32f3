//! sai-builder library.
