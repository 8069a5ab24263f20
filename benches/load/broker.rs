//! The brokers under test: Petrel (the release binary) or Mosquitto,
//! started by the tool on a free loopback port and stopped when dropped;
//! or an external broker given by address. CPU time and resident memory
//! are read from /proc for the brokers the tool started.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Error;
use crate::transport::{self, Transport};

/// Which broker a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Petrel's release binary.
    Petrel,
    /// Debian's mosquitto, with limits raised so they do not cap the test.
    Mosquitto,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Petrel => "petrel",
            Kind::Mosquitto => "mosquitto",
        }
    }
}

/// Petrel's store in a run: off (everything in memory), or on with one of
/// the `durability` modes. Mosquitto runs without persistence when it is
/// off, and with `persistence true` (saved at shutdown) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    /// `persistence = false`.
    Off,
    /// `durability = "sync"`.
    Sync,
    /// `durability = "periodic"` (flush_interval_ms = 1000).
    Periodic,
    /// `durability = "none"`.
    None,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Off => "off",
            Store::Sync => "sync",
            Store::Periodic => "periodic",
            Store::None => "none",
        }
    }
}

/// Whether Petrel runs with its admin listener (for `--scrape`).
pub static WITH_ADMIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether Mosquitto runs with `set_tcp_nodelay true` (for
/// `--mosquitto-nodelay`); its default is false, Nagle's algorithm on.
pub static MOSQUITTO_NODELAY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A broker process the tool started.
pub struct Broker {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Petrel's admin listener, with `--scrape`.
    pub admin: Option<SocketAddr>,
    /// Petrel's store in this run.
    pub store: Store,
    child: Child,
    /// The program and arguments it was started with, to start it again.
    command: (PathBuf, Vec<std::ffi::OsString>),
    _config: Option<tempfile_path::TempPath>,
    data_dir: Option<std::path::PathBuf>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// CPU and memory of a process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// utime + stime, in seconds.
    pub cpu_seconds: f64,
    /// VmRSS, in bytes.
    pub rss_bytes: u64,
}

impl Broker {
    /// Starts `kind` on a free port of 127.0.0.1 and waits until it accepts.
    pub fn start(kind: Kind, store: Store) -> Result<Broker, Error> {
        Broker::start_bridged(kind, store, None)
    }

    /// [`Broker::start`], with a bridge to `remote` forwarding `bench/#`
    /// out at `qos` (MQTT 3.1.1, Mosquitto's default bridge protocol),
    /// when given.
    pub fn start_bridged(
        kind: Kind,
        store: Store,
        bridge: Option<(SocketAddr, u8)>,
    ) -> Result<Broker, Error> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut data_dir = None;
        let mut admin = None;
        let (child, command, config) = match kind {
            Kind::Petrel => {
                let persistence = match store {
                    Store::Off => "persistence = false\n".to_owned(),
                    durability => {
                        let dir = data_dir_for(port)?;
                        let text = format!(
                            "persistence = true\ndata_dir = \"{}\"\ndurability = \"{}\"\n",
                            dir.display(),
                            durability.name()
                        );
                        data_dir = Some(dir);
                        text
                    }
                };
                let admin_table = if WITH_ADMIN.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                    admin = Some(at);
                    format!("\n[admin]\nbind = \"{at}\"\n")
                } else {
                    String::new()
                };
                let listener = match transport::current() {
                    Transport::Tcp => String::new(),
                    Transport::Tls(_, key) => {
                        let made = transport::certificate(key)?;
                        format!(
                            "\n[[listener]]\nbind = \"{addr}\"\n[listener.tls]\n\
                             cert = \"{}\"\nkey = \"{}\"\n",
                            made.cert.display(),
                            made.key.display()
                        )
                    }
                    Transport::WebSocket => format!(
                        "\n[[listener]]\nbind = \"{addr}\"\n[listener.websocket]\n\
                         path = \"{}\"\n",
                        transport::WS_PATH
                    ),
                };
                let config = tempfile_path::TempPath::write(
                    "petrel-load",
                    "toml",
                    &format!(
                        "sys_interval = 0\nlog_level = \"warn\"\nmax_connections = 1000000\n\
                         max_queued_messages = 100000\nmax_inflight = 65535\n\
                         max_retained_messages = 100000000\n{persistence}{listener}{}{admin_table}",
                        bridge.map_or(String::new(), |(remote, qos)| format!(
                            "\n[[bridge]]\nname = \"bench\"\naddresses = [\"{remote}\"]\n\
                             protocol = \"3.1.1\"\nclean_start = true\nmax_inflight = 1000\n\
                             max_queued_messages = 1000000\nreconnect_min_ms = 100\n\
                             reconnect_max_ms = 500\n\n[[bridge.topic]]\nfilter = \"bench/#\"\n\
                             direction = \"out\"\nqos = {qos}\n"
                        ))
                    ),
                )?;
                let mut args: Vec<std::ffi::OsString> = vec!["-c".into(), config.path().into()];
                if transport::current() == Transport::Tcp {
                    args.extend(["--listen".into(), addr.to_string().into()]);
                }
                let command = (petrel_binary(), args);
                (spawn(&command)?, command, config)
            }
            Kind::Mosquitto => {
                let nodelay = MOSQUITTO_NODELAY.load(std::sync::atomic::Ordering::Relaxed);
                let persistence = match store {
                    Store::Off => "persistence false\n".to_owned(),
                    _ => {
                        let dir = data_dir_for(port)?;
                        // Started as root, Mosquitto drops to its own user,
                        // which must be able to write its database here.
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
                        let text = format!(
                            "persistence true\npersistence_location {}/\n",
                            dir.display()
                        );
                        data_dir = Some(dir);
                        text
                    }
                };
                let listener = match transport::current() {
                    Transport::Tcp => String::new(),
                    Transport::Tls(_, key) => {
                        let made = transport::certificate(key)?;
                        format!(
                            "certfile {}\nkeyfile {}\n",
                            made.cert.display(),
                            made.key.display()
                        )
                    }
                    // Mosquitto 2.0.11 does not start with a WebSocket
                    // listener alone, so a plain one (unused) comes after
                    // it. Its WebSocket listener binds every address
                    // whatever it is given (the tool connects to loopback).
                    Transport::WebSocket => {
                        format!("protocol websockets\nlistener {} 127.0.0.1\n", free_port()?)
                    }
                };
                let config = tempfile_path::TempPath::write(
                    "mosquitto-load",
                    "conf",
                    &format!(
                        "listener {port} 127.0.0.1\n{listener}allow_anonymous true\n{persistence}\
                         max_queued_messages 100000\nmax_inflight_messages 0\n\
                         max_connections -1\nset_tcp_nodelay {nodelay}\nlog_dest none\n\
                         sys_interval 0\n{}",
                        bridge.map_or(String::new(), |(remote, qos)| format!(
                            "\nconnection bench\naddress {remote}\ntopic bench/# out {qos}\n\
                             cleansession true\nbridge_protocol_version mqttv311\n\
                             restart_timeout 1\n"
                        ))
                    ),
                )?;
                let command = (
                    PathBuf::from("mosquitto"),
                    vec!["-c".into(), config.path().into()],
                );
                let child = spawn(&command).map_err(|e| {
                    format!("cannot start mosquitto (apt-get install mosquitto): {e}")
                })?;
                (child, command, config)
            }
        };
        let broker = Broker {
            kind,
            addr,
            admin,
            store,
            child,
            command,
            _config: Some(config),
            data_dir,
        };
        broker.wait_until_listening()?;
        Ok(broker)
    }

    /// Stops the broker as a service manager does (SIGTERM, then waits for
    /// it to exit: it saves what it keeps) and starts it again on the same
    /// configuration and data. The seconds it took to stop, and from the
    /// start until it answered a CONNECT.
    pub fn restart(&mut self) -> Result<(f64, f64), Error> {
        let stopping = Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed", self.child.id()).into());
        }
        self.child.wait()?;
        let stop_seconds = stopping.elapsed().as_secs_f64();
        let starting = Instant::now();
        self.child = spawn(&self.command)?;
        self.wait_until_connectable()?;
        Ok((stop_seconds, starting.elapsed().as_secs_f64()))
    }

    /// Waits until the broker answers a CONNECT with a CONNACK: a bound
    /// socket may accept while the broker is still loading its store.
    fn wait_until_connectable(&self) -> Result<(), Error> {
        use std::io::{Read, Write};
        // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "p".
        const CONNECT: [u8; 15] = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p',
        ];
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let answered = std::net::TcpStream::connect(self.addr).and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(300)))?;
                stream.write_all(&CONNECT)?;
                let mut connack = [0u8; 4];
                stream.read_exact(&mut connack)?;
                Ok(connack[0] == 0x20 && connack[3] == 0)
            });
            if let Ok(true) = answered {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!("{} did not answer a CONNECT in 300 s", self.kind.name()).into())
    }

    fn wait_until_listening(&self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not start listening on {}",
            self.kind.name(),
            self.addr
        )
        .into())
    }

    /// The broker's CPU time and resident memory now.
    pub fn usage(&self) -> Result<Usage, Error> {
        usage_of(self.child.id())
    }
}

