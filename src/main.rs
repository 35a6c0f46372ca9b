//! The `chain-co` command: parses arguments and calls the library. Nothing else lives here.

mod demo;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use reqwest::Method;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use chain_co::cli::client::ApiClient;
use chain_co::config::Config;
use chain_co::secret::Secret;
use chain_co_sim::{Profile, SimPool, SimSpec};

#[derive(Parser)]
#[command(
    name = "chain-co",
    version,
    about = "Keeps Filecoin storage providers on a healthy chain: probes a pool of daemons and points nginx at the best one",
    long_about = None
)]
struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where a running chain-co's API is (the client subcommands).
#[derive(clap::Args)]
struct ApiArgs {
    /// The status API of the running chain-co.
    #[arg(long, env = "CHAIN_CO_URL", default_value = "http://127.0.0.1:9797")]
    url: String,
    /// File holding the API's bearer token ([api] token_file of the running chain-co).
    #[arg(long, env = "CHAIN_CO_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.url, read_token(self.token_file.as_deref())?)
    }
}

fn read_token(path: Option<&std::path::Path>) -> anyhow::Result<Option<Secret>> {
    match path {
        None => Ok(None),
        Some(p) => Ok(Some(Secret::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?
                .trim(),
        ))),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: probe every interval, publish the best node to nginx.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Dry run: probe the pool, print the decision and the nginx file `run` would write.
    /// Writes nothing, reloads nothing. Exit status: 0 a primary was chosen, 1 none, 2 bad config.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Probe rounds, 200 ms apart (default: `rise`, enough for a healthy node to be used).
        #[arg(long)]
        rounds: Option<u32>,
    },
    /// Write a commented configuration from daemon addresses: each is asked who it is (name,
    /// implementation, network); tokens go to files of their own (mode 0600), never into the
    /// configuration. Never overwrites a file.
    Init {
        /// Where to write the configuration (tokens go beside it).
        #[arg(long, short, default_value = "/etc/chain-co/chain-co.toml")]
        output: PathBuf,
        /// Also print the nginx server block that proxies to the generated upstream.
        #[arg(long)]
        nginx: bool,
        /// The storage provider's miner ID (f0…): adds `[messages]`, so that its pending
        /// messages follow a switch; its addresses are read from the chain.
        #[arg(long)]
        miner: Option<String>,
        /// Daemon addresses: URLs (http://10.0.0.11:1234/rpc/v1) or FULLNODE_API_INFO values
        /// (TOKEN:/ip4/10.0.0.11/tcp/1234/http).
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Check a configuration file without probing anything. Exit status 0 valid, 2 invalid.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show what a running chain-co sees: the primary and since when, every node and why it is
    /// or is not used, the last apply. A client of the status API.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        /// Refresh every 2 seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Print the journal instead: switches, nodes dropped and back, marks, applies and
        /// warnings since chain-co started (kept in memory only).
        #[arg(long)]
        history: bool,
    },
    /// Take a node out of the upstream (e.g. to upgrade it). Refused when it is the last
    /// healthy node. Kept across restarts.
    Drain {
        node: String,
        #[command(flatten)]
        api: ApiArgs,
        /// Who asks (shown in status).
        #[arg(long, env = "USER", default_value = "")]
        by: String,
        /// Leave the node's open sessions (miners' websockets) on it this long before moving
        /// them to the primary, e.g. "30s"; by default they move at once.
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
    },
    /// Bring a drained node back (after `rise` good probes).
    Undrain {
        node: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make a node primary while it is healthy; `--clear` ends the preference.
    Prefer {
        #[arg(required_unless_present = "clear")]
        node: Option<String>,
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, env = "USER", default_value = "")]
        by: String,
    },
    /// Ask a Filecoin daemon directly: its head, version, network and peers; or, with
    /// `--method`, any JSON-RPC method (e.g. `--method Filecoin.ChainHead --params '[]'`).
    Probe {
        /// The daemon's JSON-RPC URL, e.g. http://127.0.0.1:1234/rpc/v1 (ws:// for Fuhon).
        /// Without it, `FULLNODE_API_INFO` (TOKEN:/ip4/HOST/tcp/PORT/http), as every Lotus
        /// tool reads it.
        url: Option<String>,
        /// File holding the daemon's token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long)]
        method: Option<String>,
        /// JSON params for `--method`.
        #[arg(long, default_value = "[]")]
        params: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        timeout: Duration,
    },
    /// Exit 0 when a running chain-co is healthy (its /healthz is 200), 1 otherwise, printing
    /// the reason. For keepalived's check script; bounded by --timeout.
    Health {
        #[arg(long, env = "CHAIN_CO_URL", default_value = "http://127.0.0.1:9797")]
        url: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        timeout: Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
    /// Serve a simulated pool of Lotus-shaped daemons on loopback (the test bed).
    ///
    /// Prints one JSON line with the node and control addresses, then serves until interrupted.
    /// Change a node with e.g. `curl -d '{"op":"stall"}' http://CONTROL/nodes/lotus-a`; ops:
    /// stall, resume, lag {epochs}, die, revive, slow {delay}, garbage, rpc_error,
    /// http_error {status}, require_token {token}, heavy_fork {f3}, inflate {weight}, flip_fork, f3_down,
    /// f3_fresh, f3_disabled, f3_up, f3_network {name}, finality_stall, finality_resume, heal. `GET /nodes` shows every node.
    Sim(SimArgs),
    /// Show the main job in about a minute: a simulated pool, a private nginx (if installed)
    /// and chain-co between them, while the demo stalls, kills and heals nodes.
    Demo,
}

