//! The dashboard in a real browser: headless Chromium driven by
//! playwright-core (tests/interop/dashboard_check.mjs) against a broker
//! with its admin listener on. Skipped, with the reason printed, where
//! Chromium, node or the npm packages are missing; CI installs them.
//! Screenshots land in target/dashboard/.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use petrel::config::AdminConfig;
use petrel::Config;

fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    candidates.into_iter().flatten().find(|path| path.is_file())
}

#[tokio::test]
async fn the_dashboard_shows_connections_traffic_and_kicks_a_client() {
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let Some(chromium) = chromium() else {
        eprintln!("skipped: no chromium (apt-get install chromium)");
        return;
    };
    if !interop.join("node_modules/playwright-core").is_dir() {
        eprintln!("skipped: tests/interop has no node_modules (cd tests/interop && npm ci)");
        return;
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: node is not installed");
        return;
    }
    let config = Config {
        admin: AdminConfig {
            bind: Some("127.0.0.1:0".parse().expect("address")),
            ..AdminConfig::default()
        },
        ..test_config()
    };
    let broker = TestBroker::with_config(config).await;
    let admin = broker.broker.admin_addr().expect("admin listener");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(&interop)
        .arg("dashboard_check.mjs")
        .arg(format!("http://{admin}/"))
        .arg(broker.addr.port().to_string())
        .arg(&shots)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("the browser check ends within 90 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("dashboard: ok"),
        "{stdout}\n{stderr}"
    );
    for shot in ["1-loaded.png", "2-traffic.png", "3-kicked.png"] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |meta| meta.len());
        assert!(size > 10_000, "{shot}: {size} bytes");
    }
}
