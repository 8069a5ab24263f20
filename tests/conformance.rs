//! Checks the conformance matrix, `tests/conformance.tsv`: every row names
//! a version, a normative statement, the tests that check it and a status;
//! every test named must exist and must cite the statement, with its
//! version, in the comments just above it or in its body. Needs nothing
//! outside the repository.

use std::path::Path;

const MATRIX: &str = include_str!("conformance.tsv");
const STATUSES: [&str; 2] = ["pass", "waived"];
/// Lines above a test's `fn` that count as its leading comment.
const LEADING_LINES: usize = 12;

struct Row<'a> {
    version: &'a str,
    id: &'a str,
    tests: Vec<&'a str>,
    status: &'a str,
    note: &'a str,
}

fn rows() -> Vec<Row<'static>> {
    let mut lines = MATRIX.lines();
    assert_eq!(
        lines.next(),
        Some("version\tid\ttests\tstatus\tnote"),
        "header"
    );
    let rows: Vec<Row> = lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 5, "five tab-separated fields: {line}");
            Row {
                version: fields[0],
                id: fields[1],
                tests: fields[2].split_whitespace().collect(),
                status: fields[3],
                note: fields[4],
            }
        })
        .collect();
    assert!(!rows.is_empty(), "the matrix must not be empty");
    rows
}

/// The text of test `name` in `file`: its leading comment lines and body.
fn test_text(file: &str, name: &str) -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let source = std::fs::read_to_string(&path).ok()?;
    let lines: Vec<&str> = source.lines().collect();
    let needle = format!("fn {name}(");
    let start = lines.iter().position(|line| line.contains(&needle))?;
    let indent = lines[start].len() - lines[start].trim_start().len();
    let closing = format!("{}}}", " ".repeat(indent));
    let end = lines[start..]
        .iter()
        .position(|line| line.starts_with(&closing) && line.trim() == "}")
        .map_or(lines.len(), |offset| start + offset + 1);
    Some(lines[start.saturating_sub(LEADING_LINES)..end].join("\n"))
}

/// Whether `text` has a comment naming `tag` whose comment block (the run
/// of adjacent `//` lines around it) names `version`.
fn cites(text: &str, tag: &str, version: &str) -> bool {
    let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
    let is_comment = |line: &&str| line.starts_with("//");
    lines.iter().enumerate().any(|(index, line)| {
        if !line.contains(tag) {
            return false;
        }
        if line.contains(version) {
            return true;
        }
        if !is_comment(line) {
            return false;
        }
        let start = lines[..index]
            .iter()
            .rposition(|l| !is_comment(l))
            .map_or(0, |p| p + 1);
        let end = lines[index..]
            .iter()
            .position(|l| !is_comment(l))
            .map_or(lines.len(), |p| index + p);
        lines[start..end].iter().any(|l| l.contains(version))
    })
}

/// The 3.1.1 statements that bind a server ("server" or "both"): 116.
const V3_1_1_SERVER_ROWS: usize = 116;

#[test]
fn every_3_1_1_server_statement_is_listed() {
    let count = rows().iter().filter(|row| row.version == "3.1.1").count();
    assert_eq!(count, V3_1_1_SERVER_ROWS);
}

/// The 5.0 statements that bind a server ("server" or "both"): 215. Rows
/// for the specification's unnumbered Protocol Error rules (ids
/// `MQTT-PE-...`) come on top.
const V5_0_SERVER_ROWS: usize = 215;

#[test]
fn every_5_0_server_statement_is_listed() {
    let count = rows()
        .iter()
        .filter(|row| row.version == "5.0" && !row.id.starts_with("MQTT-PE-"))
        .count();
    assert_eq!(count, V5_0_SERVER_ROWS);
}

#[test]
fn every_row_is_well_formed() {
    for row in rows() {
        assert!(
            row.version == "5.0" || row.version == "3.1.1",
            "{}: version",
            row.id
        );
        assert!(row.id.starts_with("MQTT-"), "{}: id", row.id);
        assert!(STATUSES.contains(&row.status), "{}: status", row.id);
        match row.status {
            "pass" => assert!(!row.tests.is_empty(), "{}: a pass names its tests", row.id),
            _ => assert!(
                !row.note.is_empty(),
                "{}: a waiver gives its reason",
                row.id
            ),
        }
    }
}

#[test]
fn no_statement_is_listed_twice() {
    let rows = rows();
    let mut keys: Vec<(&str, &str)> = rows.iter().map(|row| (row.version, row.id)).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "duplicate rows");
}

#[test]
fn every_listed_test_exists_and_cites_its_statement() {
    let mut checked = 0;
    for row in rows() {
        let tag = format!("[{}]", row.id);
        let version = format!("v{}", row.version);
        for test in &row.tests {
            let (file, name) = test
                .rsplit_once("::")
                .unwrap_or_else(|| panic!("{}: '{test}' is not FILE::TEST", row.id));
            let text = test_text(file, name)
                .unwrap_or_else(|| panic!("{}: test {test} does not exist", row.id));
            let cited = cites(&text, &tag, &version);
            assert!(cited, "{test} does not cite {tag} ({version})");
            checked += 1;
        }
    }
    assert!(checked > 0);
}
