use super::*;

#[test]
fn empty_file_gives_the_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config, Config::default());
    let addresses = config.listener_addresses();
    assert_eq!(addresses.len(), 2);
    assert!(addresses
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 1883));
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let error = Config::from_toml("max_inflight = 4\nmax_inflite = 5\n").unwrap_err();
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("max_inflite"), "{error}");
}

#[test]
fn invalid_value_names_key_and_line() {
    let error = Config::from_toml("sys_interval = 1\n\nmax_inflight = 0\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("max_inflight"));
    assert_eq!(error.line, Some(3));
    assert_eq!(
        error.to_string(),
        "line 3: `max_inflight`: must be at least 1"
    );
    let error = Config::from_toml("max_packet_size = \"big\"\n").unwrap_err();
    assert_eq!(error.line, Some(1));
}

#[test]
fn a_bad_bridge_key_is_named_with_its_line() {
    let text = "sys_interval = 0\n\n[[bridge]]\nname = \"up\"\naddresses = [\"h:1883\"]\n\
                [[bridge.topic]]\nfilter = \"a/#\"\ndirection = \"out\"\n\
                [[bridge.topic]]\nfilter = \"b/#\"\ndirection = \"in\"\nqos = 3\n";
    let error = Config::from_toml(text).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("bridge[0].topic[1].qos"));
    assert_eq!(error.line, Some(12), "{error}");
    let text = "[[bridge]]\nname = \"a b\"\naddresses = [\"h:1\"]\n\
                [[bridge.topic]]\nfilter = \"#\"\ndirection = \"out\"\n";
    let error = Config::from_toml(text).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("bridge[0].name"));
    assert_eq!(error.line, Some(2));
    let error = Config::from_toml(
        "[[bridge]]\nname = \"x\"\naddresses = []\n\
                                   [[bridge.topic]]\nfilter = \"#\"\ndirection = \"in\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("bridge[0].addresses"));
    assert_eq!(error.line, Some(3));
}

#[test]
fn non_loopback_listener_needs_an_explicit_choice() {
    let text = "[[listener]]\nbind = \"0.0.0.0:1883\"\n";
    let error = Config::from_toml(text).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("allow_anonymous"));
    assert!(error.message.contains("allow_anonymous = true"));
    let config = Config::from_toml(&format!("allow_anonymous = true\n{text}")).unwrap();
    assert_eq!(config.listener_addresses()[0].port(), 1883);
    assert!(Config::from_toml(&format!("allow_anonymous = false\n{text}")).is_ok());
}

// Where the store goes: an absolute data_dir as given; the default under
// systemd's StateDirectory= there; any other relative one next to the
// configuration file; without a file, the working directory.
#[test]
fn data_dir_is_located_from_the_configuration_file() {
    use std::path::{Path, PathBuf};
    let file = Path::new("/etc/petrel/petrel.toml");
    let state = || Some(PathBuf::from("/var/lib/petrel"));
    let located = |data_dir: &str, file: Option<&Path>, state: Option<PathBuf>| {
        let mut config = Config {
            data_dir: PathBuf::from(data_dir),
            ..Config::default()
        };
        config.locate_data_dir(file, state);
        config.data_dir
    };
    assert_eq!(
        located("/srv/mqtt", Some(file), state()),
        Path::new("/srv/mqtt")
    );
    assert_eq!(
        located(DEFAULT_DATA_DIR, Some(file), state()),
        Path::new("/var/lib/petrel")
    );
    assert_eq!(
        located(DEFAULT_DATA_DIR, None, state()),
        Path::new("/var/lib/petrel")
    );
    assert_eq!(
        located("store", Some(file), state()),
        Path::new("/etc/petrel/store")
    );
    assert_eq!(
        located(DEFAULT_DATA_DIR, Some(file), None),
        Path::new("/etc/petrel/./data")
    );
    assert_eq!(
        located(DEFAULT_DATA_DIR, None, None),
        Path::new(DEFAULT_DATA_DIR)
    );
    assert_eq!(
        located("store", Some(Path::new("petrel.toml")), None),
        Path::new("store")
    );
    assert_eq!(
        located(DEFAULT_DATA_DIR, None, Some(PathBuf::new())),
        Path::new(DEFAULT_DATA_DIR)
    );
}

// Errors are located from the TOML parser's spans, so a key written in an
// inline table or as a dotted key is found on its own line, like one in a
// [table] section.
#[test]
fn errors_in_inline_tables_and_dotted_keys_name_their_line() {
    let inline = "sys_interval = 0\n\
                  [[bridge]]\n\
                  name = \"cloud\"\n\
                  addresses = [\"mqtt.example.com:1883\"]\n\
                  topic = [\n\
                  \x20 { filter = \"a/#\", direction = \"out\", qos = 1 },\n\
                  \x20 { filter = \"b/#\", direction = \"out\", qos = 7 },\n\
                  ]\n";
    let error = Config::from_toml(inline).expect_err("qos 7");
    assert_eq!(error.key.as_deref(), Some("bridge[0].topic[1].qos"));
    assert_eq!(error.line, Some(7), "{error}");

    let dotted = "[[listener]]\nbind = \"127.0.0.1:8883\"\ntls.cert = \"/nonexistent/a.pem\"\n\
                  tls.key = \"/nonexistent/a.key\"\n";
    let error = ConfigError::key("listener[0].tls.cert", "cannot read it").located_in(dotted);
    assert_eq!(error.line, Some(3), "{error}");
    let error = ConfigError::key("listener[0].tls.key", "cannot read it").located_in(dotted);
    assert_eq!(error.line, Some(4), "{error}");

    // A value of the wrong type inside an inline table.
    let typed = "max_inflight = 4\n[[listener]]\nbind = \"127.0.0.1:8883\"\n\
                 tls = { cert = \"/a.pem\", key = 5 }\n";
    let error = Config::from_toml(typed).expect_err("key = 5");
    assert_eq!(error.line, Some(4), "{error}");
    assert_eq!(error.key.as_deref(), Some("listener[0].tls.key"), "{error}");

    // A key not written: the line of the table that should hold it.
    let error = ConfigError::key("listener[0].websocket", "missing").located_in(dotted);
    assert_eq!(error.line, Some(2), "{error}");
}
