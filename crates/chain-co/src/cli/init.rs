//! `chain-co init`: a commented configuration written from daemon addresses, so that a new
//! user's first minutes are install, `init`, `check`, `run`.
//!
//! Each address is a URL or a `FULLNODE_API_INFO` string. Every daemon is asked who it is (the
//! same first-contact calls `run` makes), which gives it a name, its implementation and the
//! network. Tokens never go into the configuration: each is written to a file of its own, mode
//! 0600, beside it, and the configuration names the file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::config::parse_api_info;
use crate::probe::rpc::{Endpoint, RpcClient, Transport};
use crate::probe::{Prober, Target};
use crate::secret::{redact_url, Secret};
use crate::text::{inert, toml_string};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} exists; chain-co init never overwrites a file (choose another --output)")]
    Exists(PathBuf),
    #[error("address {index} ({shown}) is neither a URL nor a FULLNODE_API_INFO value: {why}")]
    Address {
        index: usize,
        shown: String,
        why: String,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("give at least one daemon address")]
    NoAddress,
    #[error("--miner {0:?} is not a miner ID address (f0…, t0… on test networks)")]
    Miner(String),
    #[error("{0}")]
    Client(String),
}

/// One daemon as `init` found it.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub url: Url,
    pub token_file: Option<PathBuf>,
    pub implementation: Option<String>,
    pub network: Option<String>,
    pub version: Option<String>,
    /// Why the daemon could not be identified, when it could not.
    pub problem: Option<String>,
}

/// `--miner`, as `init` found it: the accounts `StateMinerInfo` gave on the first daemon
/// that identified itself, or why it could not tell.
#[derive(Debug, Clone)]
pub struct MinerFound {
    pub miner: String,
    pub accounts: Result<Vec<crate::apply::senders::Sender>, String>,
}

/// What `init` found and wrote.
#[derive(Debug, Clone)]
pub struct Inited {
    pub nodes: Vec<Found>,
    pub miner: Option<MinerFound>,
}

