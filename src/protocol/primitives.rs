//! The data representations of MQTT section 1.5: integers, variable byte
//! integers, UTF-8 strings, string pairs and binary data. A [`Reader`] walks
//! one packet's body (already cut out of the stream) and never reads past it;
//! the `put_*` functions write into a `BytesMut`.
//!
//! Every read that would run past the packet is [`DecodeError::UnexpectedEnd`];
//! every string is checked for well-formed UTF-8 and U+0000 here, once.

use bytes::{BufMut, Bytes, BytesMut};

use super::{DecodeError, EncodeError};

/// The largest value a variable byte integer can carry (four bytes).
pub const VARIABLE_BYTE_INTEGER_MAX: u32 = 268_435_455;

/// The longest string or binary field: its length is a two byte integer.
pub const FIELD_LENGTH_MAX: usize = u16::MAX as usize;

/// A cursor over one packet's bytes. Slices it hands out share the packet's
/// buffer, so a payload is never copied.
#[derive(Debug)]
pub struct Reader {
    bytes: Bytes,
    position: usize,
}

impl Reader {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: Bytes) -> Self {
        Reader { bytes, position: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Takes the next `length` bytes as a shared slice.
    pub fn take(&mut self, length: usize) -> Result<Bytes, DecodeError> {
        if length > self.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let slice = self.bytes.slice(self.position..self.position + length);
        self.position += length;
        Ok(slice)
    }

    /// Takes everything that is left (a PUBLISH payload, a will payload).
    pub fn take_rest(&mut self) -> Bytes {
        let slice = self.bytes.slice(self.position..);
        self.position = self.bytes.len();
        slice
    }

    /// A single byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(DecodeError::UnexpectedEnd)?;
        self.position += 1;
        Ok(byte)
    }

    /// A two byte integer, big-endian (1.5.2).
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let high = self.u8()?;
        let low = self.u8()?;
        Ok(u16::from_be_bytes([high, low]))
    }

    /// A four byte integer, big-endian (1.5.3).
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A variable byte integer (1.5.5), at most four bytes, in the fewest
    /// bytes that can hold it.
    pub fn variable_byte_integer(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for index in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                // [MQTT-1.5.5-1] (v5.0) a last byte of 0 after the first one
                // means a redundant continuation byte.
                if index > 0 && byte == 0 {
                    return Err(DecodeError::NonMinimalVariableByteInteger);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::VariableByteIntegerTooLong)
    }

    /// Binary data (1.5.6): a two byte length, then that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let length = usize::from(self.u16()?);
        self.take(length)
    }

    /// A UTF-8 encoded string (1.5.4).
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        decode_utf8(&raw)
    }

    /// A UTF-8 string pair (1.5.7): name then value, each a full string.
    pub fn string_pair(&mut self) -> Result<(String, String), DecodeError> {
        // [MQTT-1.5.7-1] (v5.0) both halves obey every string rule.
        let name = self.string()?;
        let value = self.string()?;
        Ok((name, value))
    }
}

/// Checks a string field and copies it out.
pub fn decode_utf8(raw: &[u8]) -> Result<String, DecodeError> {
    // [MQTT-1.5.4-1] (v5.0) [MQTT-1.5.3-1] (v3.1.1): well-formed UTF-8 only;
    // Rust's validator also refuses encoded surrogates and overlong forms.
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    // [MQTT-1.5.4-2] (v5.0) [MQTT-1.5.3-2] (v3.1.1): no U+0000.
    if text.contains('\0') {
        return Err(DecodeError::NullCharacter);
    }
    // [MQTT-1.5.4-3] (v5.0): a leading EF BB BF is kept as U+FEFF; nothing is
    // stripped here.
    Ok(text.to_owned())
}

