//! The `sessiongate` binary: parse the command line, load the config (exit 64 when invalid),
//! start, reload on SIGHUP, drain on SIGTERM/SIGINT, exit, and tell systemd about each step
//! when it runs the process. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sessiongate::config::{Config, LogFormat};
use sessiongate::demo::{self, DemoOptions};
use sessiongate::service_manager::ServiceManager;
use sessiongate::{logging, Drained, ReloadError, Reloaded, Server};

mod allocator;

/// sysexits' EX_USAGE: the invocation or the config is wrong, retrying will not help.
const EXIT_CONFIG: u8 = 64;
const EXIT_RUNTIME: u8 = 1;

#[derive(Parser)]
#[command(
    name = "sessiongate",
    version,
    about = "Session-aware edge reverse proxy and load balancer"
)]
struct Cli {
    /// Config file (TOML) to run with.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Worker threads; default: one per CPU. 1 runs everything on a single-threaded runtime
    /// (sidecars, small VMs, benchmarks pinned to one core).
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print the effective config, defaults filled in.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Only say whether it is valid (for scripts and systemd's ExecReload=).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start a demo cluster of session-keeping nodes on loopback and the proxy in front of it.
    Demo {
        /// HTTPS listener address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: std::net::SocketAddr,
        /// Plain HTTP listener address (redirects to HTTPS).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// How many demo nodes to start.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors; anything else on the command line is a usage
        // error, with the same exit code as a bad config.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let threads = cli.threads;
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file, quiet }), _) => match Config::load(&file) {
            Ok(config) => {
                if !quiet {
                    print!("{}", config.to_effective_toml());
                }
                eprintln!("{}: valid", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        (
            Some(Command::Demo {
                https,
                http,
                admin,
                nodes,
            }),
            _,
        ) => {
            logging::init(LogFormat::Human, "info");
            runtime(threads).block_on(run_demo(DemoOptions {
                https,
                http,
                admin,
                nodes,
            }))
        }
        (None, Some(path)) => runtime(threads).block_on(async {
            // Listened to before the config is read (it and the files it names may sit on a
            // slow volume), and then through the start, which can take seconds (a DNS site's
            // first lookup): SIGHUP's default action ends a process, and `systemctl reload`
            // right after a start must not. A SIGHUP meanwhile reloads once the start is done.
            let mut signals = Signals::new();
            match read_config(path, &mut signals).await {
                Some(Ok(config)) => {
                    logging::init(config.log.format, &config.log.level);
                    run(config, signals).await
                }
                Some(Err(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_CONFIG)
                }
                None => {
                    eprintln!("sessiongate: stopped while reading the configuration");
                    ExitCode::SUCCESS
                }
            }
        }),
        (None, None) => {
            eprintln!("sessiongate: give --config FILE, or try `sessiongate demo` (see --help)");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// mimalloc rather than glibc malloc: a proxied request allocates and frees a few dozen small
/// objects (head maps, futures, buffers), and glibc's arena bookkeeping (`_int_malloc`,
/// `malloc_consolidate`) measured about 6% of the CPU per request (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

fn runtime(threads: Option<u16>) -> tokio::runtime::Runtime {
    let mut builder = match threads {
        // One thread needs no cross-thread wake-ups or work stealing; the benchmarks pin each
        // proxy to one core and run it this way (BENCHMARKS.md, "What was tried").
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .thread_name("sessiongate")
        // A thread with nothing to do gives a burst's freed memory back (allocator.rs).
        .on_thread_park(allocator::on_idle)
        .build()
        .expect("cannot start the Tokio runtime")
}

async fn run(config: Config, mut signals: Signals) -> ExitCode {
    tracing::info!(config = %config.source, "starting");
    let systemd = Arc::new(ServiceManager::from_env());
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    systemd.ready(&serving(&server));
    let watchdog = tokio::spawn({
        let systemd = systemd.clone();
        async move { systemd.feed_watchdog().await }
    });
    while let Signal::Reload = signals.next().await {
        systemd.reloading();
        match reload(&server).await {
            Ok(_) => systemd.ready(&serving(&server)),
            Err(e) => systemd.ready(&format!("{}; reload refused: {e}", serving(&server))),
        }
    }
    systemd.stopping();
    let code = drain(server, &mut signals).await;
    watchdog.abort();
    code
}

/// What systemd shows as the unit's status (`systemctl status`) while it serves.
fn serving(server: &Server) -> String {
    let listeners: Vec<String> = server
        .listener_addrs()
        .iter()
        .map(|(name, addr)| format!("{name} on {addr}"))
        .collect();
    format!(
        "serving {}; admin on {}",
        listeners.join(", "),
        server.admin_addr()
    )
}

async fn run_demo(options: DemoOptions) -> ExitCode {
    let mut signals = Signals::new();
    let mut demo = match demo::start(options).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("sessiongate demo: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("({hint})");
            }
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    println!("{}", demo.banner());
    // The demo's config is a file like any other: edited and sent SIGHUP (or just saved), it
    // reloads. Lines typed meanwhile scale the cluster; when stdin closes (not a terminal),
    // only the signals are left.
    let mut lines = typed_lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Reload => {
                    let _ = reload(&demo.server).await;
                }
                Signal::Stop => break,
            },
            line = lines.recv(), if stdin_open => match line {
                Some(line) => {
                    if let Some(said) = demo.command(&line).await {
                        println!("{said}");
                    }
                }
                None => stdin_open = false,
            },
        }
    }
    // Its files go when `demo` is dropped, after the drain.
    drain(demo.server, &mut signals).await
}

/// The configuration, read on a thread of its own so that SIGTERM or SIGINT still end a read
/// that hangs (`None`). Not on Tokio's blocking pool, which the runtime waits for when it shuts
/// down.
async fn read_config(
    path: PathBuf,
    signals: &mut Signals,
) -> Option<Result<Config, sessiongate::config::ConfigError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Config::load(&path));
    });
    tokio::select! {
        read = rx => Some(read.expect("the reading thread sends before it ends")),
        () = signals.stop() => None,
    }
}

