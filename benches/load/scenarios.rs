//! The five scenarios. Publishers encode PUBLISH packets straight into
//! their write buffers with a send timestamp in the first 8 payload bytes;
//! subscribers scan what arrives without allocating, count it and record
//! the latency.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::broker::{Broker, Usage};
use crate::client::{packet_id, Client, Error, PacedWriter, Reader};
use crate::report::Report;
use crate::{Pacing, Scenario};
use petrel::protocol::{Packet, QoS};

mod scale;

/// How long a subscriber waits for stragglers once publishing stopped.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// How often a subscriber looks whether the run is over.
const TICK: Duration = Duration::from_millis(100);
/// Messages encoded before each write when publishing unpaced.
const BATCH: usize = 64;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn qos_of(value: u8) -> Result<QoS, Error> {
    match value {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err("--qos must be 0 or 1".into()),
    }
}

/// Runs one scenario once.
pub async fn run(
    scenario: &Scenario,
    addr: SocketAddr,
    mut broker_mut: Option<&mut Broker>,
    far: Option<SocketAddr>,
    duration: Duration,
    threads: usize,
) -> Result<Report, Error> {
    let _ = epoch();
    let broker = broker_mut.as_deref();
    match scenario.clone() {
        Scenario::FanIn {
            publishing,
            persistent,
        } => {
            let parameters = FanIn::new(publishing, persistent, None, threads)?;
            let mut report = fan_in(addr, broker, parameters, duration).await?;
            report.scenario = "fan-in".into();
            Ok(report)
        }
        Scenario::Bridge { publishing } => {
            let far = far.ok_or("the bridge scenario needs its remote broker")?;
            let parameters = FanIn::new(publishing, false, Some(far), threads)?;
            let mut report = fan_in(addr, broker, parameters, duration).await?;
            report.scenario = "bridge".into();
            Ok(report)
        }
        Scenario::Latency {
            publishers,
            qos,
            payload,
            rate,
            pacing,
        } => {
            let mut report = fan_in(
                addr,
                broker,
                FanIn {
                    publishers,
                    qos: qos_of(qos)?,
                    window: 1024,
                    payload,
                    rate,
                    pacing,
                    threads,
                    persistent: false,
                    far: None,
                },
                duration,
            )
            .await?;
            report.scenario = "latency".into();
            Ok(report)
        }
        Scenario::FanOut {
            subscribers,
            qos,
            payload,
            rate,
            window,
            pacing,
        } => {
            fan_out(
                addr,
                broker,
                FanOut {
                    subscribers,
                    qos: qos_of(qos)?,
                    payload,
                    rate,
                    window,
                    pacing,
                    threads,
                },
                duration,
            )
            .await
        }
        Scenario::P2p {
            pairs,
            qos,
            payload,
            window,
        } => p2p(addr, broker, pairs, qos_of(qos)?, payload, window, duration).await,
        Scenario::Connections {
            connections,
            sources,
            parallel,
            settle_ms,
        } => connections_scenario(addr, broker, connections, sources, parallel, settle_ms).await,
        Scenario::Reconnect {
            sessions,
            messages,
            sources,
            parallel,
        } => {
            let spread = Spread { sources, parallel };
            reconnect_scenario(addr, broker, sessions, messages, spread).await
        }
        Scenario::Subscriptions { shape } => {
            scale::subscriptions(addr, broker, shape, threads, duration).await
        }
        Scenario::Retained {
            retained,
            settle_ms,
        } => scale::retained(broker_mut.take(), addr, retained, settle_ms).await,
    }
}

/// Writes one PUBLISH (3.1.1) with a timestamped payload of `size` bytes.
fn push_publish(buf: &mut BytesMut, topic: &[u8], qos: QoS, id: u16, size: usize) {
    let size = size.max(8);
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + size;
    buf.put_u8(0x30 | (qos as u8) << 1);
    let mut length = remaining;
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if length == 0 {
            break;
        }
    }
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic);
    if id_len > 0 {
        buf.put_u16(id);
    }
    buf.put_u64(now_nanos());
    buf.put_bytes(0, size - 8);
}

/// What a subscriber or publisher sees arrive.
enum Incoming {
    Publish {
        packet_id: Option<u16>,
        sent_nanos: u64,
    },
    PubAck,
    Other,
}

/// Takes one whole packet off the front of `buf`, without allocating.
fn take_packet(buf: &mut BytesMut) -> Option<Incoming> {
    let first = *buf.first()?;
    let mut remaining = 0usize;
    let mut header = 1;
    loop {
        let byte = *buf.get(header)?;
        remaining |= usize::from(byte & 0x7F) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Some(Incoming::Other);
        }
    }
    if buf.len() < header + remaining {
        return None;
    }
    let body = &buf[header..header + remaining];
    let incoming = match first >> 4 {
        3 => {
            let qos = (first >> 1) & 0b11;
            let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let mut at = 2 + topic_len;
            let packet_id = if qos > 0 {
                let id = u16::from_be_bytes([body[at], body[at + 1]]);
                at += 2;
                Some(id)
            } else {
                None
            };
            let sent_nanos = body.get(at..at + 8).map_or(0, |b| {
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            });
            Incoming::Publish {
                packet_id,
                sent_nanos,
            }
        }
        4 => Incoming::PubAck,
        _ => Incoming::Other,
    };
    buf.advance(header + remaining);
    Some(incoming)
}