/// Where encoded bytes go. Every packet is written through one generic
/// function twice: first into a [`Counter`] to learn its length (the fixed
/// header and each property block carry their length up front), then into
/// the `BytesMut`. One code path means the length can never disagree with
/// the bytes.
pub trait Sink {
    /// Appends one byte.
    fn put_u8(&mut self, value: u8);
    /// Appends bytes.
    fn put_slice(&mut self, bytes: &[u8]);
    /// Appends a two byte integer, big-endian.
    fn put_u16(&mut self, value: u16) {
        self.put_slice(&value.to_be_bytes());
    }
    /// Appends a four byte integer, big-endian.
    fn put_u32(&mut self, value: u32) {
        self.put_slice(&value.to_be_bytes());
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, value: u8) {
        BufMut::put_u8(self, value);
    }
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that only counts.
#[derive(Debug, Default)]
pub struct Counter(pub usize);

impl Sink for Counter {
    fn put_u8(&mut self, _value: u8) {
        self.0 += 1;
    }
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn put_u16(&mut self, _value: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _value: u32) {
        self.0 += 4;
    }
}

/// Writes a variable byte integer in the fewest bytes [MQTT-1.5.5-1] (v5.0).
pub fn put_variable_byte_integer(sink: &mut impl Sink, value: u32) -> Result<(), EncodeError> {
    if value > VARIABLE_BYTE_INTEGER_MAX {
        return Err(EncodeError::VariableByteIntegerTooLarge(value));
    }
    let mut rest = value;
    loop {
        let mut byte = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            byte |= 0x80;
        }
        sink.put_u8(byte);
        if rest == 0 {
            return Ok(());
        }
    }
}

/// Writes a length as a variable byte integer.
pub fn put_length(sink: &mut impl Sink, length: usize) -> Result<(), EncodeError> {
    let value = u32::try_from(length).map_err(|_| EncodeError::PacketTooLarge(length))?;
    if value > VARIABLE_BYTE_INTEGER_MAX {
        return Err(EncodeError::PacketTooLarge(length));
    }
    put_variable_byte_integer(sink, value)
}

/// Writes binary data with its two byte length.
pub fn put_binary(sink: &mut impl Sink, data: &[u8]) -> Result<(), EncodeError> {
    let length = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong(data.len()))?;
    sink.put_u16(length);
    sink.put_slice(data);
    Ok(())
}

