//! `sai rack plan`: what each member of the rack becomes, in words.

use std::fmt::Write;

use sai_core::config::rack::RackConfig;

use super::cache::{Cache, base_image, rootfs_key};
use super::render::cache_note;
use super::spec::{describe, unit_name};

/// The plan as text, one block per member.
pub fn plan(rack: &RackConfig, cache: &Cache) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rack {}", rack.name);
    let daemons = [
        (rack.server.as_ref()).map(|s| ("server", &s.name, s.runs, &s.config.listen)),
        (rack.web.as_ref()).map(|w| ("web", &w.name, w.runs, &w.config.listen)),
    ];
    for (role, name, runs, listen) in daemons.into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {role} {name} ({}): sai-{role} listening on {listen}",
            runs.name()
        );
    }
    for b in &rack.builders {
        let _ = writeln!(
            out,
            "  builder {} ({}): {}",
            b.name,
            b.runs.name(),
            describe(b)
        );
        if let Some(key) = rootfs_key(b) {
            let _ = writeln!(
                out,
                "    root filesystem {key}: debootstrap --variant=minbase --include={}",
                b.rootfs_packages().join(",")
            );
            if let Some(tree) = cache_note(cache, b) {
                let _ = writeln!(out, "      at {}", tree.display());
            }
            if b.runs == sai_core::config::rack::Runs::Oci {
                let _ = writeln!(
                    out,
                    "    image localhost/{}:latest from {}",
                    unit_name(rack, &b.name),
                    base_image(&key)
                );
            }
        }
        for p in &b.platforms {
            let servers: Vec<&str> = p.servers.iter().map(|s| s.url.as_str()).collect();
            let _ = writeln!(
                out,
                "    platform {} x{} -> {}",
                p.name,
                p.instances,
                servers.join(", ")
            );
        }
        for d in &b.devices {
            let ttys: Vec<&str> = d.ttys.iter().map(|t| t.tty.as_str()).collect();
            let _ = writeln!(
                out,
                "    device {} ({}): {}",
                d.name,
                d.device_type,
                ttys.join(", ")
            );
        }
    }
    out
}