/// The lines typed into the demo's terminal, read on a thread of their own. Not Tokio's
/// `stdin()`: it reads on the runtime's blocking pool, which the runtime waits for when it shuts
/// down, so after "drained, exiting" the demo hung until a key was pressed or stdin closed.
fn typed_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn reload(server: &Server) -> Result<Reloaded, ReloadError> {
    tracing::info!("SIGHUP: reloading the configuration");
    // The outcome is logged and counted by `reload`. A SIGTERM meanwhile waits in `Signals`
    // and is acted on right after.
    server.reload().await
}

async fn drain(server: Server, signals: &mut Signals) -> ExitCode {
    tracing::info!("draining: no new connections, requests in flight finish");
    // A second signal during the drain means "now": operators expect Ctrl-C twice to work.
    let second_stop = async {
        while let Signal::Reload = signals.next().await {
            tracing::info!("SIGHUP while draining: nothing to reload");
        }
    };
    tokio::select! {
        drained = server.shutdown() => {
            match drained {
                Drained::Clean => tracing::info!("drained, exiting"),
                Drained::DeadlinePassed => tracing::warn!("drain deadline passed, exiting with connections open"),
            }
        }
        _ = second_stop => tracing::warn!("second signal: exiting without waiting"),
    }
    ExitCode::SUCCESS
}

/// What a signal asks of the process.
enum Signal {
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT.
    Stop,
}

/// SIGHUP, SIGTERM and SIGINT, listened to for the life of the process. A listener made afresh
/// each time would miss a signal that arrives while none exists: a SIGTERM during a reload (the
/// select that waited for it is not polled then) used to be lost, and the process went on
/// serving until Kubernetes killed it outright. And a process with no SIGHUP listener dies of
/// one, as the demo did.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            hup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    /// SIGTERM or SIGINT, leaving a SIGHUP for `next`.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// The next signal, including one that arrived since the last call. A stop is seen before
    /// a reload that arrived with it.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            biased;
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
