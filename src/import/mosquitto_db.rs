//! Mosquitto's persistence file (`mosquitto.db`, format 5 from Mosquitto
//! 1.6 and 6 from 2.0), read for its retained messages. The layout, from
//! Mosquitto's own reader: a 15-byte magic, a CRC (unused), the format
//! version (big-endian), then chunks, each an 8-byte header (type and
//! length, big-endian) and its data. A message store chunk starts with a
//! fixed 32-byte part (store id and expiry time in the writing machine's
//! byte order, little-endian on the machines Mosquitto runs on; then the
//! payload length, source mid, the lengths of the source id, source user
//! name and topic, and the source port, big-endian; QoS; retain), then the
//! source id, user name, topic, payload and the MQTT 5 properties. A
//! retain chunk names a message store chunk by its id.
//!
//! The whole file is in memory and every part is a slice of it, checked
//! against what is left: a truncated or hostile file is an error naming
//! the offset, never a panic or an allocation the file's numbers ask for.

use std::collections::HashMap;

/// The magic a Mosquitto persistence file starts with.
const MAGIC: [u8; 15] = *b"\x00\xB5\x00mosquitto db";
const CHUNK_MSG_STORE: u32 = 2;
const CHUNK_RETAIN: u32 = 4;
/// The fixed part of a message store chunk.
const MSG_STORE_FIXED: usize = 32;

/// A retained message as Mosquitto kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: u8,
    /// When it expires (Unix seconds), 0 for never.
    pub expiry_time: i64,
    /// Its MQTT 5 property block as the file holds it (length first),
    /// empty if it had none.
    pub properties: Vec<u8>,
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, count: usize) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(count)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| format!("truncated at byte {}: {count} more bytes expected", *at))?;
    let part = &bytes[*at..end];
    *at = end;
    Ok(part)
}

fn be16(bytes: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// The retained messages of a Mosquitto persistence file.
pub fn read_retained(bytes: &[u8]) -> Result<Vec<Retained>, String> {
    let mut at = 0;
    if take(bytes, &mut at, MAGIC.len())? != MAGIC {
        return Err("not a Mosquitto persistence file (no mosquitto db magic)".to_owned());
    }
    take(bytes, &mut at, 4)?; // CRC, unused by Mosquitto too.
    let version = take(bytes, &mut at, 4)?;
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    if version != 5 && version != 6 {
        return Err(format!(
            "format version {version}: only 5 (Mosquitto 1.6) and 6 (2.0) are read"
        ));
    }
    let mut stored: HashMap<u64, Retained> = HashMap::new();
    let mut retained_ids = Vec::new();
    while at < bytes.len() {
        let chunk_at = at;
        let header = take(bytes, &mut at, 8)?;
        let kind = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let data = take(bytes, &mut at, length as usize)
            .map_err(|error| format!("chunk at byte {chunk_at}: {error}"))?;
        match kind {
            CHUNK_MSG_STORE => {
                let (id, message) = message_store(data)
                    .map_err(|error| format!("message chunk at byte {chunk_at}: {error}"))?;
                stored.insert(id, message);
            }
            CHUNK_RETAIN => {
                let id = data
                    .get(..8)
                    .ok_or_else(|| format!("retain chunk at byte {chunk_at}: too short"))?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(id);
                retained_ids.push(u64::from_le_bytes(raw));
            }
            _ => {}
        }
    }
    let mut retained = Vec::with_capacity(retained_ids.len());
    for id in retained_ids {
        match stored.remove(&id) {
            Some(message) => retained.push(message),
            None => {
                return Err(format!(
                    "a retain chunk names message {id}, which the file lacks"
                ))
            }
        }
    }
    Ok(retained)
}

/// A message store chunk's id and message.
fn message_store(data: &[u8]) -> Result<(u64, Retained), String> {
    let mut at = 0;
    let fixed = take(data, &mut at, MSG_STORE_FIXED)?;
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&fixed[0..8]);
    let id = u64::from_le_bytes(raw);
    raw.copy_from_slice(&fixed[8..16]);
    let expiry_time = i64::from_le_bytes(raw);
    let payload_len = u32::from_be_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]) as usize;
    let source_id_len = be16(&fixed[22..24]);
    let username_len = be16(&fixed[24..26]);
    let topic_len = be16(&fixed[26..28]);
    let qos = fixed[30];
    if qos > 2 {
        return Err(format!("QoS {qos}"));
    }
    take(data, &mut at, source_id_len)?;
    take(data, &mut at, username_len)?;
    let topic = std::str::from_utf8(take(data, &mut at, topic_len)?)
        .map_err(|_| "the topic is not UTF-8".to_owned())?
        .to_owned();
    let payload = take(data, &mut at, payload_len)?.to_vec();
    Ok((
        id,
        Retained {
            topic,
            payload,
            qos,
            expiry_time,
            properties: data[at..].to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with one message (id 7) and a retain chunk for it.
    fn file(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(0u32.to_be_bytes());
        bytes.extend(6u32.to_be_bytes());
        let mut store = Vec::new();
        store.extend(7u64.to_le_bytes());
        store.extend(0i64.to_le_bytes());
        store.extend((payload.len() as u32).to_be_bytes());
        store.extend(1u16.to_be_bytes());
        store.extend(0u16.to_be_bytes());
        store.extend(0u16.to_be_bytes());
        store.extend((topic.len() as u16).to_be_bytes());
        store.extend(1883u16.to_be_bytes());
        store.extend([1u8, 1u8]);
        store.extend(topic.as_bytes());
        store.extend(payload);
        bytes.extend(CHUNK_MSG_STORE.to_be_bytes());
        bytes.extend((store.len() as u32).to_be_bytes());
        bytes.extend(store);
        bytes.extend(CHUNK_RETAIN.to_be_bytes());
        bytes.extend(8u32.to_be_bytes());
        bytes.extend(7u64.to_le_bytes());
        bytes
    }

    #[test]
    fn a_retained_message_is_read() {
        let retained = read_retained(&file("home/door", b"open")).unwrap();
        assert_eq!(
            retained,
            [Retained {
                topic: "home/door".to_owned(),
                payload: b"open".to_vec(),
                qos: 1,
                expiry_time: 0,
                properties: Vec::new(),
            }]
        );
    }

    // Every truncation is an error, never a panic; so is a length that
    // runs past the end.
    #[test]
    fn truncated_and_hostile_files_are_errors() {
        let whole = file("t", b"payload");
        // Where chunks end: after the file header, the message chunk (8 +
        // 32 + 1 + 7 bytes) and the retain chunk.
        let boundaries = [23, 71, whole.len()];
        for cut in 0..whole.len() {
            let result = read_retained(&whole[..cut]);
            assert_eq!(
                result.is_ok(),
                boundaries.contains(&cut),
                "cut {cut}: {result:?}"
            );
        }
        let mut hostile = whole.clone();
        // The message chunk's length: far past the end.
        hostile[27..31].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_retained(&hostile).unwrap_err().contains("truncated"));
        let mut version = whole;
        version[19..23].copy_from_slice(&3u32.to_be_bytes());
        assert!(read_retained(&version).unwrap_err().contains("version 3"));
    }
}