/// A subscriber's tally.
struct Tally {
    received: u64,
    latency: Histogram<u64>,
    last: Option<Instant>,
}

/// Sums the subscribers' tallies.
async fn gather(mut subscribers: JoinSet<Result<Tally, Error>>) -> Result<Tally, Error> {
    let mut total = Tally {
        received: 0,
        latency: histogram(),
        last: None,
    };
    while let Some(result) = subscribers.join_next().await {
        let tally = result??;
        total.received += tally.received;
        total.last = total.last.max(tally.last);
        let _ = total.latency.add(&tally.latency);
    }
    Ok(total)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// When a subscriber stops: once `done` is set, when it has had the
/// `expected` messages, or when nothing has come for [`DRAIN_IDLE`].
struct Stop {
    done: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
    quiet_since: Instant,
    stopping_since: Option<Instant>,
}

impl Stop {
    fn new(done: Arc<AtomicBool>, expected: Arc<AtomicU64>) -> Stop {
        Stop {
            done,
            expected,
            quiet_since: Instant::now(),
            stopping_since: None,
        }
    }

    /// Whether the subscriber has had all it will get, having `received`.
    fn reached(&mut self, received: u64) -> bool {
        if !self.done.load(Ordering::Acquire) {
            return false;
        }
        self.stopping_since.get_or_insert_with(Instant::now);
        let target = self.expected.load(Ordering::Acquire);
        target > 0 && received >= target
    }

    /// Something arrived now; the time, for the tally.
    fn arrived(&mut self) -> Instant {
        self.quiet_since = Instant::now();
        self.quiet_since
    }

    /// Whether the run is over and nothing came for [`DRAIN_IDLE`].
    fn drained(&self) -> bool {
        self.stopping_since
            .is_some_and(|since| self.quiet_since.max(since).elapsed() >= DRAIN_IDLE)
    }
}

/// Receives until `done` says so (then until nothing arrives for
/// [`DRAIN_IDLE`], or `expected` messages have come).
async fn subscribe_loop(
    mut client: Client,
    done: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
    counter: Option<(Arc<AtomicU64>, Arc<Notify>)>,
) -> Result<Tally, Error> {
    let mut tally = Tally {
        received: 0,
        latency: histogram(),
        last: None,
    };
    // One timer for the whole run, re-armed only when it fires: a timeout
    // per read would register a timer (and wake the runtime's driver) for
    // every message.
    let tick = tokio::time::sleep(TICK);
    tokio::pin!(tick);
    let mut stop = Stop::new(done, expected);
    loop {
        if stop.reached(tally.received) {
            break;
        }
        let filled = tokio::select! {
            biased;
            filled = client.reader.fill() => Some(filled?),
            () = &mut tick => None,
        };
        match filled {
            Some(true) => {}
            Some(false) => return Err("the broker closed a subscriber".into()),
            None => {
                tick.as_mut().reset(tokio::time::Instant::now() + TICK);
                if stop.drained() {
                    break;
                }
                continue;
            }
        }
        let got = absorb(client.reader.buffer(), &mut tally, client.writer.buffer());
        if got > 0 {
            tally.received += got;
            tally.last = Some(stop.arrived());
            if let Some((received, notify)) = &counter {
                received.fetch_add(got, Ordering::AcqRel);
                notify.notify_one();
            }
        }
        client.writer.flush().await?;
    }
    client.writer.disconnect().await;
    Ok(tally)
}

/// Takes the PUBLISH packets out of `read`: counts them, records their
/// latency, and puts a PUBACK for each QoS 1 one into `acks`.
fn absorb(read: &mut BytesMut, tally: &mut Tally, acks: &mut BytesMut) -> u64 {
    let mut got = 0;
    while let Some(incoming) = take_packet(read) {
        if let Incoming::Publish {
            packet_id,
            sent_nanos,
        } = incoming
        {
            got += 1;
            let micros = now_nanos().saturating_sub(sent_nanos) / 1000;
            let _ = tally.latency.record(micros.max(1));
            if let Some(id) = packet_id.filter(|id| *id != 0) {
                acks.put_slice(&[0x40, 0x02]);
                acks.put_u16(id);
            }
        }
    }
    got
}

/// The one subscriber of fan-in, latency and bridge runs, on a thread of
/// its own with blocking reads, as a simple client does: one `read` per
/// wake-up and no event loop around it. Stops as [`subscribe_loop`] does.
fn blocking_subscriber(
    client: Client,
    done: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
) -> Result<Tally, Error> {
    use std::io::Read;
    let mut tally = Tally {
        received: 0,
        latency: histogram(),
        last: None,
    };
    let mut plain = client.into_std()?;
    plain.stream.set_nonblocking(false)?;
    plain.stream.set_read_timeout(Some(TICK))?;
    let mut acks = BytesMut::with_capacity(4096);
    let mut frame = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stop = Stop::new(done, expected);
    loop {
        if stop.reached(tally.received) {
            break;
        }
        match plain.stream.read(&mut chunk) {
            Ok(0) => return Err("the broker closed a subscriber".into()),
            Ok(n) => {
                if !plain.take(&chunk[..n])? {
                    return Err("the broker closed a subscriber".into());
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.drained() {
                    break;
                }
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
        let got = absorb(&mut plain.read, &mut tally, &mut acks);
        if got > 0 {
            tally.received += got;
            tally.last = Some(stop.arrived());
        }
        if !acks.is_empty() {
            plain.write_all(&acks, &mut frame)?;
            acks.clear();
        }
    }
    let _ = plain.write_all(&[0xE0, 0x00], &mut frame);
    Ok(tally)
}

fn take_reader_packet(reader: &mut Reader) -> Option<Incoming> {
    take_packet(reader.buffer())
}

/// Publishes to `topic` until `deadline`: unpaced in batches, or at
/// `rate` messages per second; QoS 1 keeps at most `window` unacknowledged.
async fn publish_loop(
    client: Client,
    topic: String,
    qos: QoS,
    payload: usize,
    rate: f64,
    window: usize,
    deadline: Instant,
) -> Result<u64, Error> {
    let Client { reader, mut writer } = client;
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let ack_task = (qos != QoS::AtMostOnce)
        .then(|| tokio::spawn(count_acks(reader, Arc::clone(&acked), Arc::clone(&notify))));
    let started = Instant::now();
    let mut sent: u64 = 0;
    let topic = topic.into_bytes();
    while Instant::now() < deadline {
        let mut room = if qos == QoS::AtMostOnce {
            BATCH as u64
        } else {
            (window as u64).saturating_sub(sent - acked.load(Ordering::Acquire))
        };
        if rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            room = room.min(due.saturating_sub(sent));
        }
        if room == 0 {
            if rate > 0.0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                let _ = tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
            }
            continue;
        }
        for _ in 0..room {
            push_publish(writer.buffer(), &topic, qos, packet_id(sent).get(), payload);
            sent += 1;
        }
        writer.flush().await?;
    }
    if let Some(task) = ack_task {
        // Wait for the last acknowledgements (bounded).
        let wait_until = Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::Acquire) < sent && Instant::now() < wait_until {
            let _ = tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
        }
        task.abort();
    }
    writer.disconnect().await;
    Ok(sent)
}

fn pacing_name(rate: u64, pacing: Pacing) -> &'static str {
    match (rate, pacing) {
        (0, _) => "unpaced",
        (_, Pacing::Even) => "even",
        (_, Pacing::Burst) => "burst",
    }
}

