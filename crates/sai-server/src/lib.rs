//! sai-server library.