/// Writes a UTF-8 string with its two byte length. A `&str` is already valid
/// UTF-8; U+0000 is refused so that Petrel never sends what it would reject.
pub fn put_string(sink: &mut impl Sink, text: &str) -> Result<(), EncodeError> {
    if text.contains('\0') {
        return Err(EncodeError::NullCharacter);
    }
    put_binary(sink, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(bytes))
    }

    // [MQTT-1.5.5-1] (v5.0) the boundary values of section 1.5.5's table.
    #[test]
    fn variable_byte_integer_boundaries_round_trip() {
        let table: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        assert!(!table.is_empty());
        for (value, bytes) in table {
            let mut buf = BytesMut::new();
            put_variable_byte_integer(&mut buf, *value).unwrap();
            assert_eq!(&buf[..], *bytes, "encoding {value}");
            let mut counter = Counter::default();
            put_variable_byte_integer(&mut counter, *value).unwrap();
            assert_eq!(counter.0, bytes.len());
            assert_eq!(reader(bytes).variable_byte_integer(), Ok(*value));
        }
    }

    // [MQTT-1.5.5-1] (v5.0) a redundant continuation byte is refused.
    #[test]
    fn variable_byte_integer_non_minimal_is_refused() {
        assert_eq!(
            reader(&[0x80, 0x00]).variable_byte_integer(),
            Err(DecodeError::NonMinimalVariableByteInteger)
        );
        assert_eq!(
            reader(&[0xFF, 0x80, 0x00]).variable_byte_integer(),
            Err(DecodeError::NonMinimalVariableByteInteger)
        );
    }

    #[test]
    fn variable_byte_integer_longer_than_four_bytes_is_refused() {
        assert_eq!(
            reader(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).variable_byte_integer(),
            Err(DecodeError::VariableByteIntegerTooLong)
        );
        let mut buf = BytesMut::new();
        assert_eq!(
            put_variable_byte_integer(&mut buf, VARIABLE_BYTE_INTEGER_MAX + 1),
            Err(EncodeError::VariableByteIntegerTooLarge(
                VARIABLE_BYTE_INTEGER_MAX + 1
            ))
        );
    }

    // [MQTT-1.5.4-1] (v5.0) [MQTT-1.5.3-1] (v3.1.1) ill-formed UTF-8 and an
    // encoded surrogate (ED A0 80 is U+D800) are refused.
    #[test]
    fn string_with_invalid_utf8_or_surrogate_is_refused() {
        assert_eq!(
            reader(&[0x00, 0x02, 0xC3, 0x28]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            reader(&[0x00, 0x03, 0xED, 0xA0, 0x80]).string(),
            Err(DecodeError::InvalidUtf8)
        );
        // An overlong encoding of '/' (C0 AF).
        assert_eq!(
            reader(&[0x00, 0x02, 0xC0, 0xAF]).string(),
            Err(DecodeError::InvalidUtf8)
        );
    }

    // [MQTT-1.5.4-2] (v5.0) [MQTT-1.5.3-2] (v3.1.1) U+0000 is refused both ways.
    #[test]
    fn string_with_null_character_is_refused() {
        assert_eq!(
            reader(&[0x00, 0x03, b'a', 0x00, b'b']).string(),
            Err(DecodeError::NullCharacter)
        );
        let mut buf = BytesMut::new();
        assert_eq!(
            put_string(&mut buf, "a\0b"),
            Err(EncodeError::NullCharacter)
        );
    }

    // [MQTT-1.5.4-3] (v5.0) [MQTT-1.5.3-3] (v3.1.1) EF BB BF is kept as U+FEFF.
    #[test]
    fn byte_order_mark_is_kept() {
        let bytes = [0x00, 0x04, 0xEF, 0xBB, 0xBF, b'a'];
        let text = reader(&bytes).string().unwrap();
        assert_eq!(text, "\u{FEFF}a");
        let mut buf = BytesMut::new();
        put_string(&mut buf, &text).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    // 1.5.4's example: "A𪛔" is 41 F0 AA 9B 94.
    #[test]
    fn string_example_from_the_specification() {
        let bytes = [0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];
        assert_eq!(reader(&bytes).string().unwrap(), "A\u{2A6D4}");
    }

    // [MQTT-1.5.7-1] (v5.0) either half of a pair may make it malformed.
    #[test]
    fn string_pair_checks_both_halves() {
        let good = [0x00, 0x01, b'k', 0x00, 0x01, b'v'];
        assert_eq!(
            reader(&good).string_pair().unwrap(),
            ("k".to_owned(), "v".to_owned())
        );
        let bad_name = [0x00, 0x01, 0x00, 0x00, 0x01, b'v'];
        assert_eq!(
            reader(&bad_name).string_pair(),
            Err(DecodeError::NullCharacter)
        );
        let bad_value = [0x00, 0x01, b'k', 0x00, 0x01, 0xFF];
        assert_eq!(
            reader(&bad_value).string_pair(),
            Err(DecodeError::InvalidUtf8)
        );
    }

    // [MQTT-4.7.3-3] (v3.1.1, v5.0): no field, topics included, can be encoded
    // over 65,535 bytes.
    #[test]
    fn field_running_past_the_packet_is_refused() {
        assert_eq!(
            reader(&[0x00, 0x05, b'a']).string(),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(reader(&[0x00]).u16(), Err(DecodeError::UnexpectedEnd));
        assert_eq!(reader(&[1, 2, 3]).u32(), Err(DecodeError::UnexpectedEnd));
        let too_long = vec![0u8; FIELD_LENGTH_MAX + 1];
        let mut buf = BytesMut::new();
        assert_eq!(
            put_binary(&mut buf, &too_long),
            Err(EncodeError::FieldTooLong(FIELD_LENGTH_MAX + 1))
        );
    }
}