/// What evenly paced publishers did, and how well the tool kept to its
/// schedule.
struct PacedRun {
    sent: u64,
    /// Times a pacing thread slept before a message fell due.
    wakeups: u64,
    /// Writes that found a socket's send buffer full.
    stalls: u64,
    /// How late each message went out against its due time, in us.
    late: Histogram<u64>,
}

impl PacedRun {
    fn add_figures(&self, report: &mut Report) {
        report.figures.push((
            "pacing_sends_per_wakeup",
            self.sent as f64 / self.wakeups.max(1) as f64,
        ));
        if !self.late.is_empty() {
            report.figures.push((
                "pacing_late_p50_us",
                self.late.value_at_quantile(0.50) as f64,
            ));
            report.figures.push((
                "pacing_late_p99_us",
                self.late.value_at_quantile(0.99) as f64,
            ));
        }
        report
            .figures
            .push(("pacing_write_stalls", self.stalls as f64));
    }
}

/// Publishes `rate` messages per second in all from `publishers` until
/// `deadline`, evenly spaced: message k of the run is due at `started + k
/// / rate` and goes out from publisher k mod P, alone in its own write.
/// `threads` pacing threads (outside the runtime, so that a sleep can be
/// shorter than the runtime's millisecond timer) take every `threads`th
/// message each and read their connections' acknowledgements themselves
/// between sends, so a message costs the tool one wake-up, not one per
/// thread it passes. The timestamp in each payload is when it was
/// written, so a late tool does not count as a slow broker; how late it
/// was is reported apart.
async fn even_publishers(
    publishers: Vec<(Client, String)>,
    qos: QoS,
    payload: usize,
    rate: u64,
    threads: usize,
    started: Instant,
    deadline: Instant,
) -> Result<PacedRun, Error> {
    let threads = threads.clamp(1, publishers.len().max(1));
    let mut groups: Vec<Vec<(PacedWriter, Vec<u8>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, (client, topic)) in publishers.into_iter().enumerate() {
        groups[index % threads].push((client.into_paced()?, topic.into_bytes()));
    }
    let mut pacers = Vec::new();
    for (thread, group) in groups.into_iter().enumerate() {
        let (first, every) = (thread as u64, threads as u64);
        pacers.push(tokio::task::spawn_blocking(move || {
            pace(group, qos, payload, rate, (first, every), started, deadline)
        }));
    }
    let mut run = PacedRun {
        sent: 0,
        wakeups: 0,
        stalls: 0,
        late: histogram(),
    };
    for pacer in pacers {
        let part = pacer.await??;
        run.sent += part.sent;
        run.wakeups += part.wakeups;
        run.stalls += part.stalls;
        let _ = run.late.add(&part.late);
    }
    Ok(run)
}

/// A paced publisher reads what the broker sent it after this many of its
/// own sends.
const DRAIN_EVERY: u64 = 16;

/// Takes the PUBACKs out of what `writer` has read.
fn count_read_acks(writer: &mut PacedWriter) {
    while let Some(incoming) = take_packet(&mut writer.read) {
        if matches!(incoming, Incoming::PubAck) {
            writer.acks += 1;
        }
    }
}

