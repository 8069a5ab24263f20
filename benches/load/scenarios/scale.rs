//! The scale scenarios: many subscriptions in place while messages flow,
//! and many retained messages kept, handed out and restored.

use tokio::sync::watch;

use super::{
    absorb, add_memory, even_publishers, histogram, publish_acknowledged, report, sample,
    take_packet, usage, Incoming, Spread, Tally, DRAIN_IDLE,
};
use crate::broker::Broker;
use crate::client::{Client, Error};
use crate::report::Report;
use petrel::protocol::QoS;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The filters of client `client` (device `client` of site `client mod
/// sites`): one `+` filter (`site/+/device/{client}/command`), one `#`
/// filter (the site's whole tree for the site's first client, the
/// device's configuration tree for the others), and exact filters for the
/// rest (`site/{site}/device/{client}/sensor/{k}`).
fn filters_of(client: usize, per_client: usize, sites: usize) -> Vec<String> {
    let site = client % sites;
    let mut filters = vec![format!("site/+/device/{client}/command")];
    filters.push(if client < sites {
        format!("site/{site}/#")
    } else {
        format!("site/{site}/device/{client}/config/#")
    });
    let exact = per_client.saturating_sub(2);
    filters.extend((0..exact).map(|k| format!("site/{site}/device/{client}/sensor/{k}")));
    filters.truncate(per_client);
    filters
}

/// Publisher `index`'s topic: a device that is not its site's first (so
/// that no client holds two filters that match it), every tenth to the
/// device's `+`-matched command topic, the others to one of its sensors.
/// Each message matches two subscriptions: the device's own and its
/// site's `#`.
fn publisher_topic(index: usize, clients: usize, per_client: usize, sites: usize) -> String {
    let device = sites + (index * 7_919) % (clients - sites);
    let site = device % sites;
    let exact = per_client.saturating_sub(2).max(1);
    if index % 10 == 9 || per_client < 3 {
        format!("site/{site}/device/{device}/command")
    } else {
        format!("site/{site}/device/{device}/sensor/{}", index % exact)
    }
}

/// Receives what comes to one client until `done`, into a tally made on
/// the first delivery (most clients get none, and a histogram is large).
async fn take_deliveries(
    mut client: Client,
    mut done: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
) -> Result<(Option<Tally>, Client), Error> {
    let mut tally: Option<Tally> = None;
    loop {
        tokio::select! {
            filled = client.reader.fill() => {
                if !filled? {
                    return Err("the broker closed a subscriber".into());
                }
            }
            _ = done.changed() => break,
        }
        let tally = tally.get_or_insert_with(|| Tally {
            received: 0,
            latency: histogram(),
            last: None,
        });
        let got = absorb(client.reader.buffer(), tally, client.writer.buffer());
        if got > 0 {
            tally.received += got;
            tally.last = Some(Instant::now());
            received.fetch_add(got, Ordering::AcqRel);
        }
    }
    Ok((tally, client))
}

