//! Moving clients' sessions off a daemon: ending the load balancer's TCP connections to it.
//!
//! A miner (lotus-miner, boost, curio) holds one websocket for hours, and nginx pins it to the
//! daemon chosen when it was opened. After a reload, the old workers keep serving it until
//! `worker_shutdown_timeout`: the miner stays on a stalled daemon that chain-co has already
//! left. Destroying nginx's upstream connection to that daemon makes nginx close the client's
//! side; the miner reconnects at once and lands on the new primary.
//!
//! The kernel does this through netlink `SOCK_DESTROY` (what `ss -K` does): dump the TCP
//! sockets whose peer is the daemon's address, keep those owned by nginx's workers, destroy each
//! by its exact id. It needs `CAP_NET_ADMIN` and a kernel built with `CONFIG_INET_DIAG_DESTROY`;
//! without either the caller falls back to `worker_shutdown_timeout` and says so
//! ([`DestroyError::NotPermitted`], [`DestroyError::Unsupported`]).
//!
//! Only sockets of nginx's own cgroup are touched: the kernel reports each socket's cgroup v2
//! id (`INET_DIAG_CGROUP_ID`), and `/proc/<nginx master>/cgroup` names nginx's cgroup. A
//! direct client of the daemon, whatever user it runs as, is never cut. Under systemd nginx has
//! a cgroup of its own (`nginx.service`); when its cgroup cannot be found or holds other
//! processes too (nginx not started as a unit of its own), no session is moved at all
//! ([`nginx_process`] says why). chain-co's own sockets (its probes and subscriptions) are
//! skipped by inode in any case. Reading a cgroup needs no privilege beyond `CAP_NET_ADMIN`
//! for the destroy, and no ptrace (unlike reading `/proc/PID/fd` of another user).
//!
//! Layouts: linux/netlink.h (`nlmsghdr`), linux/inet_diag.h (`inet_diag_req_v2`,
//! `inet_diag_msg`), linux/sock_diag.h (`SOCK_DIAG_BY_FAMILY` 20, `SOCK_DESTROY` 21).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;
/// TCP states worth ending: established, SYN_SENT (a connect in progress), CLOSE_WAIT. Not
/// listeners, and not TIME_WAIT (nothing left to end).
const STATES: u32 = (1 << 1) | (1 << 2) | (1 << 8);
const HEADER: usize = std::mem::size_of::<NlMsgHdr>();

/// `struct nlmsghdr` (linux/netlink.h).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid` (linux/inet_diag.h): ports and addresses in network order, kept
/// as the kernel sent them so a destroy names exactly the socket the dump reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct DiagRequest {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct inet_diag_msg`: what the dump says of one socket; attributes follow it.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct DiagMessage {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// A request as one datagram: the header, then the `inet_diag_req_v2`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct DiagDatagram {
    header: NlMsgHdr,
    request: DiagRequest,
}
/// `CAP_NET_ADMIN` (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestroyError {
    #[error("not permitted to destroy sockets (needs CAP_NET_ADMIN)")]
    NotPermitted,
    #[error("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY is off)")]
    Unsupported,
    /// The netlink exchange itself failed: what was being done, and the kernel's errno when
    /// there is one.
    #[error("netlink sock_diag: {doing}")]
    Netlink {
        doing: &'static str,
        #[source]
        errno: Option<Errno>,
    },
    #[error("the kernel does not report sockets' cgroups (INET_DIAG_CGROUP_ID)")]
    NoCgroups,
}

/// Whose connections may be ended: the sockets of one cgroup v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owners {
    /// The cgroup id (the inode of its directory in the cgroup2 mount).
    pub cgroup: u64,
}

/// `INET_DIAG_CGROUP_ID` (linux/inet_diag.h): a socket's cgroup v2 id, reported by the dump.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// One TCP socket as the kernel's dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DiagSocket {
    family: u8,
    /// The `inet_diag_sockid`, handed back as is to destroy exactly this socket.
    id: SockId,
    peer: SocketAddr,
    inode: u32,
    /// `None`: the kernel did not report it.
    cgroup: Option<u64>,
}