/// One pacing thread: messages `first`, `first + every`, ... of the run,
/// each due at its index / `rate`, round robin over `group`; then, at
/// QoS 1, the last acknowledgements (waiting at most 10 s), and a
/// DISCONNECT on each connection.
fn pace(
    mut group: Vec<(PacedWriter, Vec<u8>)>,
    qos: QoS,
    payload: usize,
    rate: u64,
    (first, every): (u64, u64),
    started: Instant,
    deadline: Instant,
) -> Result<PacedRun, Error> {
    let mut run = PacedRun {
        sent: 0,
        wakeups: 0,
        stalls: 0,
        late: histogram(),
    };
    let mut sent = vec![0u64; group.len()];
    let mut turn = 0;
    let interval = 1.0 / rate.max(1) as f64;
    while !group.is_empty() {
        let index = first + run.sent * every;
        let due = started + Duration::from_secs_f64(index as f64 * interval);
        if due >= deadline {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
            run.wakeups += 1;
            continue;
        }
        let _ = run.late.record(((now - due).as_micros() as u64).max(1));
        let (writer, topic) = &mut group[turn];
        push_publish(
            &mut writer.buf,
            topic,
            qos,
            packet_id(sent[turn]).get(),
            payload,
        );
        writer.send()?;
        sent[turn] += 1;
        if qos != QoS::AtMostOnce && sent[turn].is_multiple_of(DRAIN_EVERY) {
            if !writer.drain()? {
                return Err("the broker closed a publisher".into());
            }
            count_read_acks(writer);
        }
        turn = (turn + 1) % group.len();
        run.sent += 1;
    }
    if qos != QoS::AtMostOnce {
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            let mut acked = 0;
            for (writer, _) in &mut group {
                if writer.drain()? {
                    count_read_acks(writer);
                }
                acked += writer.acks;
            }
            if acked >= run.sent || Instant::now() >= wait_until {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    run.stalls = group.iter().map(|(writer, _)| writer.stalls).sum();
    for (writer, _) in group {
        writer.disconnect();
    }
    Ok(run)
}

async fn count_acks(mut reader: Reader, acked: Arc<AtomicU64>, notify: Arc<Notify>) {
    loop {
        match reader.fill().await {
            Ok(true) => {}
            _ => return,
        }
        let mut got = 0;
        while let Some(incoming) = take_reader_packet(&mut reader) {
            if matches!(incoming, Incoming::PubAck) {
                got += 1;
            }
        }
        if got > 0 {
            acked.fetch_add(got, Ordering::AcqRel);
            notify.notify_one();
        }
    }
}

fn usage(broker: Option<&Broker>) -> Option<Usage> {
    broker.and_then(|broker| broker.usage().ok())
}

/// The CPU time of the broker (when the tool started it) and of the tool.
struct Sample {
    broker: Option<Usage>,
    tool: Option<Usage>,
}

fn sample(broker: Option<&Broker>) -> Sample {
    Sample {
        broker: usage(broker),
        tool: crate::broker::usage_of(std::process::id()).ok(),
    }
}

fn report(
    scenario: &str,
    broker: Option<&Broker>,
    mut parameters: Vec<(&'static str, String)>,
) -> Report {
    parameters.push(("transport", crate::transport::current().name()));
    match broker.map(|broker| broker.kind) {
        Some(crate::broker::Kind::Petrel) => {
            parameters.push(("store", broker.map_or("off", |b| b.store.name()).to_owned()));
        }
        Some(crate::broker::Kind::Mosquitto) => {
            let nodelay = crate::broker::MOSQUITTO_NODELAY.load(Ordering::Relaxed);
            parameters.push(("set_tcp_nodelay", nodelay.to_string()));
            let persistence = broker.is_some_and(|b| b.store != crate::broker::Store::Off);
            parameters.push(("persistence", persistence.to_string()));
        }
        None => {}
    }
    Report {
        scenario: scenario.to_owned(),
        broker: broker.map_or("external", |b| b.kind.name()).to_owned(),
        parameters,
        figures: Vec::new(),
    }
}

/// The broker's resident memory at `held` (figure `names.0`), and what it
/// grew by since `from` for each of the `count` things it now keeps
/// (`names.1`).
fn add_memory(
    report: &mut Report,
    names: (&'static str, &'static str),
    from: Usage,
    held: Usage,
    count: f64,
) {
    report.figures.push((names.0, held.rss_bytes as f64));
    let grown = held.rss_bytes.saturating_sub(from.rss_bytes) as f64;
    report.figures.push((names.1, grown / count.max(1.0)));
}

/// What a traffic scenario measured.
struct Traffic<'a> {
    sent: u64,
    received: u64,
    started: Instant,
    last: Option<Instant>,
    before: Sample,
    after: Sample,
    latency: &'a Histogram<u64>,
}

fn add_traffic_figures(report: &mut Report, traffic: Traffic<'_>) {
    let Traffic {
        sent,
        received,
        started,
        last,
        before,
        after,
        latency,
    } = traffic;
    let seconds = last
        .map_or(0.0, |last| (last - started).as_secs_f64())
        .max(1e-9);
    report.figures.push(("sent", sent as f64));
    report.figures.push(("received", received as f64));
    report
        .figures
        .push(("lost", sent.saturating_sub(received) as f64));
    report
        .figures
        .push(("received_per_sec", received as f64 / seconds));
    if let (Some(before), Some(after)) = (before.broker, after.broker) {
        let cpu = (after.cpu_seconds - before.cpu_seconds).max(1e-9);
        report.figures.push(("broker_cpu_seconds", cpu));
        report
            .figures
            .push(("received_per_broker_cpu_sec", received as f64 / cpu));
        report.figures.push(("broker_cpu_share", cpu / seconds));
    }
    // The tool's own share: if it nears the cores it has, it, not the
    // broker, may be what limits the figures.
    if let (Some(before), Some(after)) = (before.tool, after.tool) {
        let cpu = after.cpu_seconds - before.cpu_seconds;
        report.figures.push(("tool_cpu_seconds", cpu));
        report.figures.push(("tool_cpu_share", cpu / seconds));
    }
    if !latency.is_empty() {
        report
            .figures
            .push(("latency_p50_us", latency.value_at_quantile(0.50) as f64));
        report
            .figures
            .push(("latency_p99_us", latency.value_at_quantile(0.99) as f64));
        report
            .figures
            .push(("latency_p999_us", latency.value_at_quantile(0.999) as f64));
        report
            .figures
            .push(("latency_max_us", latency.max() as f64));
    }
}

/// Parameters of the fan-in scenario.
struct FanIn {
    publishers: usize,
    qos: QoS,
    window: usize,
    payload: usize,
    rate: u64,
    pacing: Pacing,
    /// Pacing threads with [`Pacing::Even`].
    threads: usize,
    persistent: bool,
    /// Where the subscriber is, when it is not on the publishers' broker:
    /// the remote end of a bridge.
    far: Option<SocketAddr>,
}

impl FanIn {
    fn new(
        publishing: crate::Publishing,
        persistent: bool,
        far: Option<SocketAddr>,
        threads: usize,
    ) -> Result<FanIn, Error> {
        Ok(FanIn {
            publishers: publishing.publishers,
            qos: qos_of(publishing.qos)?,
            window: publishing.window,
            payload: publishing.payload,
            rate: publishing.rate,
            pacing: publishing.pacing,
            threads,
            persistent,
            far,
        })
    }
}

/// Waits until a message published on `near` arrives on `far` (the
/// bridge between them is up); probes go to `bench/probe`, which the
/// measured subscriber does not see.
async fn wait_for_bridge(near: SocketAddr, far: SocketAddr) -> Result<(), Error> {
    let mut listener = Client::connect(far, None, "load-probe-sub", 60).await?;
    listener.subscribe("bench/probe", QoS::AtMostOnce).await?;
    let mut prober = Client::connect(near, None, "load-probe-pub", 60).await?;
    for _ in 0..200 {
        push_publish(
            prober.writer.buffer(),
            b"bench/probe",
            QoS::AtMostOnce,
            0,
            8,
        );
        prober.writer.flush().await?;
        let arrived = tokio::time::timeout(Duration::from_millis(50), listener.reader.next()).await;
        if matches!(arrived, Ok(Ok(Packet::Publish(_)))) {
            return Ok(());
        }
    }
    Err("the bridge did not come up within 10 s".into())
}

async fn fan_in(
    addr: SocketAddr,
    broker: Option<&Broker>,
    parameters: FanIn,
    duration: Duration,
) -> Result<Report, Error> {
    let FanIn {
        publishers,
        qos,
        window,
        payload,
        rate,
        pacing,
        threads,
        persistent,
        far,
    } = parameters;
    // Through a bridge the measured topics are under bench/data/, apart
    // from the probes.
    let prefix = if far.is_some() {
        "bench/data/"
    } else {
        "bench/"
    };
    let mut subscriber = Client::connect_session(
        far.unwrap_or(addr),
        None,
        "load-fan-in-sub",
        60,
        !persistent,
    )
    .await?;
    subscriber.subscribe(&format!("{prefix}#"), qos).await?;
    if let Some(far) = far {
        wait_for_bridge(addr, far).await?;
    }
    let mut clients = Vec::new();
    for index in 0..publishers {
        clients.push(Client::connect(addr, None, &format!("load-pub-{index}"), 60).await?);
    }
    let done = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(0));
    let before = sample(broker);
    let started = Instant::now();
    let deadline = started + duration;
    // The one subscriber gets a thread of its own, so that the tool's
    // publishers cannot starve it: the tool must not be the bottleneck.
    let sub_task = {
        let (done, expected) = (Arc::clone(&done), Arc::clone(&expected));
        if let crate::transport::Transport::Tls(..) = crate::transport::current() {
            // A TLS session cannot leave the runtime: the subscriber is a
            // task there.
            tokio::spawn(subscribe_loop(subscriber, done, expected, None))
        } else {
            tokio::task::spawn_blocking(move || blocking_subscriber(subscriber, done, expected))
        }
    };
    let mut paced = None;
    let mut sent = 0;
    if rate > 0 && pacing == Pacing::Even {
        let publishers = clients
            .into_iter()
            .enumerate()
            .map(|(index, client)| (client, format!("{prefix}{index}")))
            .collect();
        let run =
            even_publishers(publishers, qos, payload, rate, threads, started, deadline).await?;
        sent = run.sent;
        paced = Some(run);
    } else {
        let per_publisher = rate as f64 / publishers.max(1) as f64;
        let mut tasks = JoinSet::new();
        for (index, client) in clients.into_iter().enumerate() {
            tasks.spawn(publish_loop(
                client,
                format!("{prefix}{index}"),
                qos,
                payload,
                per_publisher,
                window,
                deadline,
            ));
        }
        while let Some(result) = tasks.join_next().await {
            sent += result??;
        }
    }
    expected.store(sent, Ordering::Release);
    done.store(true, Ordering::Release);
    let tally = sub_task
        .await
        .map_err(|_| "the subscriber thread ended")??;
    let after = sample(broker);
    let mut report = report(
        "fan-in",
        broker,
        vec![
            ("publishers", publishers.to_string()),
            ("qos", (qos as u8).to_string()),
            ("window", window.to_string()),
            ("payload", payload.to_string()),
            ("rate", rate.to_string()),
            ("pacing", pacing_name(rate, pacing).to_owned()),
            ("persistent", persistent.to_string()),
            ("duration_s", duration.as_secs_f64().to_string()),
        ],
    );
    add_traffic_figures(
        &mut report,
        Traffic {
            sent,
            received: tally.received,
            started,
            last: tally.last,
            before,
            after,
            latency: &tally.latency,
        },
    );
    if let Some(paced) = paced {
        paced.add_figures(&mut report);
    }
    Ok(report)
}

/// Parameters of the fan-out scenario.
struct FanOut {
    subscribers: usize,
    qos: QoS,
    payload: usize,
    rate: u64,
    window: usize,
    pacing: Pacing,
    threads: usize,
}

async fn fan_out(
    addr: SocketAddr,
    broker: Option<&Broker>,
    parameters: FanOut,
    duration: Duration,
) -> Result<Report, Error> {
    let FanOut {
        subscribers,
        qos,
        payload,
        rate,
        window,
        pacing,
        threads,
    } = parameters;
    let done = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for index in 0..subscribers {
        let mut client =
            Client::connect(addr, None, &format!("load-fan-out-sub-{index}"), 60).await?;
        client.subscribe("fan/out", qos).await?;
        clients.push(client);
    }
    let publisher = Client::connect(addr, None, "load-fan-out-pub", 60).await?;
    let before = sample(broker);
    let started = Instant::now();
    let received_total = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let mut subs = JoinSet::new();
    for client in clients {
        subs.spawn(subscribe_loop(
            client,
            Arc::clone(&done),
            Arc::clone(&expected),
            Some((Arc::clone(&received_total), Arc::clone(&progress))),
        ));
    }
    let mut paced = None;
    let sent = if rate > 0 && pacing == Pacing::Even {
        let publisher = vec![(publisher, "fan/out".to_owned())];
        let run = even_publishers(
            publisher,
            qos,
            payload,
            rate,
            threads,
            started,
            started + duration,
        )
        .await?;
        let sent = run.sent;
        paced = Some(run);
        sent
    } else if rate > 0 {
        publish_loop(
            publisher,
            "fan/out".into(),
            qos,
            payload,
            rate as f64,
            1024,
            started + duration,
        )
        .await?
    } else {
        windowed_publisher(
            publisher,
            "fan/out".into(),
            qos,
            payload,
            Window {
                size: window,
                received: received_total,
                divisor: subscribers.max(1) as u64,
                progress,
            },
            started + duration,
        )
        .await?
    };
    expected.store(sent, Ordering::Release);
    done.store(true, Ordering::Release);
    let Tally {
        received,
        latency,
        last,
    } = gather(subs).await?;
    let after = sample(broker);
    let mut report = report(
        "fan-out",
        broker,
        vec![
            ("subscribers", subscribers.to_string()),
            ("qos", (qos as u8).to_string()),
            ("payload", payload.to_string()),
            ("rate", rate.to_string()),
            ("pacing", pacing_name(rate, pacing).to_owned()),
            ("duration_s", duration.as_secs_f64().to_string()),
        ],
    );
    add_traffic_figures(
        &mut report,
        Traffic {
            sent: sent * subscribers as u64,
            received,
            started,
            last,
            before,
            after,
            latency: &latency,
        },
    );
    report.figures.insert(0, ("published", sent as f64));
    if let Some(paced) = paced {
        paced.add_figures(&mut report);
    }
    Ok(report)
}

async fn p2p(
    addr: SocketAddr,
    broker: Option<&Broker>,
    pairs: usize,
    qos: QoS,
    payload: usize,
    window: usize,
    duration: Duration,
) -> Result<Report, Error> {
    let done = Arc::new(AtomicBool::new(false));
    let mut subs = JoinSet::new();
    let mut publishers = Vec::new();
    let mut counters = Vec::new();
    for index in 0..pairs {
        let topic = format!("p2p/{index}");
        let mut subscriber =
            Client::connect(addr, None, &format!("load-p2p-sub-{index}"), 60).await?;
        subscriber.subscribe(&topic, qos).await?;
        let publisher = Client::connect(addr, None, &format!("load-p2p-pub-{index}"), 60).await?;
        let received = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        counters.push((subscriber, Arc::clone(&received), Arc::clone(&notify)));
        publishers.push((publisher, topic, received, notify));
    }
    let expected: Vec<Arc<AtomicU64>> = (0..pairs).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let before = sample(broker);
    let started = Instant::now();
    let deadline = started + duration;
    for ((subscriber, received, notify), expected) in counters.into_iter().zip(&expected) {
        subs.spawn(subscribe_loop(
            subscriber,
            Arc::clone(&done),
            Arc::clone(expected),
            Some((received, notify)),
        ));
    }
    let mut pubs = JoinSet::new();
    for (client, topic, received, notify) in publishers {
        let window = Window {
            size: window,
            received,
            divisor: 1,
            progress: notify,
        };
        pubs.spawn(windowed_publisher(
            client, topic, qos, payload, window, deadline,
        ));
    }
    let mut sent = 0;
    while let Some(result) = pubs.join_next().await {
        sent += result??;
    }
    // Each subscriber stops once idle; the totals decide loss.
    done.store(true, Ordering::Release);
    let Tally {
        received,
        latency,
        last,
    } = gather(subs).await?;
    let after = sample(broker);
    let mut report = report(
        "p2p",
        broker,
        vec![
            ("pairs", pairs.to_string()),
            ("qos", (qos as u8).to_string()),
            ("payload", payload.to_string()),
            ("window", window.to_string()),
            ("duration_s", duration.as_secs_f64().to_string()),
        ],
    );
    add_traffic_figures(
        &mut report,
        Traffic {
            sent,
            received,
            started,
            last,
            before,
            after,
            latency: &latency,
        },
    );
    Ok(report)
}

/// How far a publisher may run ahead of its subscribers: `received /
/// divisor` is how many of its messages each subscriber has had, on
/// average, and `progress` is notified as that grows.
struct Window {
    size: usize,
    received: Arc<AtomicU64>,
    divisor: u64,
    progress: Arc<Notify>,
}

/// A closed-loop publisher: keeps at most `window.size` messages sent but
/// not yet received.
async fn windowed_publisher(
    client: Client,
    topic: String,
    qos: QoS,
    payload: usize,
    window: Window,
    deadline: Instant,
) -> Result<u64, Error> {
    let Window {
        size: window,
        received,
        divisor,
        progress: notify,
    } = window;
    let Client { reader, mut writer } = client;
    // QoS 1 acknowledgements to the publisher are read and dropped.
    let drain = tokio::spawn(count_acks(
        reader,
        Arc::new(AtomicU64::new(0)),
        Arc::new(Notify::new()),
    ));
    let topic = topic.into_bytes();
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        let delivered = received.load(Ordering::Acquire) / divisor;
        let room = (window as u64).saturating_sub(sent.saturating_sub(delivered));
        if room == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
            continue;
        }
        for _ in 0..room {
            push_publish(writer.buffer(), &topic, qos, packet_id(sent).get(), payload);
            sent += 1;
        }
        writer.flush().await?;
    }
    drain.abort();
    writer.disconnect().await;
    Ok(sent)
}