/// The configuration file, as `run`, `check` and `validate` take it.
#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "CHAIN_CO_CONFIG",
        default_value = "/etc/chain-co/chain-co.toml"
    )]
    config: PathBuf,
}

impl ConfigArg {
    /// The configuration, or its problems (exit 2).
    fn load(&self) -> Result<Config, Outcome> {
        Config::load(&self.config).map_err(|e| Outcome::Invalid(e.to_string()))
    }
}

/// How a command ended. [`exit`] maps it to the exit code the docs give, in one place, and
/// prints the error once.
enum Outcome {
    /// 0.
    Done,
    /// 1: the command ran and its answer is no (`check`: no primary; `health`: unhealthy).
    No,
    /// 1: the command failed.
    Failed(anyhow::Error),
    /// 2: a bad configuration or a setup that cannot work; the text is printed as is.
    Invalid(String),
}

impl<E: Into<anyhow::Error>> From<Result<(), E>> for Outcome {
    fn from(r: Result<(), E>) -> Outcome {
        match r {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e.into()),
        }
    }
}

fn exit(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::No => ExitCode::from(1),
        Outcome::Failed(e) => {
            eprintln!("chain-co: {e:#}");
            ExitCode::from(1)
        }
        Outcome::Invalid(text) => {
            eprint!("{text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(2)
        }
    }
}

/// `chain-co sim`'s arguments.
#[derive(clap::Args)]
struct SimArgs {
    /// Nodes, comma-separated, each `name` or `name:implementation` (lotus, venus, forest,
    /// fuhon; default lotus).
    #[arg(long, value_delimiter = ',', default_value = "lotus-a,lotus-b,lotus-c")]
    nodes: Vec<String>,
    /// Skip about one epoch in ten, as null rounds do.
    #[arg(long)]
    null_rounds: bool,
    /// File holding the token every node accepts (Venus nodes require it).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Seconds between epochs (30 on mainnet; whole seconds, as in Filecoin timestamps).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    block_delay: Duration,
    /// Address the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Address of the control endpoint (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// The network's height at start (0: at genesis, as the recorded real Forest).
    #[arg(long, default_value_t = 1000)]
    start_height: u64,
}

/// A pool of hundreds of daemons (or the simulator serving them) needs more than the usual 1024
/// open files: raise the soft limit to the hard one.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// bench/heap-profile.sh builds with this to see where the bytes go (dhat-heap.json at exit).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        one_malloc_arena();
    }
    raise_open_files_limit();
    let quiet = !matches!(cli.command, Command::Run { .. } | Command::Sim(_));
    init_logging(if quiet { "warn" } else { "info" }, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chain-co: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    exit(runtime.block_on(dispatch(cli.command)))
}

