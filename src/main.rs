//! The `chain-co` command: parses arguments and calls the library. Nothing else lives here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use chain_co::config::Config;
use chain_co::daemon::Daemon;
use chain_co::sim::{Profile, SimPool, SimSpec};

#[derive(Parser)]
#[command(
    name = "chain-co",
    version,
    about = "Keeps Filecoin storage providers on a healthy chain: probes a pool of daemons and points nginx at the best one",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: probe every interval, publish the best node to nginx.
    Run {
        /// The configuration file.
        #[arg(
            long,
            short,
            env = "CHAIN_CO_CONFIG",
            default_value = "/etc/chain-co/chain-co.toml"
        )]
        config: PathBuf,
    },
    /// Dry run: probe the pool, print the decision and the nginx file `run` would write.
    /// Writes nothing, reloads nothing. Exit status: 0 a primary was chosen, 1 none, 2 bad config.
    Check {
        #[arg(
            long,
            short,
            env = "CHAIN_CO_CONFIG",
            default_value = "/etc/chain-co/chain-co.toml"
        )]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Probe rounds, 200 ms apart (default: `rise`, enough for a healthy node to be used).
        #[arg(long)]
        rounds: Option<u32>,
    },
    /// Check a configuration file without probing anything. Exit status 0 valid, 2 invalid.
    Validate {
        #[arg(
            long,
            short,
            env = "CHAIN_CO_CONFIG",
            default_value = "/etc/chain-co/chain-co.toml"
        )]
        config: PathBuf,
    },
    /// Serve a simulated pool of Lotus-shaped daemons on loopback (the test bed).
    ///
    /// Prints one JSON line with the node and control addresses, then serves until interrupted.
    /// Change a node with e.g. `curl -d '{"op":"stall"}' http://CONTROL/nodes/lotus-a`; ops:
    /// stall, resume, lag {epochs}, die, revive, slow {delay}, garbage, rpc_error,
    /// http_error {status}, require_token {token}, heal. `GET /nodes` shows every node.
    Sim {
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
    },
    /// Show the main job in about a minute: a simulated pool, a private nginx (if installed)
    /// and chain-co between them, while the demo stalls, kills and heals nodes.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Check { .. } | Command::Validate { .. } | Command::Demo
    );
    init_logging(if quiet { "warn" } else { "info" });
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
    runtime.block_on(dispatch(cli.command))
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHAIN_CO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Validate { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: valid ({} nodes)", config.display(), c.nodes.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Check {
            config,
            json,
            rounds,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            match chain_co::check::check(&config, rounds.unwrap_or(config.select.rise)).await {
                Ok(report) => {
                    if json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(s) => println!("{s}"),
                            Err(e) => eprintln!("chain-co: {e}"),
                        }
                    } else {
                        print!("{}", chain_co::check::render_text(&report));
                    }
                    if report.primary.is_some() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("chain-co: check failed: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            report(run(config).await)
        }
        Command::Sim {
            nodes,
            null_rounds,
            token_file,
            block_delay,
            listen,
            control,
        } => report(sim(nodes, null_rounds, token_file, block_delay, listen, control).await),
        Command::Demo => report(chain_co::demo::demo().await),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("chain-co: {e:#}");
            ExitCode::from(1)
        }
    }
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

async fn run(config: Config) -> anyhow::Result<()> {
    let daemon = Daemon::new(config)?;
    daemon.preflight().context("preflight")?;
    let shutdown = cancel_on_signal();
    let (tx, _rx) = watch::channel(None);
    daemon.run(shutdown, tx).await;
    Ok(())
}

async fn sim(
    nodes: Vec<String>,
    null_rounds: bool,
    token_file: Option<PathBuf>,
    block_delay: Duration,
    listen: IpAddr,
    control: SocketAddr,
) -> anyhow::Result<()> {
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
    })
    .await
    .context("starting the simulated pool")?;
    println!("{}", serde_json::to_string(pool.ready())?);
    let shutdown = cancel_on_signal();
    shutdown.cancelled().await;
    pool.shutdown().await;
    Ok(())
}
