//! Petrel's load tool: drives an MQTT broker with one of five scenarios and
//! reports throughput, latency, loss, connection cost, and the broker's CPU
//! time and memory read from /proc. `--compare` runs the same scenario
//! against Petrel and Mosquitto, alternating, and prints medians with the
//! ratio Petrel / Mosquitto.
//!
//! ```sh
//! cargo bench --bench load -- fan-in --qos 0 --publishers 8 --duration 10
//! cargo bench --bench load -- fan-out --subscribers 1000 --compare --rounds 3
//! cargo bench --bench load -- connections --connections 19000 --compare
//! ```
//!
//! See docs/performance.md for the scenarios, their flags and results.

mod broker;
mod client;
mod report;
mod scenarios;
mod transport;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use broker::{Broker, Kind};
use client::Error;
use report::Report;

/// Load generator for MQTT brokers.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Broker to start and measure.
    #[arg(long, value_enum, default_value = "petrel", global = true)]
    broker: Kind,
    /// Measure an already running broker at this address instead (no CPU or
    /// memory figures).
    #[arg(long, global = true)]
    addr: Option<SocketAddr>,
    /// Petrel's durable store: off, or on with a durability mode.
    #[arg(long, value_enum, default_value = "off", global = true)]
    store: broker::Store,
    /// Run against Petrel and Mosquitto alternately and compare medians.
    #[arg(long, global = true)]
    compare: bool,
    /// Rounds per broker with --compare.
    #[arg(long, default_value_t = 3, global = true)]
    rounds: usize,
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 10.0, global = true)]
    duration: f64,
    /// Print only the JSON lines.
    #[arg(long, global = true)]
    json: bool,
    /// Fail (exit 1) unless messages flowed, and none was lost where none
    /// may be (everything but unpaced QoS 0 fan-in); for CI smoke runs.
    #[arg(long, global = true)]
    check: bool,
    /// Scrape Petrel's `/metrics` (its admin listener on) every this many
    /// seconds during the run; 0: no admin listener, no scrape.
    #[arg(long, default_value_t = 0.0, global = true)]
    scrape: f64,
    /// Run Mosquitto with `set_tcp_nodelay true`. Its default (false,
    /// Nagle's algorithm on) lets the kernel merge its one-packet writes:
    /// more than twice the throughput unpaced, but tens of milliseconds
    /// of p99 latency at moderate rates. Petrel merges its writes itself.
    #[arg(long, global = true)]
    mosquitto_nodelay: bool,
    /// Threads the publishers run on: the tool's runtime workers, and with
    /// `--pacing even` the pacing threads (0: one per core).
    #[arg(long, default_value_t = 0, global = true)]
    tool_threads: usize,
    /// Connect over TLS of this version (the broker gets a TLS listener
    /// with a certificate made for the run).
    #[arg(long, value_enum, global = true)]
    tls: Option<transport::TlsVersion>,
    /// The key of the run's TLS certificate.
    #[arg(long, value_enum, default_value = "ecdsa", global = true)]
    tls_key: transport::TlsKey,
    /// Connect over WebSocket (`ws://`, path `/mqtt`, subprotocol `mqtt`;
    /// the broker gets a WebSocket listener).
    #[arg(long, global = true, conflicts_with = "tls")]
    websocket: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

/// How the publishers of fan-in and bridge runs publish.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Publishing {
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Outstanding QoS 1 messages per publisher.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Total messages per second across publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How paced publishers (`--rate`) space their messages.
    #[arg(long, value_enum, default_value = "even")]
    pub pacing: Pacing,
}

/// How a paced run spaces its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pacing {
    /// One message per write, each at its own time (message k of the run
    /// at k / rate), the publishers taking turns: as devices send.
    Even,
    /// Each publisher wakes about every millisecond and writes every
    /// message that fell due since in one write (the tool's first mode;
    /// bursts reward a broker that batches).
    Burst,
}

