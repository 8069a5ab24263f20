//! Fuzzes a whole connection: the bytes are what a client sends, from its
//! first byte, to a broker session over an in-memory stream; whatever the
//! broker answers is read and thrown away. A panic, or a session that does
//! not end once the input has ended, is a finding. Timers run on paused
//! time, so keep-alive and connect timeouts pass at once.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use petrel::auth::Authenticator;
use petrel::context::{Context, Core};
use petrel::metrics::Metrics;
use petrel::session::{serve, Origin};
use petrel::Config;
use tokio::io::AsyncWriteExt;

fn context() -> Arc<Context> {
    let config = Config {
        max_packet_size: 4096,
        max_queued_messages: 16,
        max_retained_messages: 16,
        max_retained_bytes: 64 * 1024,
        persistence: false,
        ..Config::default()
    };
    let core = Core::new(config, Arc::new(Metrics::default()), None);
    Arc::new(Context {
        core,
        auth: Authenticator::open(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let context = context();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (reader, writer) = tokio::io::split(server);
        let origin = Origin {
            peer: "127.0.0.1:1".parse().expect("address"),
            allow_anonymous: None,
            identity: None,
            listener: None,
        };
        let session = tokio::spawn(serve(Arc::clone(&context), reader, writer, origin, None));
        let (mut from_broker, mut to_broker) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_broker, &mut tokio::io::sink()).await;
        });
        let _ = to_broker.write_all(data).await;
        let _ = to_broker.shutdown().await;
        drop(to_broker);
        // The input has ended: the session must end (paused time runs the
        // keep-alive and connect timeouts out at once).
        let ended = tokio::time::timeout(std::time::Duration::from_secs(3600), session).await;
        assert!(ended.is_ok(), "the session outlived its input");
        drain.abort();
    });
});
