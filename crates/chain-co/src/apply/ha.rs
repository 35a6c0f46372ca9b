//! The VRRP role of this host, when chain-co runs in a keepalived pair.
//!
//! Both hosts of a pair keep their own nginx current, so that the backup is ready the moment
//! it takes the virtual IP. Anything that changes *shared* state — a cloud load balancer — must
//! be done by the master alone: [`VrrpRole::may_change_shared_state`] is the gate, read fresh every
//! round so that a host that loses the VIP stops writing at once.
//!
//! The role comes from the file keepalived's notify script writes
//! (`deploy/keepalived/notify-role.sh`), or from whether the VIP is on one of this host's
//! interfaces.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the role is learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleSource {
    /// A file holding MASTER, BACKUP, FAULT or STOP.
    File(PathBuf),
    /// Master when this address is on an interface of this host.
    Vip(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VrrpRole {
    Master,
    Backup,
    Fault,
    Stop,
    /// The source could not be read: treated as not master.
    Unknown,
}

impl fmt::Display for VrrpRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VrrpRole::Master => "master",
            VrrpRole::Backup => "backup",
            VrrpRole::Fault => "fault",
            VrrpRole::Stop => "stop",
            VrrpRole::Unknown => "unknown",
        })
    }
}

impl VrrpRole {
    /// Only the master writes to shared targets; when in doubt, a host does not.
    pub(crate) fn may_change_shared_state(&self) -> bool {
        *self == VrrpRole::Master
    }

    fn parse(text: &str) -> VrrpRole {
        match text.trim().to_ascii_uppercase().as_str() {
            "MASTER" => VrrpRole::Master,
            "BACKUP" => VrrpRole::Backup,
            "FAULT" => VrrpRole::Fault,
            "STOP" => VrrpRole::Stop,
            _ => VrrpRole::Unknown,
        }
    }
}

/// Reads the role now.
pub(crate) fn read_role(source: &RoleSource) -> VrrpRole {
    match source {
        RoleSource::File(path) => std::fs::read_to_string(path)
            .map(|t| VrrpRole::parse(&t))
            .unwrap_or(VrrpRole::Unknown),
        RoleSource::Vip(vip) => match nix::ifaddrs::getifaddrs() {
            Ok(addrs) => {
                let held = addrs.filter_map(|a| a.address).any(|a| {
                    a.as_sockaddr_in()
                        .map(|s| IpAddr::V4(s.ip()) == *vip)
                        .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip()) == *vip))
                        .unwrap_or(false)
                });
                if held {
                    VrrpRole::Master
                } else {
                    VrrpRole::Backup
                }
            }
            Err(_) => VrrpRole::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notify_file_names_the_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("role");
        let src = RoleSource::File(path.clone());
        assert_eq!(read_role(&src), VrrpRole::Unknown, "no file yet");
        for (text, role) in [
            ("MASTER\n", VrrpRole::Master),
            ("BACKUP", VrrpRole::Backup),
            ("FAULT", VrrpRole::Fault),
            ("garbage", VrrpRole::Unknown),
        ] {
            std::fs::write(&path, text).expect("write");
            assert_eq!(read_role(&src), role, "{text}");
        }
        assert!(VrrpRole::Master.may_change_shared_state());
        assert!(!VrrpRole::Unknown.may_change_shared_state());
    }

    #[test]
    fn the_vip_on_an_interface_means_master() {
        assert_eq!(
            read_role(&RoleSource::Vip("127.0.0.1".parse().expect("ip"))),
            VrrpRole::Master
        );
        assert_eq!(
            read_role(&RoleSource::Vip("192.0.2.77".parse().expect("ip"))),
            VrrpRole::Backup
        );
    }
}
