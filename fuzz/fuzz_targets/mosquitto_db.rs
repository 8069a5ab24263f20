//! The `mosquitto.db` reader (`petrel import-mosquitto --db`) on any
//! bytes: an error or the retained messages, never a panic, and nothing
//! allocated beyond what the input holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(retained) = petrel::import::mosquitto_db::read_retained(data) {
        let held: usize = retained.iter().map(|r| r.payload.len() + r.topic.len() + r.properties.len()).sum();
        assert!(held <= data.len());
    }
});
