//! The `petrel` command line: load and validate the configuration, set up
//! logging, bind the listeners, run the broker, and turn SIGINT / SIGTERM
//! into a clean shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use petrel::reload::Checked;
use petrel::transport::tls::Tls;
use petrel::transport::websocket::WebSocket;
use petrel::transport::Listener;
use petrel::{Broker, Config};

/// jemalloc keeps objects of one size class together and, from its
/// background threads, hands pages that empty back to the system: the
/// memory an idle connection's task held before it hibernated is
/// returned, where the system allocator keeps it between the objects that
/// stay (docs/performance.md#memory-allocator).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Petrel, an MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without one, Petrel runs on its defaults:
    /// 127.0.0.1:1883 and [::1]:1883, anonymous clients allowed.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR:PORT instead of the configured listeners (repeatable).
    #[arg(short, long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Keep the durable store in DIR instead of the configured `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Asks a running broker's admin listener whether it is ready (for a
    /// container's HEALTHCHECK): exits 0 on 200, 1 otherwise. Plain HTTP.
    Healthcheck {
        /// The probe to ask.
        #[arg(long, default_value = "http://127.0.0.1:9883/readyz")]
        url: String,
    },
    /// Checks a configuration file and exits 0 if it is valid.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Adds a user to a password file or changes their password (`-D`:
    /// deletes the user). The password is read from the terminal without
    /// echo, or with `--stdin` from the first line of standard input.
    Passwd {
        /// Delete the user.
        #[arg(short = 'D', long)]
        delete: bool,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "delete")]
        stdin: bool,
        /// The password file (created if missing).
        file: PathBuf,
        /// The user name.
        user: String,
    },
    /// Translates a Mosquitto configuration into an equivalent
    /// petrel.toml (standard output, or `-o FILE`); one line on standard
    /// error per directive not carried over exactly. With `--db`, loads
    /// the retained messages of a mosquitto.db into the store instead.
    /// Exits 0 if everything was carried over, 3 if something was not, 1
    /// on an error.
    ImportMosquitto {
        /// The Mosquitto configuration (mosquitto.conf).
        #[arg(required_unless_present = "db")]
        file: Option<PathBuf>,
        /// Write the petrel.toml here instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// A Mosquitto persistence file whose retained messages go into
        /// Petrel's store (which no running Petrel may hold).
        #[arg(long, value_name = "mosquitto.db", conflicts_with = "file")]
        db: Option<PathBuf>,
        /// The store's directory (or take `data_dir` from `-c`).
        #[arg(long, value_name = "DIR", requires = "db")]
        data_dir: Option<PathBuf>,
        /// A petrel.toml to take `data_dir` from.
        #[arg(short = 'c', long, value_name = "FILE", requires = "db")]
        config: Option<PathBuf>,
    },
}

