//! Sans-I/O core of Sai.
//!
//! Everything here works on byte slices and values handed in by callers: no
//! tokio, no sockets, no filesystem. The daemons own I/O and call into this
//! crate for formats, matrix expansion, platform matching, the builder
//! protocol and config types.

pub mod api;
pub mod artifact_name;
pub mod config;
pub mod jsonc;
pub mod junit;
pub mod notification;
pub mod percent;
pub mod platform;
pub mod protocol;
pub mod refname;
pub mod saifile;
pub mod secret;
pub mod task;