/// Waits until `received` reaches `target` or stops growing for
/// [`DRAIN_IDLE`].
async fn wait_for(received: &AtomicU64, target: u64) {
    let mut last = (received.load(Ordering::Acquire), Instant::now());
    loop {
        let now = received.load(Ordering::Acquire);
        if now >= target || last.1.elapsed() >= DRAIN_IDLE {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// See [`crate::Scenario::Subscriptions`].
pub async fn subscriptions(
    addr: SocketAddr,
    broker: Option<&Broker>,
    shape: crate::Subscriptions,
    threads: usize,
    duration: Duration,
) -> Result<Report, Error> {
    let crate::Subscriptions {
        clients,
        per_client,
        sites,
        publishers,
        rate,
        settle_ms,
        sources,
        parallel,
    } = shape;
    let spread = Spread { sources, parallel };
    if sites == 0 || clients <= sites || per_client < 2 {
        return Err(
            "--clients must be more than --sites, --sites at least 1, --per-client at least 2"
                .into(),
        );
    }
    // The clients, connected and idle.
    let connected = spread
        .run(0..clients, |index| async move {
            let id = format!("load-subs-{index}");
            let client = Client::connect(addr, Some(spread.source(index)), &id, 60).await?;
            client.reset_on_close();
            Ok((index, client))
        })
        .await?;
    let mut all = Vec::with_capacity(clients);
    for result in connected {
        all.push(result.map_err(|e| format!("a client could not connect: {e}"))?);
    }
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    let connected = usage(broker);
    // Their subscriptions.
    let started = Instant::now();
    let subscribed = spread
        .run(all, |(index, mut client)| async move {
            client
                .subscribe_many(&filters_of(index, per_client, sites), QoS::AtMostOnce)
                .await?;
            Ok(client)
        })
        .await?;
    let subscribe_seconds = started.elapsed().as_secs_f64();
    let after_subscribing = usage(broker);
    let mut all = Vec::with_capacity(clients);
    for result in subscribed {
        all.push(result.map_err(|e| format!("a subscription failed: {e}"))?);
    }
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    let settled = usage(broker);
    // Messages through them, evenly paced.
    let (done, done_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for client in all {
        readers.spawn(take_deliveries(
            client,
            done_rx.clone(),
            Arc::clone(&received),
        ));
    }
    let mut senders = Vec::with_capacity(publishers);
    for index in 0..publishers {
        let client = Client::connect(addr, None, &format!("load-subs-pub-{index}"), 60).await?;
        senders.push((client, publisher_topic(index, clients, per_client, sites)));
    }
    let before = sample(broker);
    let started = Instant::now();
    let run = even_publishers(
        senders,
        QoS::AtMostOnce,
        64,
        rate,
        threads,
        started,
        started + duration,
    )
    .await?;
    let expected = run.sent * 2;
    wait_for(&received, expected).await;
    let after = sample(broker);
    let _ = done.send(true);
    let mut tally = Tally {
        received: 0,
        latency: histogram(),
        last: None,
    };
    let mut clients_back = Vec::with_capacity(clients);
    while let Some(result) = readers.join_next().await {
        let (part, client) = result??;
        if let Some(part) = part {
            tally.received += part.received;
            tally.last = tally.last.max(part.last);
            let _ = tally.latency.add(&part.latency);
        }
        clients_back.push(client);
    }
    let total = (clients * per_client) as f64;
    let mut report = report(
        "subscriptions",
        broker,
        vec![
            ("clients", clients.to_string()),
            ("per_client", per_client.to_string()),
            ("sites", sites.to_string()),
            ("publishers", publishers.to_string()),
            ("rate", rate.to_string()),
            ("settle_ms", settle_ms.to_string()),
            ("duration_s", duration.as_secs_f64().to_string()),
        ],
    );
    report.figures.push(("subscriptions", total));
    report
        .figures
        .push(("subscribes_per_sec", total / subscribe_seconds));
    if let (Some(connected), Some(subscribed), Some(settled)) =
        (connected, after_subscribing, settled)
    {
        report.figures.push((
            "subscribe_broker_cpu_seconds",
            subscribed.cpu_seconds - connected.cpu_seconds,
        ));
        report
            .figures
            .push(("broker_rss_connected_bytes", connected.rss_bytes as f64));
        let names = ("broker_rss_subscribed_bytes", "rss_bytes_per_subscription");
        add_memory(&mut report, names, connected, settled, total);
    }
    super::add_traffic_figures(
        &mut report,
        super::Traffic {
            sent: expected,
            received: tally.received,
            started,
            last: tally.last,
            before,
            after,
            latency: &tally.latency,
        },
    );
    run.add_figures(&mut report);
    drop(clients_back);
    Ok(report)
}

/// The ten metrics of a site's retained topics, `site/{site}/{metric}`.
const METRICS: [&str; 10] = [
    "temperature",
    "humidity",
    "pressure",
    "co2",
    "voltage",
    "current",
    "power",
    "energy",
    "status",
    "rssi",
];

fn retained_topic(index: usize) -> String {
    format!(
        "site/{}/{}",
        index / METRICS.len(),
        METRICS[index % METRICS.len()]
    )
}

/// Subscribes a new client to `filter` and times how long until `expected`
/// PUBLISH packets (the retained messages it matches) have come, giving up
/// when nothing comes for 30 s. The seconds and the count.
async fn time_retained(
    addr: SocketAddr,
    filter: &str,
    expected: usize,
) -> Result<(f64, usize), Error> {
    let mut client = Client::connect(addr, None, "load-retained-sub", 60).await?;
    client.reset_on_close();
    let started = Instant::now();
    let subscribe = petrel::protocol::Subscribe {
        packet_id: crate::client::packet_id(0),
        filters: vec![(
            petrel::protocol::TopicFilter::new(filter).map_err(|e| e.to_string())?,
            petrel::protocol::SubscriptionOptions::default(),
        )],
        properties: Default::default(),
    };
    client
        .writer
        .push(&petrel::protocol::Packet::Subscribe(subscribe))?;
    client.writer.flush().await?;
    let mut got = 0usize;
    let mut last = started;
    while got < expected {
        match tokio::time::timeout(Duration::from_secs(30), client.reader.fill()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err("the broker closed a subscriber".into()),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => break,
        }
        while let Some(incoming) = take_packet(client.reader.buffer()) {
            if let Incoming::Publish { .. } = incoming {
                got += 1;
                last = Instant::now();
            }
        }
    }
    Ok(((last - started).as_secs_f64(), got))
}

/// See [`crate::Scenario::Retained`].
pub async fn retained(
    broker: Option<&mut Broker>,
    addr: SocketAddr,
    count: usize,
    settle_ms: u64,
) -> Result<Report, Error> {
    let mut report = report(
        "retained",
        broker.as_deref(),
        vec![
            ("retained", count.to_string()),
            ("settle_ms", settle_ms.to_string()),
        ],
    );
    let before = usage(broker.as_deref());
    let started = Instant::now();
    let publisher = Client::connect(addr, None, "load-retained-pub", 60).await?;
    publish_acknowledged(publisher, count, true, retained_topic).await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let published = usage(broker.as_deref());
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    let settled = usage(broker.as_deref());
    let temperatures = count.div_ceil(METRICS.len());
    let (all_seconds, all_got) = time_retained(addr, "#", count).await?;
    let (plus_seconds, plus_got) = time_retained(addr, "site/+/temperature", temperatures).await?;
    let mut restart = None;
    if let Some(broker) = broker {
        let (stop, start) = broker.restart()?;
        let (seconds, got) = time_retained(addr, "site/+/temperature", temperatures).await?;
        restart = Some((stop, start, seconds, got, broker.usage().ok()));
    }
    report
        .figures
        .push(("retain_per_sec", count as f64 / publish_seconds));
    if let (Some(before), Some(published), Some(settled)) = (before, published, settled) {
        report.figures.push((
            "retain_broker_cpu_seconds",
            published.cpu_seconds - before.cpu_seconds,
        ));
        let names = ("broker_rss_retained_bytes", "rss_bytes_per_retained");
        add_memory(&mut report, names, before, settled, count as f64);
    }
    report.figures.push(("hash_seconds", all_seconds));
    report.figures.push(("hash_received", all_got as f64));
    report.figures.push(("plus_seconds", plus_seconds));
    report.figures.push(("plus_received", plus_got as f64));
    let mut lost = (count - all_got.min(count)) + (temperatures - plus_got.min(temperatures));
    if let Some((stop, start, seconds, got, usage)) = restart {
        report.figures.push(("stop_seconds", stop));
        report.figures.push(("start_seconds", start));
        report.figures.push(("plus_after_restart_seconds", seconds));
        report
            .figures
            .push(("plus_after_restart_received", got as f64));
        if let Some(usage) = usage {
            report
                .figures
                .push(("broker_rss_restarted_bytes", usage.rss_bytes as f64));
        }
        lost += temperatures - got.min(temperatures);
    }
    report.figures.push(("lost", lost as f64));
    Ok(report)
}
