//! `petrel import-mosquitto mosquitto.conf`: a Mosquitto configuration
//! read directive by directive (following `include_dir`) into the
//! equivalent `petrel.toml`, with a note for every directive that could
//! not be carried over exactly (its file, line and why). What this covers
//! and what it does not is in docs/migrating-from-mosquitto.md.

pub mod mosquitto_db;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::{Table, Value};

use crate::config::Config;

/// Loads the retained messages of the Mosquitto persistence file `db`
/// into the store in `config`'s `data_dir` (which no running Petrel may
/// hold: the store refuses a second opener). Returns how many were
/// stored, and a line for each thing not carried over.
pub fn import_mosquitto_db(db: &Path, config: &Config) -> Result<(usize, Vec<String>), String> {
    use crate::protocol::{PublishProperties, QoS, TopicName};
    use crate::router::message::Message;
    use crate::router::Journal;
    let bytes =
        std::fs::read(db).map_err(|error| format!("cannot read {}: {error}", db.display()))?;
    let retained = mosquitto_db::read_retained(&bytes)
        .map_err(|error| format!("{}: {error}", db.display()))?;
    let config = Config {
        persistence: true,
        ..config.clone()
    };
    let (store, _) =
        crate::store::Store::open(&config, Arc::new(crate::metrics::Metrics::default()))
            .map_err(|error| error.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let mut notes = Vec::new();
    let mut count = 0;
    for message in retained {
        let expiry = match message.expiry_time {
            0 => None,
            at if at <= now => {
                notes.push(format!("{}: expired, not carried over", message.topic));
                continue;
            }
            at => Some(u32::try_from(at - now).unwrap_or(u32::MAX)),
        };
        let Ok(topic) = TopicName::new(message.topic.clone()) else {
            notes.push(format!(
                "{:?}: not a valid topic name, not carried over",
                message.topic
            ));
            continue;
        };
        let properties = match message.properties.is_empty() {
            true => PublishProperties::default(),
            false => match crate::protocol::decode_publish_properties(bytes::Bytes::from(
                message.properties,
            )) {
                Ok(properties) => properties,
                Err(error) => {
                    notes.push(format!(
                        "{}: its MQTT 5 properties do not decode ({error}): carried over without them",
                        message.topic
                    ));
                    PublishProperties::default()
                }
            },
        };
        let message = Arc::new(Message::new(
            topic,
            bytes::Bytes::from(message.payload),
            QoS::from_u8(message.qos).unwrap_or(QoS::AtMostOnce),
            true,
            PublishProperties {
                // What is left of it, from the file's expiry time.
                message_expiry_interval: expiry,
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                ..properties
            },
            None,
        ));
        store.retained(message.topic.as_str(), Some(&message));
        count += 1;
    }
    store.close();
    Ok((count, notes))
}

/// What an import made.
#[derive(Debug, Default)]
pub struct Import {
    /// The equivalent configuration, as TOML.
    pub toml: String,
    /// One line per directive not carried over exactly: `file:line:
    /// directive: why`.
    pub notes: Vec<String>,
}

impl Import {
    /// Whether every directive was carried over exactly.
    pub fn complete(&self) -> bool {
        self.notes.is_empty()
    }
}

/// The state of a reading: the tables made so far, and which listener or
/// bridge the directives now apply to.
#[derive(Default)]
struct Reader {
    top: Table,
    listeners: Vec<Table>,
    bridges: Vec<Table>,
    /// The listener (index) the last `listener` line opened.
    listener: Option<usize>,
    /// The bridge (index) the last `connection` line opened.
    bridge: Option<usize>,
    per_listener_settings: bool,
    /// Options given before any `listener` line: Mosquitto's default
    /// listener's (the `port` one), applied to it when it is made.
    default: Table,
    /// `bind_address`: the default listener's address.
    default_bind: Option<String>,
    /// The listener (index) `port` made, if it did.
    port_listener: Option<usize>,
    notes: Vec<String>,
    /// Files being read, to refuse an include loop.
    reading: Vec<PathBuf>,
}

/// Reads `path` (and what it includes) into a Petrel configuration.
pub fn import_mosquitto(path: &Path) -> Result<Import, String> {
    let mut reader = Reader::default();
    reader.file(path)?;
    Ok(reader.finish())
}

fn flag(value: &str) -> Option<bool> {
    match value {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A bridge's `topic PATTERN [DIRECTION [QOS [LOCAL REMOTE]]]` line as a
/// `[[bridge.topic]]` rule (`""` for an empty prefix).
fn topic_rule(value: &str) -> Table {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let mut rule = Table::new();
    rule.insert(
        "filter".to_owned(),
        Value::String(parts.first().copied().unwrap_or("#").to_owned()),
    );
    rule.insert(
        "direction".to_owned(),
        Value::String(parts.get(1).copied().unwrap_or("out").to_owned()),
    );
    let qos = parts
        .get(2)
        .and_then(|q| q.parse::<i64>().ok())
        .unwrap_or(0);
    rule.insert("qos".to_owned(), Value::Integer(qos));
    if let Some(local) = parts.get(3).filter(|p| **p != "\"\"") {
        rule.insert(
            "local_prefix".to_owned(),
            Value::String((*local).to_owned()),
        );
    }
    if let Some(remote) = parts.get(4).filter(|p| **p != "\"\"") {
        rule.insert(
            "remote_prefix".to_owned(),
            Value::String((*remote).to_owned()),
        );
    }
    rule
}

/// `address:port` as a bind, IPv6 in brackets, `localhost` as 127.0.0.1.
fn bind_of(address: &str, port: i64) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else if address == "localhost" {
        format!("127.0.0.1:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Mosquitto's `14d`, `2h`, `30m`, `10s` or plain seconds, in seconds.
fn duration(value: &str) -> Option<i64> {
    let (number, unit) = match value.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&value[..at], Some(c)),
        _ => (value, None),
    };
    let number: i64 = number.parse().ok()?;
    let scale = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some('w') => 604_800,
        Some('y') => 31_536_000,
        _ => return None,
    };
    number.checked_mul(scale)
}

impl Reader {
    fn file(&mut self, path: &Path) -> Result<(), String> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.reading.contains(&canonical) {
            return Err(format!("{}: included from itself", path.display()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        self.reading.push(canonical);
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (directive, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let at = format!("{}:{}: {directive}", path.display(), index + 1);
            self.directive(&at, directive, rest.trim())?;
        }
        self.reading.pop();
        Ok(())
    }

    fn note(&mut self, at: &str, why: impl std::fmt::Display) {
        self.notes.push(format!("{at}: {why}"));
    }

    /// Where a setting that Mosquitto scopes to a listener (with
    /// `per_listener_settings true`) goes: that listener, or the top.
    fn scoped(&mut self) -> &mut Table {
        match (self.per_listener_settings, self.listener) {
            (true, Some(index)) => &mut self.listeners[index],
            // Mosquitto's default listener's, with per-listener settings.
            (true, None) => &mut self.default,
            _ => &mut self.top,
        }
    }

    /// The listener the last `listener` line opened, or before any, the
    /// default listener's pending options.
    fn listener_table(&mut self, _at: &str) -> Option<&mut Table> {
        match self.listener {
            Some(index) => Some(&mut self.listeners[index]),
            None => Some(&mut self.default),
        }
    }

    fn tls(&mut self, at: &str, key: &str, value: Value) {
        if let Some(listener) = self.listener_table(at) {
            let tls = listener
                .entry("tls")
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(tls) = tls {
                tls.insert(key.to_owned(), value);
            }
        }
    }

    fn number(&mut self, at: &str, value: &str) -> Option<i64> {
        let parsed = value.parse::<i64>().ok();
        if parsed.is_none() {
            self.note(at, format!("{value:?} is not a number: not carried over"));
        }
        parsed
    }

    fn directive(&mut self, at: &str, directive: &str, value: &str) -> Result<(), String> {
        // A bridge's own directives first, while a `connection` block is open.
        if self.bridge.is_some() && self.bridge_directive(at, directive, value) {
            return Ok(());
        }
        if self.listener_directive(at, directive, value)
            || self.limit_directive(at, directive, value)
            || self.service_directive(at, directive, value)
        {
            return Ok(());
        }
        match directive {
            "include_dir" => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(value)
                    .map_err(|error| format!("{at}: cannot read {value}: {error}"))?
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| path.extension().is_some_and(|ext| ext == "conf"))
                    .collect();
                files.sort();
                for file in files {
                    self.file(&file)?;
                }
            }
            "per_listener_settings" => match flag(value) {
                Some(on) => self.per_listener_settings = on,
                None => self.note(at, "expected true or false"),
            },
            "allow_anonymous" => match flag(value) {
                Some(on) => {
                    self.scoped().insert("allow_anonymous".to_owned(), Value::Boolean(on));
                }
                None => self.note(at, "expected true or false"),
            },
            "password_file" | "acl_file" => {
                if self.per_listener_settings {
                    // Merged into one for the broker, a listener that
                    // Mosquitto kept closed would take another's users.
                    return Err(format!(
                        "{at}: a per-listener {directive} (per_listener_settings true) cannot be \
                         carried over: Petrel has one for the whole broker; import a file without \
                         per_listener_settings, or merge the files by hand"
                    ));
                }
                self.top
                    .insert(directive.to_owned(), Value::String(value.to_owned()));
            }
            "connection" => {
                let mut bridge = Table::new();
                bridge.insert("name".to_owned(), Value::String(value.to_owned()));
                self.bridges.push(bridge);
                self.bridge = Some(self.bridges.len() - 1);
            }
            "plugin" | "auth_plugin" | "plugin_opt" | "auth_opt" => self.note(at, "plugins are not carried over: Petrel has password files, ACL files, client certificates and enhanced authentication (MQTT 5 AUTH, SCRAM) built in"),
            other => self.note(at, format!("{other} is not carried over")),
        }
        Ok(())
    }

    /// A listener's directive (its address, protocol, TLS); false if `directive` is not one.
    fn listener_directive(&mut self, at: &str, directive: &str, value: &str) -> bool {
        match directive {
        "listener" => self.listener(at, value),
        "port" => {
            if let Some(port) = self.number(at, value) {
                let address = self
                    .default_bind
                    .clone()
                    .unwrap_or_else(|| "0.0.0.0".to_owned());
                let mut listener = std::mem::take(&mut self.default);
                listener.insert("bind".to_owned(), Value::String(bind_of(&address, port)));
                self.listeners.push(listener);
                self.port_listener = Some(self.listeners.len() - 1);
                self.listener = Some(self.listeners.len() - 1);
                self.bridge = None;
            }
        }
        "bind_address" => {
            self.default_bind = Some(value.to_owned());
            // After `port`: that listener moves to the address.
            if let Some(index) = self.port_listener {
                let port = self.listeners[index]
                    .get("bind")
                    .and_then(Value::as_str)
                    .and_then(|bind| bind.rsplit(':').next())
                    .and_then(|port| port.parse::<i64>().ok())
                    .unwrap_or(1883);
                self.listeners[index]
                    .insert("bind".to_owned(), Value::String(bind_of(value, port)));
            }
        }
        "socket_domain" => {
            // The listener was written for both families: keep one.
            let Some(index) = self.listener else {
                self.note(at, "before any listener: not carried over");
                return true;
            };
            let keep_v6 = value == "ipv6";
            let bind = self.listeners[index].get("bind").and_then(Value::as_str).map(str::to_owned);
            if let Some(bind) = bind {
                let port = bind.rsplit(':').next().unwrap_or("1883").to_owned();
                let new = if keep_v6 { format!("[::]:{port}") } else { format!("0.0.0.0:{port}") };
                if bind.starts_with("0.0.0.0:") || bind.starts_with("[::]:") {
                    self.listeners[index].insert("bind".to_owned(), Value::String(new));
                    self.listeners[index].remove("optional");
                    // Its twin for the other family goes.
                    let twin = if keep_v6 { format!("0.0.0.0:{port}") } else { format!("[::]:{port}") };
                    if let Some(position) = self.listeners.iter().position(|l| {
                        l.get("bind").and_then(Value::as_str) == Some(&twin)
                            && l.get("twin").and_then(Value::as_integer) == Some(index as i64)
                    }) {
                        self.listeners.remove(position);
                    }
                }
            }
        }
        "protocol" => match value {
            "mqtt" => {}
            "websockets" => {
                if let Some(listener) = self.listener_table(at) {
                    listener.insert(
                        "websocket".to_owned(),
                        Value::Table(Table::from_iter([(
                            "path".to_owned(),
                            Value::String("/mqtt".to_owned()),
                        )])),
                    );
                }
                self.note(at, "Mosquitto takes WebSocket connections on any path; Petrel on `/mqtt` only (listener.websocket.path)");
            }
            other => self.note(at, format!("protocol {other:?} is not one Petrel serves")),
        },
        "certfile" => self.tls(at, "cert", Value::String(value.to_owned())),
        "keyfile" => self.tls(at, "key", Value::String(value.to_owned())),
        "cafile" => self.tls(at, "ca", Value::String(value.to_owned())),
        "require_certificate" => match flag(value) {
            Some(on) => self.tls(at, "require_certificate", Value::Boolean(on)),
            None => self.note(at, "expected true or false"),
        },
        "use_identity_as_username" => match flag(value) {
            Some(on) => self.tls(at, "use_identity_as_username", Value::Boolean(on)),
            None => self.note(at, "expected true or false"),
        },
        "use_subject_as_username" => self.note(at, "Petrel uses the certificate's common name (use_identity_as_username), not the whole subject"),
        "capath" => self.note(at, "a directory of CA files: concatenate them into one `ca` file"),
        "tls_version" | "ciphers" | "ciphers_tls1.3" => self.note(at, "Petrel speaks TLS 1.2 and 1.3 with rustls's safe defaults; not configurable"),
            _ => return false,
        }
        true
    }

    /// A bound on connections, packets and queues; false if `directive` is not one.
    fn limit_directive(&mut self, at: &str, directive: &str, value: &str) -> bool {
        match directive {
            "max_connections" => {
                if let Some(count) = self.number(at, value) {
                    if count < 0 {
                        self.note(
                            at,
                            "-1 (no limit): Petrel always has one; its default (100000) stays",
                        );
                    } else {
                        self.top
                            .insert("max_connections".to_owned(), Value::Integer(count));
                        if self.listener.is_some() {
                            self.note(
                                at,
                                "per listener in Mosquitto, for the whole broker in Petrel",
                            );
                        }
                    }
                }
            }
            "max_keepalive" => {
                if let Some(seconds) = self.number(at, value) {
                    self.top
                        .insert("max_keep_alive".to_owned(), Value::Integer(seconds));
                }
            }
            "max_packet_size" => {
                if let Some(bytes) = self.number(at, value) {
                    if bytes > 0 {
                        self.top
                            .insert("max_packet_size".to_owned(), Value::Integer(bytes));
                    }
                }
            }
            "message_size_limit" => {
                if let Some(bytes) = self.number(at, value) {
                    if bytes > 0 {
                        self.top.insert(
                            "max_packet_size".to_owned(),
                            Value::Integer(bytes.saturating_add(65_536)),
                        );
                        self.note(at, "a payload limit; Petrel limits the whole packet (max_packet_size), set to it plus 64 KiB for the topic and properties");
                    }
                }
            }
            "max_inflight_messages" => {
                if let Some(count) = self.number(at, value) {
                    let count = if count <= 0 {
                        65_535
                    } else {
                        count.min(65_535)
                    };
                    self.top
                        .insert("max_inflight".to_owned(), Value::Integer(count));
                }
            }
            "max_queued_messages" => {
                if let Some(count) = self.number(at, value) {
                    if count <= 0 {
                        self.note(at, "0 (no limit): Petrel always has one; its default stays");
                    } else {
                        self.top
                            .insert("max_queued_messages".to_owned(), Value::Integer(count));
                    }
                }
            }
            "max_queued_bytes" => {
                if let Some(bytes) = self.number(at, value) {
                    if bytes > 0 {
                        self.top
                            .insert("max_queued_bytes".to_owned(), Value::Integer(bytes));
                    }
                }
            }
            "queue_qos0_messages" => match flag(value) {
                Some(on) => {
                    self.top.insert("queue_qos0".to_owned(), Value::Boolean(on));
                }
                None => self.note(at, "expected true or false"),
            },
            _ => return false,
        }
        true
    }

    /// Persistence, expiry, `$SYS`, sockets and logging; false if `directive` is not one.
    fn service_directive(&mut self, at: &str, directive: &str, value: &str) -> bool {
        match directive {
        "persistent_client_expiration" => match duration(value) {
            Some(seconds) => {
                self.top.insert(
                    "max_session_expiry_interval".to_owned(),
                    Value::Integer(seconds.min(i64::from(u32::MAX))),
                );
                self.note(at, "carried over as the longest session expiry granted (max_session_expiry_interval), which also bounds what MQTT 5 clients ask for");
            }
            None => self.note(at, format!("{value:?} is not a duration")),
        },
        "persistence" => match flag(value) {
            Some(on) => {
                self.top.insert("persistence".to_owned(), Value::Boolean(on));
            }
            None => self.note(at, "expected true or false"),
        },
        "persistence_location" => {
            self.top.insert("data_dir".to_owned(), Value::String(value.to_owned()));
            self.note(at, "Petrel keeps its own store (petrel.redb) there; what mosquitto.db holds is not read");
        }
        "autosave_interval" | "autosave_on_changes" | "persistence_file" => self.note(at, "Petrel writes its store as acknowledgements need (durability, default \"sync\"): nothing to schedule"),
        "retain_available" => match flag(value) {
            Some(on) => {
                self.top.insert("retain_available".to_owned(), Value::Boolean(on));
            }
            None => self.note(at, "expected true or false"),
        },
        "sys_interval" => {
            if let Some(seconds) = self.number(at, value) {
                self.top.insert("sys_interval".to_owned(), Value::Integer(seconds.max(0)));
            }
        }
        "set_tcp_nodelay" => match flag(value) {
            Some(on) => {
                self.top.insert("tcp_nodelay".to_owned(), Value::Boolean(on));
            }
            None => self.note(at, "expected true or false"),
        },
        "log_type" => {
            let level = match value {
                "debug" | "all" => Some("debug"),
                "information" | "notice" | "subscribe" | "unsubscribe" | "websockets" => Some("info"),
                "warning" => Some("warn"),
                "error" => Some("error"),
                "none" => Some("error"),
                _ => None,
            };
            match level {
                Some(level) => {
                    // The most detailed of the types asked for.
                    let order = ["error", "warn", "info", "debug"];
                    let current = self.top.get("log_level").and_then(Value::as_str).unwrap_or("error");
                    let rank = |l: &str| order.iter().position(|o| *o == l).unwrap_or(0);
                    if rank(level) >= rank(current) {
                        self.top.insert("log_level".to_owned(), Value::String(level.to_owned()));
                    }
                }
                None => self.note(at, format!("log type {value:?} has no Petrel level")),
            }
        }
        "log_dest" | "log_timestamp" | "log_timestamp_format" | "pid_file" | "user" => self.note(at, "not needed: Petrel logs to standard output (the journal under systemd) and runs as its service's user"),
        "connection_messages" => {
            if flag(value) == Some(false) {
                self.note(at, "Petrel always logs connects and disconnects at info (log_level = \"warn\" hides them)");
            }
        }
        "allow_zero_length_clientid" => {
            if flag(value) == Some(false) {
                self.note(at, "Petrel assigns a client id to an empty one, as MQTT allows; it cannot refuse them");
            }
        }
            _ => return false,
        }
        true
    }
    /// `listener PORT [ADDRESS]`.
    fn listener(&mut self, at: &str, value: &str) {
        self.bridge = None;
        let mut parts = value.split_whitespace();
        let Some(port) = parts.next().and_then(|port| port.parse::<u16>().ok()) else {
            self.note(at, "expected a port: not carried over");
            return;
        };
        match parts.next() {
            Some(address) if address.starts_with('/') => {
                self.note(at, "a unix socket listener: not carried over");
            }
            Some(address) => {
                let bind = if address.contains(':') {
                    format!("[{address}]:{port}")
                } else if address == "localhost" {
                    format!("127.0.0.1:{port}")
                } else {
                    format!("{address}:{port}")
                };
                self.listeners
                    .push(Table::from_iter([("bind".to_owned(), Value::String(bind))]));
                self.listener = Some(self.listeners.len() - 1);
            }
            None => {
                // Every address of both families, as Mosquitto listens.
                let index = self.listeners.len();
                self.listeners.push(Table::from_iter([(
                    "bind".to_owned(),
                    Value::String(format!("0.0.0.0:{port}")),
                )]));
                self.listeners.push(Table::from_iter([
                    ("bind".to_owned(), Value::String(format!("[::]:{port}"))),
                    ("optional".to_owned(), Value::Boolean(true)),
                    ("twin".to_owned(), Value::Integer(index as i64)),
                ]));
                self.listener = Some(index);
            }
        }
    }

    /// A bridge's directive; false if it is not one.
    fn bridge_directive(&mut self, at: &str, directive: &str, value: &str) -> bool {
        let Some(index) = self.bridge else {
            return false;
        };
        let mut note = None;
        let bridge = &mut self.bridges[index];
        match directive {
            "address" | "addresses" => {
                let addresses: Vec<Value> = value
                    .split([' ', ','])
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        Value::String(if a.contains(':') {
                            a.to_owned()
                        } else {
                            format!("{a}:1883")
                        })
                    })
                    .collect();
                bridge.insert("addresses".to_owned(), Value::Array(addresses));
            }
            "topic" => {
                let rule = topic_rule(value);
                let topics = bridge
                    .entry("topic")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(topics) = topics {
                    topics.push(Value::Table(rule));
                }
            }
            "bridge_protocol_version" => {
                let protocol = match value {
                    "mqttv50" => Some("5.0"),
                    "mqttv311" => Some("3.1.1"),
                    _ => None,
                };
                match protocol {
                    Some(protocol) => {
                        bridge.insert("protocol".to_owned(), Value::String(protocol.to_owned()));
                    }
                    None => note = Some(format!("{value:?}: Petrel bridges speak 3.1.1 or 5.0")),
                }
            }
            "cleansession" => {
                bridge.insert("clean_start".to_owned(), Value::Boolean(value == "true"));
            }
            "keepalive_interval" => {
                if let Ok(seconds) = value.parse::<i64>() {
                    bridge.insert("keep_alive".to_owned(), Value::Integer(seconds));
                }
            }
            "remote_clientid" | "clientid" => {
                bridge.insert("client_id".to_owned(), Value::String(value.to_owned()));
            }
            "remote_username" | "username" => {
                bridge.insert("username".to_owned(), Value::String(value.to_owned()));
            }
            "remote_password" | "password" => {
                bridge.insert("password".to_owned(), Value::String(value.to_owned()));
            }
            "bridge_cafile" | "bridge_certfile" | "bridge_keyfile" => {
                let key = match directive {
                    "bridge_cafile" => "ca",
                    "bridge_certfile" => "cert",
                    _ => "key",
                };
                let tls = bridge
                    .entry("tls")
                    .or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(tls) = tls {
                    tls.insert(key.to_owned(), Value::String(value.to_owned()));
                }
            }
            "bridge_insecure"
            | "bridge_capath"
            | "bridge_tls_version"
            | "try_private"
            | "notifications"
            | "notification_topic"
            | "round_robin"
            | "start_type"
            | "restart_timeout"
            | "idle_timeout"
            | "bridge_attempt_unsubscribe"
            | "local_clientid"
            | "local_username"
            | "local_password"
            | "bridge_max_packet_size"
            | "bridge_outgoing_retain" => {
                note = Some("a bridge option Petrel does not have: not carried over".to_owned());
            }
            _ => return false,
        }
        if let Some(why) = note {
            self.note(at, why);
        }
        true
    }

    fn finish(mut self) -> Import {
        if !self.default.is_empty() {
            let keys: Vec<String> = self.default.keys().cloned().collect();
            self.notes.push(format!(
                "{} before any listener apply to Mosquitto's default listener, which this file \
                 does not open with `port`: not carried over",
                keys.join(", ")
            ));
        }
        for listener in &mut self.listeners {
            listener.remove("twin");
        }
        // Mosquitto 2 refuses anonymous clients on configured listeners
        // unless told otherwise; Petrel refuses to start until told.
        let stated = self.top.contains_key("allow_anonymous")
            || self
                .listeners
                .iter()
                .any(|l| l.contains_key("allow_anonymous"));
        if !self.listeners.is_empty() && !stated {
            self.top
                .insert("allow_anonymous".to_owned(), Value::Boolean(false));
        }
        let mut top = self.top;
        if !self.listeners.is_empty() {
            top.insert(
                "listener".to_owned(),
                Value::Array(self.listeners.into_iter().map(Value::Table).collect()),
            );
        }
        if !self.bridges.is_empty() {
            top.insert(
                "bridge".to_owned(),
                Value::Array(self.bridges.into_iter().map(Value::Table).collect()),
            );
        }
        let body = toml::to_string(&top).unwrap_or_default();
        Import {
            toml: format!(
                "# Imported from a Mosquitto configuration by `petrel import-mosquitto`.\n{body}"
            ),
            notes: self.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("14d"), Some(14 * 86_400));
        assert_eq!(duration("2h"), Some(7200));
        assert_eq!(duration("30"), Some(30));
        assert_eq!(duration("x"), None);
    }
}
