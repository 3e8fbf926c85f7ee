//! The CSV report: one row per change of the period, RFC 4180, with cells
//! that a spreadsheet would take for a formula neutralised.

use std::io::Write;

use super::Result;
use super::scan::{ChangeSeen, actor_id};

/// The header row.
pub(super) const HEADER: [&str; 11] = [
    "seq",
    "time",
    "cluster",
    "namespace",
    "kind",
    "name",
    "verdict",
    "actor",
    "actor_source",
    "desired_commit",
    "paths",
];

/// Rows written as changes are read.
pub(super) struct Rows<'a> {
    out: &'a mut dyn Write,
    line: String,
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").finish_non_exhaustive()
    }
}

impl<'a> Rows<'a> {
    /// Writes the header to `out`.
    pub(super) fn start(out: &'a mut dyn Write) -> Result<Rows<'a>> {
        let mut rows = Rows {
            out,
            line: String::new(),
        };
        rows.emit(HEADER.iter().map(|h| (*h).to_owned()))?;
        Ok(rows)
    }

    /// Writes the row of one change.
    pub(super) fn write(&mut self, change: &ChangeSeen<'_>) -> Result<()> {
        let key = &change.event.key;
        let (actor, source) = actor_id(&change.judgement.actor);
        let paths: Vec<String> = change
            .judgement
            .diff
            .iter()
            .map(|c| c.path.to_string())
            .collect();
        self.emit([
            change.seq.to_string(),
            change
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            key.cluster.clone(),
            key.namespace.clone(),
            key.kind.clone(),
            key.name.clone(),
            change.judgement.verdict.name().to_owned(),
            actor,
            source.to_owned(),
            change.judgement.desired_commit.clone().unwrap_or_default(),
            paths.join("; "),
        ])
    }

    fn emit(&mut self, cells: impl IntoIterator<Item = String>) -> Result<()> {
        self.line.clear();
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_cell(&mut self.line, &cell);
        }
        self.line.push_str("\r\n");
        self.out.write_all(self.line.as_bytes())?;
        Ok(())
    }
}

/// Appends `cell`: a leading `=`, `+`, `-`, `@`, tab or carriage return
/// gets a `'` before it (a spreadsheet then shows text, never runs a
/// formula); a cell holding `"`, `,`, a line break or that `'` is quoted,
/// its quotes doubled (RFC 4180).
fn push_cell(line: &mut String, cell: &str) {
    let neutralise = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = neutralise || cell.contains(['"', ',', '\n', '\r']);
    if quote {
        line.push('"');
    }
    if neutralise {
        line.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    if quote {
        line.push('"');
    }
}

/// Splits CSV text into rows of cells (RFC 4180), for the tests: read by
/// the `csv` crate, not by this module.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Vec<Vec<String>> {
    ::csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|row| row.expect("a CSV row").iter().map(str::to_owned).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str) -> String {
        let mut line = String::new();
        push_cell(&mut line, text);
        line
    }

    #[test]
    fn cells_are_quoted_as_rfc_4180_says() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for hostile in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "=HYPERLINK(\"x\")"] {
            let text = cell(hostile);
            assert!(text.starts_with("\"'"), "{hostile:?} became {text:?}");
            let parsed = parse(&format!("{text}\r\n"));
            assert_eq!(parsed, vec![vec![format!("'{hostile}")]]);
        }
    }
}
