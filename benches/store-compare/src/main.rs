//! redb against fjall on the write pattern of Petrel's store (one
//! subscriber's queue under QoS 1 fan-in): batches of inserts under
//! (client id, message id) keys and removes of the previous batch's keys,
//! each batch synced. Not part of Petrel's build; the result is in
//! docs/dependencies.md.
//!
//! cargo run --release --manifest-path benches/store-compare/Cargo.toml

use std::time::Instant;

const BATCHES: u64 = 3000;
const PER_BATCH: u64 = 120;

fn key(id: u64) -> Vec<u8> {
    let mut k = b"load-fan-in-sub\0".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn redb_run(dir: &std::path::Path) -> f64 {
    let t: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("queue");
    let db = redb::Database::create(dir.join("bench.redb")).unwrap();
    let value = vec![7u8; 110];
    let start = Instant::now();
    for b in 0..BATCHES {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(t).unwrap();
            for i in 0..PER_BATCH {
                table
                    .insert(("load-fan-in-sub", b * PER_BATCH + i), value.as_slice())
                    .unwrap();
            }
            if b > 0 {
                for i in 0..PER_BATCH {
                    table
                        .remove(("load-fan-in-sub", (b - 1) * PER_BATCH + i))
                        .unwrap();
                }
            }
        }
        txn.commit().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / BATCHES as f64
}

fn fjall_run(dir: &std::path::Path) -> f64 {
    let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
    let ks = db
        .keyspace("queue", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let value = vec![7u8; 110];
    let start = Instant::now();
    for b in 0..BATCHES {
        let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncData));
        for i in 0..PER_BATCH {
            batch.insert(&ks, key(b * PER_BATCH + i), value.clone());
        }
        if b > 0 {
            for i in 0..PER_BATCH {
                batch.remove(&ks, key((b - 1) * PER_BATCH + i));
            }
        }
        batch.commit().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / BATCHES as f64
}

fn main() {
    let dir = std::env::temp_dir().join(format!("storebench-{}", std::process::id()));
    for round in 0..3 {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let r = redb_run(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = fjall_run(&dir);
        println!("round {round}: redb {r:.0} us/batch, fjall {f:.0} us/batch ({} inserts + {} removes, synced)", PER_BATCH, PER_BATCH);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