/// glibc gives each thread that allocates its own arena and returns little of a freed arena to
/// the system; with tasks moving between the runtime's workers, a 1000-node pool held twice its
/// live heap (issue #17: 27 MiB of arenas for 11 MiB in use). chain-co allocates little and
/// from few threads, so one arena costs no measurable CPU and brings RSS near the live heap
/// (bench/README.md). `MALLOC_ARENA_MAX` in the environment still wins. Only for `run`: the
/// simulator serves a thousand nodes from every core and wants its arenas.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called from main before the runtime starts, when no other thread exists;
        // mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHAIN_CO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(command: Command) -> Outcome {
    match command {
        Command::Init {
            output,
            nginx,
            miner,
            addrs,
        } => init(&addrs, &output, nginx, miner.as_deref()).await,
        Command::Validate { config } => validate(&config),
        Command::Check {
            config,
            json,
            rounds,
        } => check(&config, json, rounds).await,
        Command::Run { config } => match config.load() {
            Ok(c) => chain_co::serve::run(c, config.config, cancel_on_signal())
                .await
                .into(),
            Err(invalid) => invalid,
        },
        Command::Status {
            api,
            json,
            watch,
            history,
        } => if history {
            print_history(api, json).await
        } else {
            status(api, json, watch).await
        }
        .into(),
        Command::Drain {
            node,
            api,
            by,
            grace,
        } => mark(
            &api,
            Method::POST,
            &format!("/nodes/{node}/drain"),
            &by,
            grace,
        )
        .await
        .into(),
        Command::Undrain { node, api } => mark(
            &api,
            Method::POST,
            &format!("/nodes/{node}/undrain"),
            "",
            None,
        )
        .await
        .into(),
        Command::Prefer {
            node,
            clear,
            api,
            by,
        } => match (clear, node) {
            (true, _) => mark(&api, Method::DELETE, "/prefer", &by, None).await,
            (false, Some(node)) => {
                mark(
                    &api,
                    Method::POST,
                    &format!("/nodes/{node}/prefer"),
                    &by,
                    None,
                )
                .await
            }
            (false, None) => Err(anyhow::anyhow!("name a node, or give --clear")),
        }
        .into(),
        Command::Probe {
            url,
            token_file,
            method,
            params,
            timeout,
        } => probe(url, token_file, method, &params, timeout)
            .await
            .into(),
        Command::Health { url, timeout } => health(&url, timeout).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "chain-co",
                &mut std::io::stdout(),
            );
            Outcome::Done
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .into(),
        Command::Sim(args) => sim(args).await.into(),
        Command::Demo => demo::demo().await.into(),
    }
}

/// `chain-co init`: exit 2 when it cannot write the configuration.
async fn init(
    addrs: &[String],
    output: &std::path::Path,
    nginx: bool,
    miner: Option<&str>,
) -> Outcome {
    let inited = match chain_co::cli::init::init(addrs, output, miner).await {
        Ok(inited) => inited,
        Err(e) => return Outcome::Invalid(format!("chain-co init: {e}\n")),
    };
    for f in &inited.nodes {
        match &f.problem {
            None => println!(
                "{}: {} {} on {}",
                f.name,
                f.implementation.as_deref().unwrap_or("?"),
                f.version.as_deref().unwrap_or("?"),
                f.network.as_deref().unwrap_or("(unnamed network)")
            ),
            Some(why) => println!("{}: not identified: {why}", f.name),
        }
    }
    if let Some(m) = &inited.miner {
        match &m.accounts {
            Ok(a) => println!(
                "{}: messages of {} follow a switch",
                m.miner,
                chain_co::text::inert(&chain_co::apply::senders::describe(a), 400)
            ),
            Err(why) => println!(
                "{}: addresses not read at init ({}); run resolves them",
                m.miner,
                chain_co::text::inert(why, 200)
            ),
        }
    }
    println!(
        "wrote {}; next: chain-co validate -c {0} && chain-co check -c {0}",
        output.display()
    );
    if nginx {
        println!("\n{}", chain_co::cli::init::nginx_server_block());
    }
    Outcome::Done
}

/// `chain-co validate`: the file, and what `run` checks before its first round (the target's
/// files must be writable here).
fn validate(config: &ConfigArg) -> Outcome {
    let c = match config.load() {
        Ok(c) => c,
        Err(invalid) => return invalid,
    };
    match c.build_target().and_then(|t| t.preflight()) {
        Ok(()) => {
            println!(
                "{}: valid ({} nodes)",
                config.config.display(),
                c.nodes.len()
            );
            Outcome::Done
        }
        Err(e) => Outcome::Invalid(format!(
            "{}: the file is valid, but on this host: {e}\n",
            config.config.display()
        )),
    }
}