/// Whether this process holds `CAP_NET_ADMIN` in its effective set, from /proc/self/status.
pub(crate) fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Ends every TCP connection to `peer` owned by `owners`, except this process's own. Returns
/// how many were ended. Blocking (netlink round trips of a few milliseconds): call it from
/// `spawn_blocking`.
pub(crate) fn destroy_connections_to(
    peer: SocketAddr,
    owners: &Owners,
) -> Result<usize, DestroyError> {
    let fd = open()?;
    let family = match peer.ip() {
        IpAddr::V4(_) => libc_af(AddressFamily::Inet),
        IpAddr::V6(_) => libc_af(AddressFamily::Inet6),
    };
    let found = dump(&fd, family)?;
    // Read after the dump: any socket of ours in the dump is still open now, or already gone.
    let ours = own_socket_inodes();
    let mut ended = 0;
    for s in found.iter().filter(|s| same_peer(s.peer, peer)) {
        if ours.contains(&s.inode) {
            continue;
        }
        match s.cgroup {
            Some(c) if c == owners.cgroup => {}
            Some(_) => continue,
            None => return Err(DestroyError::NoCgroups),
        }
        match destroy(&fd, s) {
            Ok(()) => ended += 1,
            // Closed between the dump and now: nothing left to end.
            Err(DestroyError::Netlink { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ended)
}

/// An IPv4 daemon may be reached through an IPv4-mapped IPv6 socket too.
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

fn libc_af(f: AddressFamily) -> u8 {
    f as i32 as u8
}

fn netlink(doing: &'static str, errno: Errno) -> DestroyError {
    DestroyError::Netlink {
        doing,
        errno: Some(errno),
    }
}

fn open() -> Result<OwnedFd, DestroyError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(|e| netlink("cannot open a netlink socket", e))?;
    // No reply may hold the loop: the kernel answers at once, or something is badly wrong.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0))
        .map_err(|e| netlink("cannot set a receive timeout", e))?;
    Ok(fd)
}

fn request(kind: u16, flags: u16, seq: u32, family: u8, states: u32, id: SockId) -> Vec<u8> {
    let datagram = DiagDatagram {
        header: NlMsgHdr {
            len: std::mem::size_of::<DiagDatagram>() as u32,
            kind,
            flags,
            seq,
            pid: 0,
        },
        request: DiagRequest {
            family,
            protocol: IPPROTO_TCP,
            ext: 0,
            pad: 0,
            states,
            id,
        },
    };
    datagram.as_bytes().to_vec()
}

fn send(fd: &OwnedFd, msg: &[u8]) -> Result<(), DestroyError> {
    sendto(
        fd.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map(|_| ())
    .map_err(|e| netlink("send", e))
}

/// Calls `each(type, payload)` for every message of the replies until `NLMSG_DONE`, an error
/// message, or (`single`) the first datagram.
fn receive(
    fd: &OwnedFd,
    single: bool,
    mut each: impl FnMut(u16, &[u8]) -> Result<bool, DestroyError>,
) -> Result<(), DestroyError> {
    let mut buf = vec![0u8; 64 * 1024];
    // A dump of a busy host is many datagrams; bound it anyway.
    for _ in 0..10_000 {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(e @ Errno::EAGAIN) => return Err(netlink("no answer within 2s", e)),
            Err(e) => return Err(netlink("recv", e)),
        };
        let mut off = 0;
        while off + HEADER <= n {
            let Ok((header, _)) = NlMsgHdr::read_from_prefix(&buf[off..n]) else {
                break;
            };
            let (len, kind) = (header.len as usize, header.kind);
            if len < HEADER || off + len > n {
                return Err(DestroyError::Netlink {
                    doing: "malformed netlink message",
                    errno: None,
                });
            }
            if kind == NLMSG_DONE {
                return Ok(());
            }
            if !each(kind, &buf[off + HEADER..off + len])? {
                return Ok(());
            }
            // Messages are aligned to 4 bytes.
            off += (len + 3) & !3;
        }
        if single {
            return Ok(());
        }
    }
    Err(DestroyError::Netlink {
        doing: "the socket dump did not end",
        errno: None,
    })
}

fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

fn dump(fd: &OwnedFd, family: u8) -> Result<Vec<DiagSocket>, DestroyError> {
    send(
        fd,
        &request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            family,
            STATES,
            SockId::new_zeroed(),
        ),
    )?;
    let mut out = Vec::new();
    receive(fd, false, |kind, payload| {
        match kind {
            NLMSG_ERROR => {
                let e = errno_of(payload);
                return Err(netlink("dump refused", Errno::from_raw(-e)));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(s) = parse_diag(payload) {
                    out.push(s);
                }
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(out)
}

fn parse_diag(p: &[u8]) -> Option<DiagSocket> {
    let (msg, attrs) = DiagMessage::read_from_prefix(p).ok()?;
    let dst = msg.id.dst;
    let ip = if msg.family == libc_af(AddressFamily::Inet) {
        IpAddr::from([dst[0], dst[1], dst[2], dst[3]])
    } else {
        IpAddr::from(dst)
    };
    Some(DiagSocket {
        family: msg.family,
        id: msg.id,
        peer: SocketAddr::new(ip, u16::from_be_bytes(msg.id.dport)),
        inode: msg.inode,
        cgroup: attribute(attrs, INET_DIAG_CGROUP_ID)
            .and_then(|v| u64::read_from_prefix(v).ok())
            .map(|(id, _)| id),
    })
}

/// The payload of the netlink attribute `kind` among `attrs` (each `u16 len, u16 type, data`,
/// aligned to 4 bytes).
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == kind {
            return Some(&attrs[4..len]);
        }
        let next = ((len + 3) & !3).min(attrs.len());
        attrs = &attrs[next..];
    }
    None
}

/// nginx's master and the cgroup it runs in, when nginx has a cgroup of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NginxProcess {
    pub master: u32,
    pub cgroup: u64,
    /// The cgroup's path, as `/proc/PID/cgroup` names it.
    pub cgroup_path: String,
}

/// Finds nginx's cgroup from its master's pid: the cgroup v2 line of `/proc/PID/cgroup`, in
/// the cgroup2 mount. `Err` says why sessions cannot be moved safely: no cgroup v2, nginx in
/// the root cgroup, or a cgroup that holds processes other than nginx's.
pub(crate) fn nginx_process(master: u32) -> Result<NginxProcess, String> {
    let own = std::fs::read_to_string(format!("/proc/{master}/cgroup"))
        .map_err(|e| format!("cannot read nginx's cgroup (pid {master}): {e}"))?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("nginx has no cgroup v2 (the host has no unified cgroup hierarchy)")?
        .to_string();
    if path == "/" {
        return Err("nginx runs in the root cgroup, not in a unit of its own".into());
    }
    let mount = cgroup2_mount().ok_or("no cgroup2 file system is mounted")?;
    let dir = mount.join(path.trim_start_matches('/'));
    let meta = std::fs::metadata(&dir)
        .map_err(|e| format!("cannot read nginx's cgroup {}: {e}", dir.display()))?;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map_err(|e| format!("cannot read {}/cgroup.procs: {e}", dir.display()))?;
    let stranger = procs
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|&p| p != master && !descends_from(p, master));
    if let Some(p) = stranger {
        return Err(format!(
            "nginx's cgroup {path} holds other processes too (pid {p}): nginx was not started as a unit of its own"
        ));
    }
    use std::os::unix::fs::MetadataExt;
    Ok(NginxProcess {
        master,
        cgroup: meta.ino(),
        cgroup_path: path,
    })
}

/// The first cgroup2 mount (`/sys/fs/cgroup` on a unified layout, `/sys/fs/cgroup/unified` on
/// a hybrid one), from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))
            .flatten()
    })
}