/// The release binary of Petrel next to this benchmark, or the one
/// `PETREL_BIN` names (to measure two builds side by side).
fn petrel_binary() -> PathBuf {
    std::env::var_os("PETREL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_petrel")))
}

/// Starts `program` with `args`, its output but errors discarded.
fn spawn((program, args): &(PathBuf, Vec<std::ffi::OsString>)) -> std::io::Result<Child> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// A fresh data directory for the broker on `port`.
fn data_dir_for(port: u16) -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("petrel-load-data-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Clock ticks per second for /proc/PID/stat times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime from /proc/PID/stat and VmRSS from /proc/PID/status.
pub fn usage_of(pid: u32) -> Result<Usage, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields are counted after ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("bad /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 of the man page, so utime (14) and stime
    // (15) are at indexes 11 and 12 here.
    let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0);
    Ok(Usage {
        cpu_seconds: (utime + stime) / clock_ticks(),
        rss_bytes: rss_kb * 1024,
    })
}

/// A file in the temporary directory, removed when dropped.
mod tempfile_path {
    use std::path::{Path, PathBuf};

    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn write(prefix: &str, extension: &str, contents: &str) -> std::io::Result<TempPath> {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let sequence = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "{prefix}-{}-{sequence}.{extension}",
                std::process::id()
            ));
            std::fs::write(&path, contents)?;
            Ok(TempPath(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