/// `chain-co check`: 0 a primary was chosen, 1 none, 2 a bad configuration (or a target that
/// cannot be built from it).
async fn check(config: &ConfigArg, json: bool, rounds: Option<u32>) -> Outcome {
    let config = match config.load() {
        Ok(c) => c,
        Err(invalid) => return invalid,
    };
    let rounds = rounds.unwrap_or(config.select.rise);
    let report = match chain_co::cli::check::check(&config, rounds).await {
        Ok(r) => r,
        Err(e) => return Outcome::Invalid(format!("chain-co: check failed: {e:#}\n")),
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return Outcome::Failed(e.into()),
        }
    } else {
        print!("{}", chain_co::cli::check::render_text(&report));
    }
    if report.primary.is_some() {
        Outcome::Done
    } else {
        Outcome::No
    }
}

/// `chain-co probe`: the URL given, or `FULLNODE_API_INFO` as every Lotus tool reads it.
async fn probe(
    url: Option<String>,
    token_file: Option<PathBuf>,
    method: Option<String>,
    params: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut token = read_token(token_file.as_deref())?;
    let url = match url {
        Some(u) => u,
        None => {
            let info = std::env::var("FULLNODE_API_INFO").map_err(|_| {
                anyhow::anyhow!(
                    "give the daemon's URL, or set FULLNODE_API_INFO (TOKEN:/ip4/HOST/tcp/PORT/http)"
                )
            })?;
            let (u, t) = chain_co::config::parse_api_info(&info)
                .map_err(|e| anyhow::anyhow!("FULLNODE_API_INFO: {e}"))?;
            if token.is_none() {
                token = t.map(Secret::new);
            }
            u.to_string()
        }
    };
    let out = chain_co::cli::client::probe(&url, token, method.as_deref(), params, timeout).await?;
    println!("{}", out.trim_end());
    Ok(())
}

/// Cancels the token on SIGINT or SIGTERM.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
            _ = term.recv() => info!("SIGTERM: shutting down"),
        }
        t.cancel();
    });
    token
}

async fn health(url: &str, timeout: Duration) -> Outcome {
    let result = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let resp = client
            .get(format!("{}/healthz", url.trim_end_matches('/')))
            .send()
            .await?;
        let ok = resp.status().is_success();
        let body = resp.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((ok, body))
    }
    .await;
    match result {
        Ok((true, body)) => {
            println!("{}", body.trim());
            Outcome::Done
        }
        Ok((false, body)) => {
            println!("unhealthy: {}", body.trim());
            Outcome::No
        }
        Err(e) => {
            println!("unhealthy: cannot reach chain-co at {url}: {e}");
            Outcome::No
        }
    }
}

async fn print_history(api: ApiArgs, json: bool) -> anyhow::Result<()> {
    let journal = api.client()?.history().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&journal)?);
    } else {
        print!("{}", chain_co::cli::client::render_history(&journal));
    }
    Ok(())
}

async fn status(api: ApiArgs, json: bool, watch: bool) -> anyhow::Result<()> {
    let client = api.client()?;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    loop {
        let s = client.status().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            if watch && colour {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", chain_co::cli::client::render_status(&s, colour));
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn mark(
    api: &ApiArgs,
    method: Method,
    path: &str,
    by: &str,
    grace: Option<Duration>,
) -> anyhow::Result<()> {
    let answer = api.client()?.mark(method, path, by, grace).await?;
    println!("{answer}");
    Ok(())
}

async fn sim(args: SimArgs) -> anyhow::Result<()> {
    let SimArgs {
        nodes,
        null_rounds,
        token_file,
        block_delay,
        listen,
        control,
        start_height,
    } = args;
    if block_delay < Duration::from_secs(1) {
        anyhow::bail!("--block-delay must be at least 1s (Filecoin timestamps are whole seconds)");
    }
    let nodes = nodes
        .iter()
        .map(|n| match n.split_once(':') {
            Some((name, imp)) => Ok((name.to_string(), imp.parse().map_err(anyhow::Error::msg)?)),
            None => Ok((n.clone(), Profile::Lotus)),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let pool = SimPool::start(SimSpec {
        nodes,
        null_rounds,
        token,
        block_delay,
        listen,
        control,
        start_height,
    })
    .await
    .context("starting the simulated pool")?;
    println!("{}", serde_json::to_string(pool.ready())?);
    let shutdown = cancel_on_signal();
    shutdown.cancelled().await;
    pool.shutdown().await;
    Ok(())
}