/// Parses an address: a URL (`http://host:1234/rpc/v1`, `ws://…`) or `TOKEN:/ip4/…/tcp/…/http`.
fn parse_address(index: usize, addr: &str) -> Result<(Url, Option<String>), InitError> {
    let err = |why: String| InitError::Address {
        index,
        // A FULLNODE_API_INFO usually holds a token: show only its address part.
        shown: addr
            .split_once(":/")
            .filter(|(t, _)| !t.contains("//") && !t.is_empty() && !t.starts_with("http"))
            .map_or_else(|| redact_url(addr), |(_, a)| format!("***:/{a}")),
        why,
    };
    if addr.contains("://") {
        let url = Url::parse(addr).map_err(|e| err(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
            return Err(err(format!("scheme {:?} is not supported", url.scheme())));
        }
        if url.host_str().is_none() {
            return Err(err("the URL has no host".into()));
        }
        let mut url = if url.path() == "/" || url.path().is_empty() {
            url.join("/rpc/v1").map_err(|e| err(e.to_string()))?
        } else {
            url
        };
        let token = take_url_token(&mut url);
        return Ok((url, token));
    }
    parse_api_info(addr).map_err(err)
}

/// Takes a token out of a URL, so that none is written into the config: `?token=` (as
/// go-jsonrpc takes it) or the userinfo's password (else its user name). The URL keeps the
/// rest of its query.
fn take_url_token(url: &mut Url) -> Option<String> {
    let mut token = None;
    let rest: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "token" {
                token = Some(v.into_owned());
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    if token.is_some() {
        if rest.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(rest);
        }
    }
    let userinfo = url
        .password()
        .map(str::to_string)
        .or_else(|| Some(url.username().to_string()).filter(|u| !u.is_empty()));
    if userinfo.is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    token.or(userinfo.map(|u| percent_decode(&u)))
}

/// `%XX` escapes of a URL's userinfo, decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A node name from what the daemon said: `lotus-10.0.0.11`, unique within the pool.
fn name_for(implementation: Option<&str>, url: &Url, taken: &[String]) -> String {
    let host: String = url
        .host_str()
        .unwrap_or("node")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = format!("{}-{host}", implementation.unwrap_or("node"));
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Probes the daemons and writes the configuration to `output` (and tokens beside it).
pub async fn init(
    addrs: &[String],
    output: &Path,
    miner: Option<&str>,
) -> Result<Inited, InitError> {
    if addrs.is_empty() {
        return Err(InitError::NoAddress);
    }
    if let Some(m) = miner.filter(|m| !crate::apply::senders::is_id(m)) {
        return Err(InitError::Miner(inert(m, 40)));
    }
    if output.exists() {
        return Err(InitError::Exists(output.to_path_buf()));
    }
    let parsed: Vec<(Url, Option<String>)> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| parse_address(i + 1, a.trim()))
        .collect::<Result<_, _>>()?;
    let client = RpcClient::new(Duration::from_secs(5), 1024 * 1024)
        .map_err(|e| InitError::Client(e.to_string()))?;
    let targets: Vec<Target> = parsed
        .iter()
        .enumerate()
        .map(|(i, (url, token))| {
            let ws = matches!(url.scheme(), "ws" | "wss");
            Target {
                name: format!("node{i}"),
                endpoint: Endpoint {
                    url: url.clone(),
                    token: token.as_deref().map(Secret::new),
                    transport: if ws { Transport::Ws } else { Transport::Http },
                },
                transport_fixed: ws,
                health_url: None,
            }
        })
        .collect();
    let endpoints: Vec<Endpoint> = targets.iter().map(|t| t.endpoint.clone()).collect();
    let round = Prober::new(client.clone(), targets, false).round().await;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut found: Vec<Found> = Vec::new();
    for ((url, token), o) in parsed.into_iter().zip(&round.observations) {
        let id = o.identity.as_ref();
        let implementation = id.map(|i| i.implementation.to_string());
        let taken: Vec<String> = found.iter().map(|f| f.name.clone()).collect();
        let name = name_for(implementation.as_deref(), &url, &taken);
        let token_file = match token {
            Some(t) => {
                let path = dir.join(format!("{name}.token"));
                write_new(&path, format!("{t}\n").as_bytes(), 0o600)?;
                Some(path)
            }
            None => None,
        };
        found.push(Found {
            name,
            url,
            token_file,
            implementation,
            network: id.and_then(|i| i.network.clone()),
            version: id.map(|i| i.version.clone()),
            problem: match (&o.result, id) {
                (Err(e), _) => Some(e.to_string()),
                (Ok(_), None) => Some(
                    "answered ChainHead but not Version/ChainGetGenesis; check it by hand".into(),
                ),
                _ => None,
            },
        });
    }
    let miner = match miner {
        Some(m) => Some(miner_accounts(&client, &endpoints, &found, m).await),
        None => None,
    };
    write_new(output, render(&found, miner.as_ref()).as_bytes(), 0o640)?;
    Ok(Inited {
        nodes: found,
        miner,
    })
}

/// The miner's accounts, asked of the first daemon that identified itself.
async fn miner_accounts(
    client: &RpcClient,
    endpoints: &[Endpoint],
    found: &[Found],
    miner: &str,
) -> MinerFound {
    let asked = found
        .iter()
        .zip(endpoints)
        .find(|(f, _)| f.problem.is_none());
    let accounts = match asked {
        None => Err("no daemon identified itself to ask StateMinerInfo".to_string()),
        Some((f, e)) => crate::apply::senders::resolve(client, e, &[], Some(miner))
            .await
            .map_err(|err| format!("{}: {err}", f.name)),
    };
    MinerFound {
        miner: miner.to_string(),
        accounts,
    }
}

/// Creates `path` (never over an existing file) with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InitError> {
    crate::files::write_new(path, bytes, mode).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => InitError::Exists(path.to_path_buf()),
        _ => InitError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// The configuration text: the nodes as found, the network they agree on, and the defaults
/// written out as comments so that an operator sees every knob.
pub fn render(found: &[Found], miner: Option<&MinerFound>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# chain-co configuration, written by `chain-co init` on {}.",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    t.push_str(
        "# Check it with `chain-co validate`, try it with `chain-co check`, then `chain-co run`.\n\
         # Every key is documented in the README's Configuration table.\n\n",
    );
    for f in found {
        t.push_str("[[node]]\n");
        let _ = writeln!(t, "name = {}", toml_string(&f.name));
        let _ = writeln!(t, "url = {}", toml_string(f.url.as_str()));
        if let Some(p) = &f.token_file {
            let _ = writeln!(
                t,
                "token_file = {}   # mode 0600",
                toml_string(&p.display().to_string())
            );
        }
        if miner.is_some() {
            t.push_str(
                "# write_token_file = \"/etc/chain-co/write.token\"   # MpoolPush at a switch needs write\n",
            );
        }
        // Daemon words in a comment: one line, no control characters, capped.
        match (&f.problem, &f.implementation) {
            (Some(why), _) => {
                let _ = writeln!(t, "# did not identify itself at init: {}", inert(why, 200));
            }
            (None, Some(imp)) => {
                let _ = writeln!(
                    t,
                    "# {imp} {}, network {}",
                    inert(f.version.as_deref().unwrap_or("?"), 80),
                    inert(f.network.as_deref().unwrap_or("(unnamed)"), 64)
                );
            }
            _ => {}
        }
        t.push('\n');
    }
    let networks: std::collections::BTreeSet<&str> =
        found.iter().filter_map(|f| f.network.as_deref()).collect();
    t.push_str("[chain]\n");
    match networks.iter().next() {
        Some(n) if networks.len() == 1 => {
            let _ = writeln!(
                t,
                "network = {}   # every daemon said so; a node on another chain is excluded",
                toml_string(&inert(n, 64))
            );
        }
        _ => t.push_str(
            "# network = \"mainnet\"   # the daemons did not agree (or did not say): set it\n",
        ),
    }
    t.push_str(
        "\n[probe]\n\
         # interval = \"5s\"\n\
         # timeout = \"3s\"\n\
         # push = true          # ChainNotify: a stalled daemon is seen within seconds\n\
         \n[select]\n\
         # max_lag = 2          # epochs behind the best head that still count as healthy\n\
         # rise = 2\n\
         # fall = 3\n\
         # lag_grace = \"12s\"   # 0.4 block delays\n\
         # hold_down = \"1m\"    # flap damping: 2 block delays, doubled per drop in an hour\n\
         \n[nginx]\n\
         # output = \"/etc/nginx/conf.d/filecoin-upstream.conf\"\n\
         # reload = { pid_file = \"/run/nginx.pid\" }\n\
         # move_sessions = true # end the old primary's connections at a switch (CAP_NET_ADMIN)\n\
         \n[api]\n\
         # listen = \"127.0.0.1:9797\"\n\
         # token_file = \"/etc/chain-co/api.token\"\n",
    );
    t.push_str(&render_messages(miner));
    t
}

