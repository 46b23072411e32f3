//! sai-device library.