/// Whether `pid`'s parent chain reaches `ancestor` (nginx's workers, cache loader, ...).
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..16 {
        let Some(parent) = parent_of(p) else {
            return false;
        };
        if parent == ancestor {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        p = parent;
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then the parent's pid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn destroy(fd: &OwnedFd, s: &DiagSocket) -> Result<(), DestroyError> {
    send(
        fd,
        &request(
            SOCK_DESTROY,
            NLM_F_REQUEST | NLM_F_ACK,
            2,
            s.family,
            !0,
            s.id,
        ),
    )?;
    let mut result = Err(DestroyError::Netlink {
        doing: "no acknowledgement",
        errno: None,
    });
    receive(fd, true, |kind, payload| {
        if kind == NLMSG_ERROR {
            result = match errno_of(payload) {
                0 => Ok(()),
                e => Err(match Errno::from_raw(-e) {
                    Errno::EPERM | Errno::EACCES => DestroyError::NotPermitted,
                    Errno::EOPNOTSUPP => DestroyError::Unsupported,
                    other => netlink("destroy refused", other),
                }),
            };
            return Ok(false);
        }
        Ok(true)
    })?;
    result
}

/// The inodes of this process's sockets, from /proc/self/fd.
fn own_socket_inodes() -> HashSet<u32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The child processes of `pid` (nginx's workers, for its master), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process's title (nginx sets "nginx: worker process is shutting down" on old workers).
pub fn title(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_string(),
    )
}

/// How long to wait for a reload to take effect before moving sessions anyway.
pub(crate) const RELOAD_SETTLE: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn peers_match_across_mapped_addresses() {
        let v4: SocketAddr = "127.0.0.1:1234".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1234".parse().expect("addr");
        assert!(same_peer(v4, mapped));
        assert!(!same_peer(v4, "127.0.0.1:1235".parse().expect("addr")));
    }

    #[test]
    fn request_layout_matches_the_kernel_structs() {
        // The sizes of linux/netlink.h and linux/inet_diag.h on every Linux ABI.
        assert_eq!(std::mem::size_of::<NlMsgHdr>(), 16);
        assert_eq!(std::mem::size_of::<SockId>(), 48);
        assert_eq!(std::mem::size_of::<DiagRequest>(), 56);
        assert_eq!(std::mem::size_of::<DiagMessage>(), 72);
        let id = SockId::read_from_bytes(&[9; 48]).expect("48 bytes");
        let r = request(SOCK_DESTROY, NLM_F_REQUEST, 7, 2, STATES, id);
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().expect("4")), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().expect("2")), 21);
        assert_eq!(r[16], 2);
        assert_eq!(r[17], IPPROTO_TCP);
        assert_eq!(&r[24..], &[9; 48]);
    }

    fn own_cgroup_id() -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
        let dir = cgroup2_mount()?.join(path.trim_start_matches('/'));
        Some(std::fs::metadata(dir).ok()?.ino())
    }

    #[test]
    fn attributes_are_found_by_type_past_others() {
        let mut attrs = Vec::new();
        attrs.extend(6u16.to_ne_bytes());
        attrs.extend(3u16.to_ne_bytes());
        attrs.extend([1, 2, 0, 0]);
        attrs.extend(12u16.to_ne_bytes());
        attrs.extend(INET_DIAG_CGROUP_ID.to_ne_bytes());
        attrs.extend(77u64.to_ne_bytes());
        let v = attribute(&attrs, INET_DIAG_CGROUP_ID).expect("found");
        assert_eq!(u64::from_ne_bytes(v.try_into().expect("8")), 77);
        assert_eq!(attribute(&attrs, 9), None);
        assert_eq!(attribute(&[200, 0, 1, 0], 1), None, "a length past the end");
    }

    /// Ends a connection held by a thread of this test: as root (CI) it must be cut; without
    /// CAP_NET_ADMIN the error says so. Our own sockets are skipped, so the connection is made
    /// by a child process.
    #[test]
    fn ends_a_connection_to_a_peer_or_says_why_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer = listener.local_addr().expect("addr");
        // A child process holds the client side, so that it is not one of our own sockets.
        let mut child = std::process::Command::new("bash")
            .args([
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/127.0.0.1/{}; echo up; cat <&3; echo closed",
                    peer.port()
                ),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("bash runs");
        let child = &mut child;
        let (_server_side, _) = listener.accept().expect("accept");
        let mut out = child.stdout.take().expect("stdout");
        let mut first = [0u8; 3];
        out.read_exact(&mut first).expect("up");
        // Our own connection to the same peer must survive.
        let mine = TcpStream::connect(peer).expect("connect");
        let (_mine_server, _) = listener.accept().expect("accept");
        let cgroup = own_cgroup_id().expect("a cgroup v2 (CI's hosts have one)");
        match destroy_connections_to(peer, &Owners { cgroup }) {
            Ok(n) => {
                assert_eq!(n, 1, "exactly the child's connection");
                let mut rest = String::new();
                out.read_to_string(&mut rest).expect("read");
                assert!(rest.contains("closed"), "{rest}");
                mine.set_nonblocking(true).expect("nonblocking");
                let mut b = [0u8; 1];
                assert!(
                    matches!((&mine).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                    "our own socket is untouched"
                );
            }
            Err(e) => {
                assert!(!has_net_admin(), "with CAP_NET_ADMIN it must work: {e}");
                assert_eq!(e, DestroyError::NotPermitted);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