/// `[messages]`: with `--miner`, the section and the accounts found; without, how to ask.
fn render_messages(miner: Option<&MinerFound>) -> String {
    let Some(m) = miner else {
        return "\n# [messages]            # pending messages follow a switch (README: Messages)\n\
                # miner = \"f0…\"        # its owner, worker and control addresses, from the chain\n"
            .into();
    };
    let mut t = String::from(
        "\n[messages]\n\
         # The provider's pending messages follow a switch to the new primary (README:\n\
         # Messages). Needs a token with write on each node (write_token_file).\n",
    );
    let _ = writeln!(t, "miner = {}", toml_string(&m.miner));
    match &m.accounts {
        Ok(a) => {
            let _ = writeln!(
                t,
                "# at init: {}",
                inert(&crate::apply::senders::describe(a), 400)
            );
        }
        Err(why) => {
            let _ = writeln!(
                t,
                "# could not read its addresses at init: {}",
                inert(why, 200)
            );
        }
    }
    t.push_str(
        "# addresses = [\"f3…\"]   # other sending addresses (a wallet outside the miner's)\n",
    );
    t
}

/// The nginx server block for this configuration (`init --nginx`).
pub fn nginx_server_block() -> String {
    let example = include_str!("../../../../nginx-examples/nginx.conf");
    let start = example.find("    # The generated upstream").unwrap_or(0);
    let end = example.rfind("}\n").unwrap_or(example.len());
    format!(
        "# Inside http {{ }} of nginx.conf (from nginx-examples/nginx.conf; the map of\n\
         # $connection_upgrade must be there too):\n{}",
        &example[start..end]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_never_echo_a_token() {
        let (u, t) = parse_address(1, "http://10.0.0.11:1234").expect("url");
        assert_eq!(u.as_str(), "http://10.0.0.11:1234/rpc/v1");
        assert_eq!(t, None);
        let (u, t) = parse_address(2, "eyJtok:/ip4/10.0.0.12/tcp/2345/http").expect("info");
        assert_eq!(u.as_str(), "http://10.0.0.12:2345/rpc/v1");
        assert_eq!(t.as_deref(), Some("eyJtok"));
        let e = parse_address(3, "eyJsecret:/ip4/10.0.0.12/udp/1/http").expect_err("bad");
        assert!(!e.to_string().contains("eyJsecret"), "{e}");
        assert!(parse_address(4, "ftp://x/").is_err());
    }

    #[test]
    fn tokens_in_urls_go_to_files_not_into_the_config() {
        let (u, t) = parse_address(1, "http://10.0.0.1:1234/rpc/v1?token=eyJq&x=1").expect("url");
        assert_eq!(u.as_str(), "http://10.0.0.1:1234/rpc/v1?x=1");
        assert_eq!(t.as_deref(), Some("eyJq"));
        let (u, t) = parse_address(2, "ws://user:s%2Fecret@10.0.0.1:1234/rpc/v0").expect("url");
        assert_eq!(u.as_str(), "ws://10.0.0.1:1234/rpc/v0");
        assert_eq!(t.as_deref(), Some("s/ecret"));
        let (u, t) = parse_address(3, "http://eyJtok@10.0.0.1:1234").expect("url");
        assert_eq!(u.as_str(), "http://10.0.0.1:1234/rpc/v1");
        assert_eq!(t.as_deref(), Some("eyJtok"));
    }

    #[test]
    fn a_daemon_cannot_write_the_config_through_init() {
        let hostile = "1.0\n[nginx.reload]\ncmd = [\"/bin/sh\", \"-c\", \"touch /tmp/owned\"]\n[[node]]\nname = \"evil\"\nurl = \"http://evil:1/\"\n\u{1b}[2J";
        let f = Found {
            name: "lotus-a".into(),
            url: "http://10.0.0.1:1234/rpc/v1".parse().expect("url"),
            token_file: None,
            implementation: Some("lotus".into()),
            network: Some(format!("mainnet\"\n{hostile}")),
            version: Some(hostile.into()),
            problem: None,
        };
        let bad = Found {
            name: "lotus-b".into(),
            problem: Some(format!("JSON-RPC error 1: {hostile}")),
            ..f.clone()
        };
        let text = render(&[f, bad], None);
        assert!(!text.contains('\u{1b}'), "{text}");
        let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
        let nodes = parsed["node"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 2, "no node of the attacker's: {text}");
        let reload = parsed.get("nginx").and_then(|n| n.get("reload"));
        assert!(reload.is_none(), "no command of the attacker's: {text}");
        let chain = parsed["chain"].as_table().expect("chain");
        assert_eq!(chain.len(), 1, "{text}");
        assert!(!chain["network"].as_str().expect("network").contains('\n'));
    }

    #[test]
    fn names_are_unique_and_safe() {
        let u: Url = "http://10.0.0.11:1234/rpc/v1".parse().expect("url");
        assert_eq!(name_for(Some("lotus"), &u, &[]), "lotus-10.0.0.11");
        assert_eq!(
            name_for(Some("lotus"), &u, &["lotus-10.0.0.11".into()]),
            "lotus-10.0.0.11-2"
        );
        let v6: Url = "http://[::1]:1234/rpc/v1".parse().expect("url");
        let n = name_for(None, &v6, &[]);
        assert!(n.starts_with("node-"), "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{n}"
        );
    }
}
