//! The user and group databases read the way glibc's `files` backend reads
//! them (`/etc/passwd`, `/etc/group`), for the statically linked builds.
//!
//! A statically linked glibc program that asks for a user loads the shared
//! modules of every other service `nsswitch.conf` names (`systemd`, `sss`,
//! ...) and, with them, the shared libc, libm and ld.so: 1.6-2.7 MiB kept
//! resident by an idle builder for the rest of its life, taken from
//! whatever glibc the host has. The static builds read the files instead
//! (CONTRIBUTING.md, "Static binaries").

/// A user's name, id and primary group id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn entries(passwd: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0].is_empty() || f[0].starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

/// The first entry named `name` in passwd-format text.
pub fn user_by_name(passwd: &str, name: &str) -> Option<PasswdEntry> {
    entries(passwd).find(|e| e.name == name)
}

/// The first entry with user id `uid` in passwd-format text.
pub fn user_by_uid(passwd: &str, uid: u32) -> Option<PasswdEntry> {
    entries(passwd).find(|e| e.uid == uid)
}

/// `gid` and every group of group-format text that lists `name` as a
/// member, each once, in file order (what `getgrouplist` returns).
pub fn groups_of(group: &str, name: &str, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() == 4
            && f[3].split(',').any(|m| m.trim() == name)
            && let Ok(g) = f[2].parse()
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        broken line\n\
        ci:x:1000:1000:CI:/home/ci:/bin/sh\n\
        bad:x:notanumber:1:::\n\
        ci2:x:1000:50::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,ci\nci:x:1000:\n\
        docker:x:998:other, ci\nwheel2:x:10:ci\n";

    #[test]
    fn users_are_found_by_name_and_uid_first_match_wins() {
        assert_eq!(
            user_by_name(PASSWD, "ci"),
            Some(PasswdEntry {
                name: "ci".into(),
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(user_by_uid(PASSWD, 1000).unwrap().name, "ci");
        assert_eq!(user_by_uid(PASSWD, 0).unwrap().name, "root");
        assert_eq!(user_by_name(PASSWD, "bad"), None, "unparsable uid");
        assert_eq!(user_by_name(PASSWD, "nobody"), None);
        assert_eq!(user_by_name(PASSWD, "broken line"), None);
    }

    #[test]
    fn groups_are_the_primary_one_then_each_listing_the_user_once() {
        assert_eq!(groups_of(GROUP, "ci", 1000), vec![1000, 10, 998]);
        assert_eq!(groups_of(GROUP, "root", 0), vec![0, 10]);
        assert_eq!(groups_of(GROUP, "nobody", 65534), vec![65534]);
    }
}