/// The subscriptions scenario's shape: how many clients, subscriptions,
/// sites and publishers, and at what rate.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Subscriptions {
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    #[arg(long, default_value_t = 100)]
    pub per_client: usize,
    #[arg(long, default_value_t = 100)]
    pub sites: usize,
    #[arg(long, default_value_t = 100)]
    pub publishers: usize,
    /// Messages per second while the subscriptions are in place.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// How long the clients stay idle before memory is read, after
    /// connecting and again after subscribing.
    #[arg(long, default_value_t = 20_000)]
    pub settle_ms: u64,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Clients connecting or subscribing at once.
    #[arg(long, default_value_t = 256)]
    pub parallel: usize,
}

/// The scenarios and their parameters.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// P publishers to bench/<i>, one subscriber on bench/#.
    FanIn {
        #[command(flatten)]
        publishing: Publishing,
        /// The subscriber keeps a persistent session (clean session 0), so
        /// QoS 1/2 deliveries to it go through the store.
        #[arg(long)]
        persistent: bool,
    },
    /// P publishers on one broker, their messages bridged (MQTT 3.1.1,
    /// `bench/#` out) to a second broker of the same kind, one subscriber
    /// there: messages per second through a bridge.
    Bridge {
        #[command(flatten)]
        publishing: Publishing,
    },
    /// One publisher, N subscribers on one topic. Unpaced, the publisher
    /// stays at most `window` messages ahead of the subscribers' average,
    /// so the figure is what the broker sustains, not how fast it queues.
    FanOut {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages per second published; 0 = closed loop with `window`.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Messages the publisher may run ahead of the subscribers.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// How a paced publisher (`--rate`) spaces its messages.
        #[arg(long, value_enum, default_value = "even")]
        pacing: Pacing,
    },
    /// N pairs, each publisher to its own subscriber's topic, each pair with
    /// a window of messages in flight.
    P2p {
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages in flight per pair (sent, not yet received).
        #[arg(long, default_value_t = 8)]
        window: usize,
    },
    /// A fixed total rate across P publishers; latency percentiles. By
    /// default spaced evenly over 100 publishers, one message per write.
    Latency {
        #[arg(long, default_value_t = 100)]
        publishers: usize,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Total messages per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        #[arg(long, value_enum, default_value = "even")]
        pacing: Pacing,
    },
    /// C idle clients with keep-alive 60 and one subscription each.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) to spread the
        /// connections over.
        #[arg(long, default_value_t = 8)]
        sources: u8,
        /// Connections being set up at once.
        #[arg(long, default_value_t = 256)]
        parallel: usize,
        /// How long every client stays idle before the broker's memory
        /// is read: long enough for Petrel's idle connections to hibernate
        /// (`hibernate_after_ms`, 2000 by default) and for its allocator
        /// to hand the memory their tasks held back to the system (about
        /// ten seconds later).
        #[arg(long, default_value_t = 20_000)]
        settle_ms: u64,
    },
    /// A reconnect storm, as after a gateway reboot: S persistent
    /// sessions, each subscribed at QoS 1 to a topic of its own, go
    /// offline; M QoS 1 messages are queued for each; then every one
    /// reconnects at once. Times how long until all are connected and
    /// have their messages, and counts what was lost.
    Reconnect {
        #[arg(long, default_value_t = 19_000)]
        sessions: usize,
        /// Messages queued for each session while it is offline.
        #[arg(long, default_value_t = 1)]
        messages: usize,
        /// Source addresses 127.0.0.2 .. 127.0.0.(1+N).
        #[arg(long, default_value_t = 8)]
        sources: u8,
        /// Connections being set up at once.
        #[arg(long, default_value_t = 256)]
        parallel: usize,
    },
    /// C clients with K subscriptions each (one `+` filter, one `#`
    /// filter, exact per-device filters for the rest; the first client of
    /// each site holds `site/{site}/#`). Times the subscribing, reads the
    /// memory it took, then measures latency with messages evenly paced
    /// over P publishers, each message matching two of the subscriptions.
    Subscriptions {
        #[command(flatten)]
        shape: Subscriptions,
    },
    /// N retained messages (`site/{i/10}/{metric}`, ten metrics, QoS 1,
    /// 16-byte payloads): how fast they are taken, the memory they hold,
    /// how long `#` and `site/+/temperature` take to receive theirs, and
    /// (on a broker the tool started, with its store on) how long the
    /// broker takes to stop and start again with them.
    Retained {
        #[arg(long, default_value_t = 1_000_000)]
        retained: usize,
        /// How long to wait before memory is read.
        #[arg(long, default_value_t = 5_000)]
        settle_ms: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    raise_file_limit();
    let threads = tool_threads(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("load: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli));
    transport::remove_certificates();
    if let Err(error) = result {
        eprintln!("load: {error}");
        std::process::exit(1);
    }
}

/// `--tool-threads`, 0 meaning one per core.
fn tool_threads(cli: &Cli) -> usize {
    match cli.tool_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    }
}

/// The brokers a run needs: the one measured, and for the bridge scenario
/// the remote it bridges to.
fn start_brokers(cli: &Cli, kind: Kind) -> Result<(Broker, Option<Broker>), Error> {
    match cli.scenario {
        Scenario::Bridge { publishing } => {
            let qos = publishing.qos;
            let remote = Broker::start(kind, broker::Store::Off)?;
            let local = Broker::start_bridged(kind, cli.store, Some((remote.addr, qos.min(1))))?;
            Ok((local, Some(remote)))
        }
        // Retained messages are restored from the store: it must be on.
        Scenario::Retained { .. } if cli.store == broker::Store::Off => {
            Ok((Broker::start(kind, broker::Store::Sync)?, None))
        }
        _ => Ok((Broker::start(kind, cli.store)?, None)),
    }
}

/// One scrape of `admin`'s `/metrics`.
fn scrape(admin: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).ok()?;
    let mut body = Vec::new();
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes())
        .and_then(|()| stream.read_to_end(&mut body))
        .ok()?;
    String::from_utf8(body).ok()
}