async fn connections_scenario(
    addr: SocketAddr,
    broker: Option<&Broker>,
    connections: usize,
    sources: u8,
    parallel: usize,
    settle_ms: u64,
) -> Result<Report, Error> {
    let before = usage(broker);
    let started = Instant::now();
    let spread = Spread { sources, parallel };
    let connected = spread
        .run(0..connections, |index| async move {
            let id = format!("load-idle-{index}");
            let mut client = Client::connect(addr, Some(spread.source(index)), &id, 60).await?;
            client
                .subscribe(&format!("idle/{index}"), QoS::AtMostOnce)
                .await?;
            Ok(client)
        })
        .await?;
    let mut clients = Vec::with_capacity(connections);
    let mut failed = 0u64;
    for result in connected {
        match result {
            Ok(client) => clients.push(client),
            Err(error) => {
                if failed == 0 {
                    eprintln!("a connection failed: {error}");
                }
                failed += 1;
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let the broker settle, then read its memory with every client idle.
    tokio::time::sleep(Duration::from_millis(settle_ms)).await;
    let after = usage(broker);
    // Every connection must still be there: a PINGREQ round trip on each.
    let mut held = 0u64;
    let mut checks = JoinSet::new();
    for mut client in clients {
        checks.spawn(async move {
            if client.writer.push(&Packet::PingReq).is_err() || client.writer.flush().await.is_err()
            {
                return (false, client);
            }
            let alive = matches!(
                tokio::time::timeout(Duration::from_secs(10), client.reader.next()).await,
                Ok(Ok(Packet::PingResp))
            );
            (alive, client)
        });
    }
    let mut clients = Vec::new();
    while let Some(result) = checks.join_next().await {
        let (alive, client) = result?;
        held += u64::from(alive);
        clients.push(client);
    }
    let mut report = report(
        "connections",
        broker,
        vec![
            ("connections", connections.to_string()),
            ("sources", sources.to_string()),
            ("parallel", parallel.to_string()),
            ("settle_ms", settle_ms.to_string()),
        ],
    );
    report.figures.push(("connected", clients.len() as f64));
    report.figures.push(("failed", failed as f64));
    report.figures.push(("held", held as f64));
    report
        .figures
        .push(("connects_per_sec", clients.len() as f64 / connect_seconds));
    if let (Some(before), Some(after)) = (before, after) {
        report
            .figures
            .push(("broker_rss_before_bytes", before.rss_bytes as f64));
        let names = ("broker_rss_after_bytes", "rss_bytes_per_connection");
        add_memory(&mut report, names, before, after, clients.len() as f64);
        report
            .figures
            .push(("broker_cpu_seconds", after.cpu_seconds - before.cpu_seconds));
    }
    clients.into_iter().for_each(Client::abort);
    Ok(report)
}

/// How a scenario's many clients come in: from how many source addresses,
/// and how many setting up at once.
#[derive(Clone, Copy)]
struct Spread {
    sources: u8,
    parallel: usize,
}

impl Spread {
    /// The source address of client `index`.
    fn source(self, index: usize) -> IpAddr {
        let host = 2 + (index % usize::from(self.sources.max(1))) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
    }

    /// Runs `each(item)` for every item, `parallel` at a time; the results
    /// in completion order.
    async fn run<I, T, F, Fut>(
        self,
        items: impl IntoIterator<Item = I>,
        each: F,
    ) -> Result<Vec<Result<T, Error>>, Error>
    where
        T: Send + 'static,
        F: Fn(I) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.parallel.max(1)));
        let mut tasks = JoinSet::new();
        let items = items.into_iter();
        let mut results = Vec::with_capacity(items.size_hint().0);
        for item in items {
            let permit = Arc::clone(&semaphore).acquire_owned().await?;
            let task = each(item);
            tasks.spawn(async move {
                let result = task.await;
                drop(permit);
                result
            });
        }
        while let Some(result) = tasks.join_next().await {
            results.push(result?);
        }
        Ok(results)
    }
}

