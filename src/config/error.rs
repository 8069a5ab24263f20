//! A configuration error, naming the key at fault and the line of the
//! file it is on (from the TOML parser's spans, nested keys included).

use std::fmt;

use toml::de::{DeTable, DeValue};

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

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// One step of a key path: a key, and the index for an array of tables.
fn segment(part: &str) -> Option<(&str, Option<usize>)> {
    match part.split_once('[') {
        Some((name, rest)) => Some((name, Some(rest.strip_suffix(']')?.parse().ok()?))),
        None => Some((part, None)),
    }
}

/// The dotted path (`bridge[0].topic[1].qos`) of the innermost key whose
/// name or value holds byte `offset` of `text`, from the TOML parser's
/// spans; none if the text does not parse or no key holds it.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    innermost_key(root.get_ref(), offset, "")
}

fn innermost_key(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        // A table's own keys first: the innermost one is the answer.
        let inner = match value.get_ref() {
            DeValue::Table(inner) => innermost_key(inner, offset, &path),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
                let DeValue::Table(inner) = item.get_ref() else {
                    return None;
                };
                innermost_key(inner, offset, &format!("{path}[{index}]"))
            }),
            _ => None,
        };
        if inner.is_some() {
            return inner;
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(path);
        }
    }
    None
}

/// The 1-based line where `key` is set in `text`: a top-level key, or a
/// dotted path through tables and arrays of tables, such as
/// `bridge[0].topic[1].qos` or `listener[2].tls.cert`, written as
/// `[table]` sections, dotted keys or inline tables alike (the TOML
/// parser's spans say where). For a key that is not written (a missing
/// one), the line of the table that should hold it.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut table_at: Option<usize> = None;
    let parts: Vec<&str> = key.split('.').collect();
    let (last, tables) = parts.split_last()?;
    for part in tables {
        let (name, index) = segment(part)?;
        let (found_key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        let (inner, at) = match (value.get_ref(), index) {
            (DeValue::Table(inner), _) => (inner, found_key.span().start),
            (DeValue::Array(items), index) => {
                let item = items.get(index.unwrap_or(0))?;
                let DeValue::Table(inner) = item.get_ref() else {
                    return None;
                };
                // An array of tables' element: its first key, or its header.
                let at = inner
                    .iter()
                    .map(|(k, _)| k.span().start)
                    .min()
                    .unwrap_or(item.span().start);
                (inner, at)
            }
            _ => return None,
        };
        table = inner;
        table_at = Some(at);
    }
    let (name, _) = segment(last)?;
    match table.iter().find(|(k, _)| k.get_ref() == name) {
        Some((found_key, _)) => Some(line_at(text, found_key.span().start)),
        None => table_at.map(|at| line_at(text, at)),
    }
}
