use super::*;
use std::time::Duration;

// A lease dropped without release (its task panicked) does not leave
// the client id blocked.
#[tokio::test]
async fn dropped_lease_frees_the_client_id() {
    let manager = SessionManager::new();
    let id: Arc<str> = Arc::from("device");
    let (lease, parked) = manager.acquire(&id).await;
    assert!(parked.is_none());
    drop(lease);
    let again = tokio::time::timeout(Duration::from_secs(5), manager.acquire(&id)).await;
    assert!(again.is_ok(), "acquire waited for a lease that was dropped");
}

// A second acquire interrupts the holder through its inbox, waits for
// its release, and takes over what it parked.
#[tokio::test]
async fn acquire_interrupts_the_holder_and_takes_its_parked_state() {
    let manager = Arc::new(SessionManager::new());
    let id: Arc<str> = Arc::from("device");
    let (first, _) = manager.acquire(&id).await;
    let limits = crate::router::inbox::InboxLimits {
        max_messages: 1,
        max_bytes: 1,
        queue_qos0: false,
    };
    let (inbox, receiver) = Inbox::new(Arc::clone(&id), limits);
    manager.attach(
        &first,
        &inbox,
        &tokio_util::sync::CancellationToken::new(),
        None,
    );
    assert_eq!(inbox.interruption(), None);
    let second = {
        let manager = Arc::clone(&manager);
        let id = Arc::clone(&id);
        tokio::spawn(async move { manager.acquire(&id).await })
    };
    tokio::time::timeout(Duration::from_secs(5), receiver.changed())
        .await
        .expect("the holder is woken");
    assert_eq!(inbox.interruption(), Some(Interrupt::TakenOver));
    let mut state = SessionState::default();
    state.next_packet_id = 42;
    let parked = Parked {
        state,
        inbox: Arc::clone(&inbox),
        receiver,
        expires_at: None,
        will: None,
        will_at: None,
    };
    manager.release(&id, first, Some(parked));
    let (second, parked) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second acquire completes")
        .expect("task");
    let parked = parked.expect("the parked session is handed over");
    assert_eq!(parked.state.next_packet_id, 42);
    // The next connection starts uninterrupted.
    manager.attach(
        &second,
        &parked.inbox,
        &tokio_util::sync::CancellationToken::new(),
        None,
    );
    assert_eq!(parked.inbox.interruption(), None);
}

// A takeover that comes before the holder attached its inbox is applied
// when it attaches.
#[tokio::test]
async fn takeover_before_attach_is_applied_on_attach() {
    let manager = Arc::new(SessionManager::new());
    let id: Arc<str> = Arc::from("device");
    let (first, _) = manager.acquire(&id).await;
    let second = {
        let manager = Arc::clone(&manager);
        let id = Arc::clone(&id);
        tokio::spawn(async move { manager.acquire(&id).await })
    };
    let limits = crate::router::inbox::InboxLimits {
        max_messages: 1,
        max_bytes: 1,
        queue_qos0: false,
    };
    let (inbox, _receiver) = Inbox::new(Arc::clone(&id), limits);
    // Wait until the second acquire has marked the holder.
    loop {
        let kicked = first
            .slot
            .inner()
            .active
            .as_ref()
            .is_some_and(|active| active.kicked);
        if kicked {
            break;
        }
        tokio::task::yield_now().await;
    }
    manager.attach(
        &first,
        &inbox,
        &tokio_util::sync::CancellationToken::new(),
        None,
    );
    assert_eq!(inbox.interruption(), Some(Interrupt::TakenOver));
    manager.release(&id, first, None);
    let _ = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second acquire completes");
}

// A client that comes and goes leaves a deadline each time; the heap
// is compacted, and the last deadline still expires the session.
#[tokio::test]
async fn deadlines_stay_bounded_and_the_last_one_holds() {
    let manager = SessionManager::new();
    let id: Arc<str> = Arc::from("flapping");
    let limits = crate::router::inbox::InboxLimits {
        max_messages: 1,
        max_bytes: 1,
        queue_qos0: false,
    };
    let (inbox, receiver) = Inbox::new(Arc::clone(&id), limits);
    let mut parked = Parked {
        state: SessionState::default(),
        inbox,
        receiver,
        expires_at: None,
        will: None,
        will_at: None,
    };
    let start = Instant::now();
    for round in 0..3000u64 {
        let (lease, _) = manager.acquire(&id).await;
        parked.expires_at = Some(start + Duration::from_secs(60 + round));
        manager.release(&id, lease, Some(parked));
        let (lease, back) = manager.acquire(&id).await;
        parked = back.expect("the session was parked");
        // Parked again at once below, by the next round's release; the
        // lease is let go first.
        manager.release(&id, lease, None);
    }
    assert!(
        manager.deadlines().len() < 2000,
        "{}",
        manager.deadlines().len()
    );
    let (lease, _) = manager.acquire(&id).await;
    parked.expires_at = Some(start + Duration::from_secs(10));
    manager.release(&id, lease, Some(parked));
    let due = manager.take_due(start + Duration::from_secs(11));
    assert!(
        due.iter().any(|d| d.expired.is_some()),
        "the session expired"
    );
}