/// Scrapes `admin`'s `/metrics` every `every` until `stop`; the count of
/// scrapes and the last one.
fn scraper(
    admin: SocketAddr,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, String)> {
    std::thread::spawn(move || {
        let (mut count, mut last) = (0, String::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(text) = scrape(admin) {
                count += 1;
                last = text;
            }
            std::thread::sleep(every);
        }
        if let Some(text) = scrape(admin) {
            last = text;
        }
        (count, last)
    })
}

/// The broker's own delivery latency histogram in a scrape: the upper
/// bounds of the buckets holding its p50 and p99, in microseconds, and
/// its count.
fn broker_latency(scrape: &str) -> Option<(f64, f64, u64)> {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("petrel_delivery_latency_seconds_bucket{le=\"") else {
            continue;
        };
        let (bound, count) = rest.split_once("\"} ")?;
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            bound.parse().ok()?
        };
        buckets.push((bound, count.trim().parse().ok()?));
    }
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, count)| *count as f64 >= q * total as f64)
            .map_or(f64::INFINITY, |(bound, _)| bound * 1e6)
    };
    Some((quantile(0.5), quantile(0.99), total))
}

/// Runs `scenario` against `broker`, scraped if asked.
async fn measure(cli: &Cli, broker: &mut Broker, far: Option<SocketAddr>) -> Result<Report, Error> {
    let duration = Duration::from_secs_f64(cli.duration);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraping = match broker.admin {
        Some(admin) if cli.scrape > 0.0 => Some(scraper(
            admin,
            Duration::from_secs_f64(cli.scrape),
            std::sync::Arc::clone(&stop),
        )),
        _ => None,
    };
    let report = scenarios::run(
        &cli.scenario,
        broker.addr,
        Some(broker),
        far,
        duration,
        tool_threads(cli),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(scraping) = scraping {
        if let Ok((count, last)) = scraping.join() {
            eprintln!(
                "load: {count} scrapes of /metrics, the last {} bytes",
                last.len()
            );
            if let Some((p50, p99, samples)) = broker_latency(&last) {
                eprintln!(
                    "load: the broker's own delivery latency (petrel_delivery_latency_seconds, \
                     {samples} samples): p50 <= {p50} us, p99 <= {p99} us"
                );
            }
        }
    }
    report
}

async fn run(cli: Cli) -> Result<(), Error> {
    if cli.tls.is_some() || cli.websocket {
        if cli.addr.is_some() && cli.tls.is_some() {
            return Err(
                "--tls trusts only the certificate the tool makes for the broker it \
                 starts; it does not apply with --addr"
                    .into(),
            );
        }
        if matches!(
            cli.scenario,
            Scenario::Bridge { .. } | Scenario::Retained { .. }
        ) {
            return Err("the bridge and retained scenarios run over plain TCP only \
                 (a bridge and the restart probe speak MQTT over TCP)"
                .into());
        }
    }
    transport::set(match (cli.tls, cli.websocket) {
        (Some(version), _) => transport::Transport::Tls(version, cli.tls_key),
        (None, true) => transport::Transport::WebSocket,
        (None, false) => transport::Transport::Tcp,
    });
    broker::WITH_ADMIN.store(cli.scrape > 0.0, std::sync::atomic::Ordering::Relaxed);
    broker::MOSQUITTO_NODELAY.store(cli.mosquitto_nodelay, std::sync::atomic::Ordering::Relaxed);
    let duration = Duration::from_secs_f64(cli.duration);
    if let Some(addr) = cli.addr {
        if matches!(cli.scenario, Scenario::Bridge { .. }) {
            return Err("the bridge scenario starts its own brokers; --addr does not apply".into());
        }
        let report = scenarios::run(
            &cli.scenario,
            addr,
            None,
            None,
            duration,
            tool_threads(&cli),
        )
        .await?;
        report.print(cli.json);
        return check(&cli, &report);
    }
    if !cli.compare {
        let (mut broker, remote) = start_brokers(&cli, cli.broker)?;
        let far = remote.as_ref().map(|remote| remote.addr);
        let report = measure(&cli, &mut broker, far).await?;
        report.print(cli.json);
        return check(&cli, &report);
    }
    let mut reports: Vec<Report> = Vec::new();
    for round in 0..cli.rounds {
        // A B, then B A: neither broker always goes first.
        let order = if round % 2 == 0 {
            [Kind::Petrel, Kind::Mosquitto]
        } else {
            [Kind::Mosquitto, Kind::Petrel]
        };
        for kind in order {
            let (mut broker, remote) = start_brokers(&cli, kind)?;
            let far = remote.as_ref().map(|remote| remote.addr);
            let report = measure(&cli, &mut broker, far).await?;
            report.print(cli.json);
            check(&cli, &report)?;
            reports.push(report);
            drop(broker);
        }
    }
    report::print_comparison(&reports, cli.json);
    Ok(())
}

/// With `--check`: messages flowed, and none was lost where none may be.
fn check(cli: &Cli, report: &Report) -> Result<(), Error> {
    if !cli.check {
        return Ok(());
    }
    let figure = |name: &str| report.figure(name).unwrap_or(0.0);
    if let Scenario::Connections { connections, .. } = cli.scenario {
        if figure("held") as usize != connections {
            return Err(format!(
                "check: {} of {connections} connections held",
                figure("held")
            )
            .into());
        }
        return Ok(());
    }
    if let Scenario::Retained { .. } = cli.scenario {
        if figure("lost") > 0.0 {
            return Err(format!("check: {} retained messages missing", figure("lost")).into());
        }
        return Ok(());
    }
    if let Scenario::Reconnect { .. } = cli.scenario {
        if figure("lost") > 0.0 || figure("failed") > 0.0 {
            return Err(format!(
                "check: {} messages lost, {} reconnects failed",
                figure("lost"),
                figure("failed")
            )
            .into());
        }
        return Ok(());
    }
    if figure("received") <= 0.0 {
        return Err("check: no message was received".into());
    }
    let may_lose = matches!(
        cli.scenario,
        Scenario::FanIn {
            publishing: Publishing {
                qos: 0,
                rate: 0,
                ..
            },
            ..
        }
    );
    if !may_lose && figure("lost") > 0.0 {
        return Err(format!("check: {} messages lost", figure("lost")).into());
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one, for the tool and the
/// brokers it starts (which inherit it).
fn raise_file_limit() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}
