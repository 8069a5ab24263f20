//! A configuration error, naming the key at fault and the line of the
//! file it is on (found in the file's text, nested keys included).

use std::fmt;

/// A configuration that cannot be used, naming the key and, when it came
/// from a file, the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault (dotted for nested keys), if one is known.
    pub key: Option<String>,
    /// 1-based line in the file, if known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, self.line) {
            (Some(key), Some(line)) => write!(f, "line {line}: `{key}`: {}", self.message),
            (Some(key), None) => write!(f, "`{key}`: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The same error with the line of its key in `text` (the file it came
    /// from), when it has a key and no line yet.
    pub fn located_in(mut self, text: &str) -> ConfigError {
        if self.line.is_none() {
            self.line = self.key.as_deref().and_then(|key| line_of_key(text, key));
        }
        self
    }

    /// An error about `key`.
    pub fn key(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: Some(key.to_owned()),
            line: None,
            message: message.into(),
        }
    }
}

/// The key assigned on 1-based `line` of `text`, if the line is `key = ...`.
pub(super) fn key_on_line(text: &str, line: usize) -> Option<String> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

/// The 1-based line where `key` is set in `text`: a top-level key, or a
/// dotted path through arrays of tables and tables, such as
/// `bridge[0].topic[1].qos` or `listener[2].tls.cert`. For a key that is
/// not written (a missing one), the line of its table's header.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut end = lines.len();
    let mut table = String::new();
    let segments: Vec<&str> = key.split('.').collect();
    let (last, tables) = segments.split_last()?;
    for segment in tables {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()?),
            None => (*segment, 0),
        };
        table = if table.is_empty() {
            name.to_owned()
        } else {
            format!("{table}.{name}")
        };
        let is_header = |line: &str| {
            let line = line.trim();
            line == format!("[[{table}]]") || line == format!("[{table}]")
        };
        let header = (start..end)
            .filter(|&number| is_header(lines[number]))
            .nth(index)?;
        start = header;
        // The table runs to the next header of the same or an outer array.
        end = (header + 1..end)
            .find(|&number| is_header(lines[number]))
            .unwrap_or(end);
    }
    let found = (start..end).find(|&number| {
        let trimmed = lines[number].trim_start();
        trimmed
            .strip_prefix(last)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    // Not a key: maybe a table of its own (`[bridge.tls]`).
    let subtable = if table.is_empty() {
        (*last).to_owned()
    } else {
        format!("{table}.{last}")
    };
    let header = (start..end).find(|&number| lines[number].trim() == format!("[{subtable}]"));
    match found.or(header) {
        Some(number) => Some(number + 1),
        None if !tables.is_empty() => Some(start + 1),
        None => None,
    }
}