/// `petrel import-mosquitto --db`.
fn import_mosquitto_db(
    db: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let mut settings = match config {
        Some(path) => match Config::load(path) {
            Ok(mut loaded) => {
                loaded.locate_data_dir(Some(path), None);
                loaded
            }
            Err(error) => {
                eprintln!("petrel import-mosquitto: {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        settings.data_dir = dir.to_path_buf();
    }
    match petrel::import::import_mosquitto_db(db, &settings) {
        Ok((count, notes)) => {
            for note in &notes {
                eprintln!("{note}");
            }
            println!(
                "{count} retained messages imported into {}",
                settings.data_dir.display()
            );
            if notes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(error) => {
            eprintln!("petrel import-mosquitto: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `petrel import-mosquitto`.
fn import_mosquitto(file: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
    let import = match petrel::import::import_mosquitto(file) {
        Ok(import) => import,
        Err(error) => {
            eprintln!("petrel import-mosquitto: {error}");
            return ExitCode::FAILURE;
        }
    };
    for note in &import.notes {
        eprintln!("{note}");
    }
    match output {
        Some(path) => {
            if let Err(error) = std::fs::write(path, &import.toml) {
                eprintln!(
                    "petrel import-mosquitto: cannot write {}: {error}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
        None => print!("{}", import.toml),
    }
    if import.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// `petrel passwd`: adds, changes or deletes a user; the file is rewritten
/// atomically.
fn passwd(delete: bool, stdin: bool, file: &std::path::Path, user: &str) -> Result<String, String> {
    use petrel::auth::password::PasswordFile;
    let mut passwords = if file.exists() {
        PasswordFile::load(file)?
    } else {
        PasswordFile::default()
    };
    if delete {
        if !passwords.remove(user) {
            return Err(format!("{user}: no such user in {}", file.display()));
        }
        passwords.save(file)?;
        return Ok(format!("{user}: deleted"));
    }
    let password = if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|error| format!("cannot read standard input: {error}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first = rpassword::prompt_password(format!("Password for {user}: "))
            .map_err(|error| format!("cannot read the password: {error}"))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|error| format!("cannot read the password: {error}"))?;
        if first != again {
            return Err("the passwords differ".to_owned());
        }
        first
    };
    if password.is_empty() {
        return Err("empty password".to_owned());
    }
    let existed = passwords.contains(user);
    passwords.set(user, password.as_bytes())?;
    passwords.save(file)?;
    Ok(format!(
        "{user}: {}",
        if existed { "password changed" } else { "added" }
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Passwd {
        delete,
        stdin,
        file,
        user,
    }) = &cli.command
    {
        return match passwd(*delete, *stdin, file, user) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("petrel passwd: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return match healthcheck(url) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("petrel healthcheck: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check_config(file);
    }
    if let Some(Command::ImportMosquitto {
        file,
        output,
        db,
        data_dir,
        config,
    }) = &cli.command
    {
        return match (db, file) {
            (Some(db), _) => import_mosquitto_db(db, data_dir.as_deref(), config.as_deref()),
            (None, Some(file)) => import_mosquitto(file, output.as_deref()),
            (None, None) => ExitCode::FAILURE,
        };
    }
    let (config, checked) = match prepare(&cli) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("petrel: {message}");
            return ExitCode::FAILURE;
        }
    };
    let logging = petrel::logging::Logging::init(&config, cli.verbose);
    petrel::service::raise_open_files(config.max_connections);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("petrel: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(&cli, config, checked.tls, logging))
}

/// `petrel healthcheck`: one plain HTTP GET of `url`, within 5 seconds;
/// the status line on 200, an error otherwise.
fn healthcheck(url: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs can be checked"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = authority
        .to_socket_addrs()
        .map_err(|error| format!("{authority}: {error}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .map_err(|error| format!("{address}: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("{address}: {error}"))?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .map_err(|error| format!("{address}: {error}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").to_owned();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(format!("{status}: {body}"))
    } else {
        Err(format!("{url}: {status}: {body}"))
    }
}

/// `petrel check-config FILE`: the configuration, and every file it names
/// (certificates and keys, the password and ACL files), read as start-up
/// would: a file that passes here also starts.
fn check_config(file: &std::path::Path) -> ExitCode {
    let locate = |error: petrel::ConfigError| match std::fs::read_to_string(file) {
        Ok(text) => error.located_in(&text),
        Err(_) => error,
    };
    // What start-up and a reload check, in the same words.
    let checked = Config::load(file).and_then(|config| Checked::of(&config).map(|_| ()));
    match checked.map_err(locate) {
        Ok(()) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// The configuration as the command line and the file give it, with every
/// file it names read and checked ([`Checked::of`], as `check-config`
/// does): what start-up and a reload put in force. The error names the
/// key and its line in the file.
fn prepare(cli: &Cli) -> Result<(Config, Checked), String> {
    let config = load_config(cli)?;
    match Checked::of(&config) {
        Ok(checked) => Ok((config, checked)),
        Err(error) => {
            let text = cli
                .config
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok());
            let error = match text {
                Some(text) => error.located_in(&text),
                None => error,
            };
            Err(match &cli.config {
                Some(path) => format!("{}: {error}", path.display()),
                None => error.to_string(),
            })
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|error| format!("{}: {error}", path.display()))?,
        None => Config::default(),
    };
    // systemd's StateDirectory= (the first, if it names several).
    let state_directory = std::env::var_os("STATE_DIRECTORY").and_then(|dirs| {
        let dirs = dirs.to_string_lossy().into_owned();
        dirs.split(':').next().map(PathBuf::from)
    });
    config.locate_data_dir(cli.config.as_deref(), state_directory);
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if !cli.listen.is_empty() {
        // Like Mosquitto's -p: replaces the configured listeners for this
        // run, and is as explicit a choice as the configuration file.
        config.listeners = cli
            .listen
            .iter()
            .map(|&bind| petrel::config::ListenerConfig::tcp(bind))
            .collect();
        config
            .check_anonymous_access(&config.listeners)
            .map_err(|error| format!("--listen: {error}"))?;
    }
    Ok(config)
}

async fn serve(
    cli: &Cli,
    config: Config,
    tls: Vec<Option<Tls>>,
    logging: petrel::logging::Logging,
) -> ExitCode {
    // Signals are caught from before the first listener opens: a SIGTERM
    // that arrives as soon as the broker listens is a clean shutdown, not
    // the default action.
    let signals = Signals::install();
    // A configured listener that cannot bind is fatal. Of the default pair,
    // one is enough: a host or container without IPv6 still gets 127.0.0.1.
    let defaults = config.listeners.is_empty();
    let mut listeners = Vec::new();
    let configured = config.listeners();
    for (listener, tls) in configured.iter().zip(tls) {
        let address = listener.bind;
        match petrel::transport::bind(listener, &configured) {
            Ok(tcp) => listeners.push(Listener {
                tcp,
                tls,
                websocket: listener.websocket.as_ref().map(|ws| WebSocket {
                    path: ws.path.clone(),
                }),
                proxy_protocol: listener.proxy_protocol,
                allow_anonymous: Some(config.anonymous_allowed(listener)),
                config: Some(listener.clone()),
            }),
            Err(error) if defaults || listener.optional => {
                tracing::warn!(%address, %error, "cannot listen on this address; skipping it (optional)");
            }
            Err(error) => {
                tracing::error!(%address, %error, "cannot listen");
                return ExitCode::FAILURE;
            }
        }
    }
    if listeners.is_empty() {
        tracing::error!("no listener could be opened");
        return ExitCode::FAILURE;
    }
    let broker = match Broker::start_listeners(config, listeners, Vec::new()) {
        Ok(broker) => broker,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "petrel started"
    );
    let notifier = petrel::service::Notifier::from_env();
    notifier.ready(broker.metrics());
    let watchdog = notifier.spawn_watchdog(std::sync::Arc::clone(broker.metrics()));
    let reload = Reload {
        cli,
        logging,
        notifier: &notifier,
    };
    let requests = broker.reload_requests();
    signals.wait_for_shutdown(&broker, &reload, requests).await;
    tracing::info!("shutting down");
    notifier.stopping();
    if !broker.shutdown().await {
        tracing::warn!("some connections did not close within shutdown_timeout");
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    ExitCode::SUCCESS
}

/// The signals the broker acts on: SIGINT and SIGTERM stop it, SIGHUP
/// reloads certificates, passwords and the ACL.
struct Signals {
    #[cfg(unix)]
    streams: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(interrupt), Ok(terminate), Ok(hangup)) => Some([interrupt, terminate, hangup]),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                None
            }
        };
        Signals { streams }
    }

    #[cfg(not(unix))]
    fn install() -> Signals {
        Signals {}
    }

    /// Waits for SIGINT or SIGTERM, reloading on SIGHUP and on the admin
    /// API's requests meanwhile.
    #[cfg(unix)]
    async fn wait_for_shutdown(
        self,
        broker: &Broker,
        reload: &Reload<'_>,
        mut requests: Option<Requests>,
    ) {
        let Some([mut interrupt, mut terminate, mut hangup]) = self.streams else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = interrupt.recv() => return,
                _ = terminate.recv() => return,
                _ = hangup.recv() => {
                    reload.run(broker, "SIGHUP").await;
                }
                request = next_request(&mut requests) => {
                    let outcome = reload.run(broker, "API reload").await;
                    let _ = request.done.send(outcome);
                }
            }
        }
    }

    #[cfg(not(unix))]
    async fn wait_for_shutdown(
        self,
        _broker: &Broker,
        _reload: &Reload<'_>,
        _requests: Option<Requests>,
    ) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

type Requests = tokio::sync::mpsc::Receiver<petrel::admin::ReloadRequest>;

/// The next reload the admin API asks for (never, without the API).
async fn next_request(requests: &mut Option<Requests>) -> petrel::admin::ReloadRequest {
    if let Some(receiver) = requests {
        if let Some(request) = receiver.recv().await {
            return request;
        }
    }
    *requests = None;
    std::future::pending().await
}

/// What SIGHUP does: the configuration read again (the file, then the
/// command line over it), checked as `check-config` checks it, and put in
/// force; without a file, the files it names read again.
struct Reload<'a> {
    cli: &'a Cli,
    logging: petrel::logging::Logging,
    notifier: &'a petrel::service::Notifier,
}

impl Reload<'_> {
    /// Reloads (`why` names who asked, in the log) and says what changed.
    async fn run(&self, broker: &Broker, why: &str) -> petrel::admin::ReloadOutcome {
        self.notifier.reloading();
        let mut outcome = petrel::admin::ReloadOutcome {
            reloaded: true,
            messages: Vec::new(),
        };
        if self.cli.config.is_none() {
            let errors = broker.reload();
            if errors.is_empty() {
                tracing::info!("{why}: certificates, password file and ACL reloaded");
            }
            for error in errors {
                tracing::error!(%error, "{why}: not reloaded; the one in force stays");
                outcome.reloaded = false;
                outcome.messages.push(error);
            }
        } else {
            match prepare(self.cli) {
                Err(error) => {
                    tracing::error!(%error, "{why}: the configuration is not valid; nothing changed");
                    outcome.reloaded = false;
                    outcome.messages.push(error);
                }
                Ok((config, checked)) => {
                    self.logging.apply(&config);
                    for change in broker.apply(config, checked).await {
                        tracing::warn!("{why}: {change}");
                        outcome.messages.push(change);
                    }
                    tracing::info!("{why}: configuration reloaded");
                }
            }
        }
        self.notifier.ready(broker.metrics());
        outcome
    }
}
