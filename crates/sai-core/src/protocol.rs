//! Builder <-> server protocol (filled in by the sai-server work).