/// Publishes `total` QoS 1 messages of 16 bytes from `publisher`,
/// message i to `topic_of(i)`, retained if `retain`, with up to 1,000
/// unacknowledged, until the broker has acknowledged them all; then
/// disconnects.
async fn publish_acknowledged(
    mut publisher: Client,
    total: usize,
    retain: bool,
    topic_of: impl Fn(usize) -> String,
) -> Result<(), Error> {
    const WINDOW: usize = 1_000;
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < total {
        while sent < total && sent - acked < WINDOW {
            let buf = publisher.writer.buffer();
            let start = buf.len();
            let id = packet_id(sent as u64).get();
            push_publish(buf, topic_of(sent).as_bytes(), QoS::AtLeastOnce, id, 16);
            if retain {
                buf[start] |= 0x01;
            }
            sent += 1;
        }
        publisher.writer.flush().await?;
        while acked < sent && (sent - acked >= WINDOW / 2 || sent == total) {
            if let Packet::PubAck(_) = publisher.reader.next().await? {
                acked += 1;
            }
        }
    }
    publisher.writer.disconnect().await;
    Ok(())
}

/// See [`Scenario::Reconnect`].
async fn reconnect_scenario(
    addr: SocketAddr,
    broker: Option<&Broker>,
    sessions: usize,
    messages: usize,
    spread: Spread,
) -> Result<Report, Error> {
    // The sessions, made and left.
    let made = spread
        .run(0..sessions, |index| async move {
            let id = format!("load-storm-{index}");
            let mut client =
                Client::connect_session(addr, Some(spread.source(index)), &id, 60, false).await?;
            client
                .subscribe(&format!("storm/{index}"), QoS::AtLeastOnce)
                .await?;
            client.disconnect_first().await;
            Ok(())
        })
        .await?;
    if let Some(Err(error)) = made.iter().find(|made| made.is_err()) {
        return Err(format!("a session could not be made: {error}").into());
    }
    // Their messages, queued while they are offline: acknowledged by the
    // broker before the storm begins.
    let total = sessions * messages;
    let publisher = Client::connect(addr, None, "load-storm-publisher", 60).await?;
    publish_acknowledged(publisher, total, false, |index| {
        format!("storm/{}", index % sessions)
    })
    .await?;
    // The storm.
    let before = usage(broker);
    let started = Instant::now();
    let storm = spread
        .run(0..sessions, |index| async move {
            let id = format!("load-storm-{index}");
            let mut client =
                Client::connect_session(addr, Some(spread.source(index)), &id, 60, false).await?;
            let mut received = 0usize;
            while received < messages {
                let next = tokio::time::timeout(Duration::from_secs(30), client.reader.next());
                match next.await {
                    Ok(Ok(Packet::Publish(publish))) => {
                        received += 1;
                        if let Some(packet_id) = publish.packet_id {
                            let ack = petrel::protocol::Ack::new(packet_id);
                            client.writer.push(&Packet::PubAck(ack))?;
                            client.writer.flush().await?;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(error),
                    // What has not come in 30 s counts as lost.
                    Err(_) => break,
                }
            }
            Ok((received, client))
        })
        .await?;
    let storm_seconds = started.elapsed().as_secs_f64();
    let after = usage(broker);
    let mut received = 0usize;
    let mut failed = 0usize;
    let mut clients = Vec::with_capacity(sessions);
    for result in storm {
        match result {
            Ok((count, client)) => {
                received += count;
                clients.push(client);
            }
            Err(error) => {
                if failed == 0 {
                    eprintln!("a reconnect failed: {error}");
                }
                failed += 1;
            }
        }
    }
    let mut report = report(
        "reconnect",
        broker,
        vec![
            ("sessions", sessions.to_string()),
            ("messages", messages.to_string()),
            ("sources", spread.sources.to_string()),
            ("parallel", spread.parallel.to_string()),
        ],
    );
    report.figures.push(("reconnected", clients.len() as f64));
    report.figures.push(("failed", failed as f64));
    report.figures.push(("queued", total as f64));
    report.figures.push(("received", received as f64));
    report
        .figures
        .push(("lost", total.saturating_sub(received) as f64));
    report.figures.push(("storm_seconds", storm_seconds));
    report
        .figures
        .push(("reconnects_per_sec", clients.len() as f64 / storm_seconds));
    if let (Some(before), Some(after)) = (before, after) {
        report
            .figures
            .push(("broker_cpu_seconds", after.cpu_seconds - before.cpu_seconds));
        report
            .figures
            .push(("broker_rss_after_bytes", after.rss_bytes as f64));
    }
    clients.into_iter().for_each(Client::abort);
    Ok(report)
}
