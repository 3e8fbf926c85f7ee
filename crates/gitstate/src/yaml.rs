//! YAML streams read exactly as kubectl reads them.
//!
//! ```text
//! text ──split at `---` lines (kubectl's reader)──▶ parts
//!      ──saphyr events──▶ node tree (anchors, lines)
//!      ──decode as go-yaml v2 + sigs.k8s.io/yaml──▶ serde_json::Value per document
//! ```
//!
//! kubectl does not hand a file to a YAML parser as one stream. It reads it
//! line by line, drops the `\r` of `\r\n`, ends every line (the last one
//! too) with `\n`, cuts the stream at lines that start with `---` (only a
//! comment may follow on that line), and parses each part as one YAML 1.1
//! document with go-yaml v2, ignoring whatever follows a `...` in the part.
//! The value is then turned into JSON by sigs.k8s.io/yaml and decoded again,
//! so integral numbers become ints. This module does the same steps:
//!
//! - plain scalars resolve as go-yaml v2 resolves them (`yes`/`on`/`y` are
//!   booleans, `0755` is 493, `0x1F` 31, `1e3` 1000, `~` null); quoted and
//!   block scalars are strings; explicit tags (`!!str`, `!!int`, `!!binary`,
//!   ...) decide the type or fail as go-yaml fails;
//! - keys that are not strings become their text (`1.5`, `true`, floats
//!   through float32 as sigs.k8s.io/yaml writes them); null and uint64 keys
//!   fail;
//! - merge keys (`<<`) apply in order with the other keys (a later key
//!   wins, even a merged one), duplicate keys keep the last value;
//! - aliases expand with go-yaml's "excessive aliasing" limit, so an anchor
//!   bomb is an error after a few thousand nodes.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Value};

/// The deepest nesting accepted, counting aliases as they expand. kubectl
/// allows more (10000 levels), but decoding recursively that deep would not
/// fit the 2 MiB stack of a worker thread; real manifests (deep CRD schemas
/// included) stay far below, and serde_json stops JSON at 128.
const MAX_DEPTH: usize = 256;

/// The prefix of the YAML core tags (`!!int` is `tag:yaml.org,2002:int`).
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// go-yaml v2 counts decoded nodes; past these counts aliases may expand
/// only into a shrinking share of them.
const ALIAS_RATIO_RANGE_LOW: usize = 400_000;
const ALIAS_RATIO_RANGE_HIGH: usize = 4_000_000;

/// Why a YAML stream does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub(crate) struct YamlError {
    /// 1-based line in the file.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

/// One document of a stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Document {
    /// 1-based line in the file where the document's content starts (its
    /// first line when it has no content).
    pub line: usize,
    /// The document as kubectl's JSON; `Null` for an empty document.
    pub value: Value,
    /// 1-based lines of the entries of a top-level `items` sequence (the
    /// objects of a `kind: List`), in order; empty when there is none.
    pub item_lines: Vec<usize>,
}

/// The documents of a YAML stream whose first line is line `first_line` of
/// the file, one per part between `---` lines (empty parts are `Null`).
pub(crate) fn documents(text: &str, first_line: usize) -> Result<Vec<Document>, YamlError> {
    split(text, first_line)?
        .into_iter()
        .map(|part| parse_part(&part))
        .collect()
}

/// A part of the stream between separator lines, as kubectl passes it on.
#[derive(Debug)]
struct Part {
    /// 1-based line in the file of the part's first line.
    line: usize,
    /// The part's lines, each ended by `\n`.
    text: String,
}

/// Cuts a stream into parts as kubectl's YAML reader does: line by line,
/// `\r\n` read as `\n`, every line ended by `\n`, a part ended by a line
/// starting with `---` (only spaces and a comment may follow it).
fn split(text: &str, first_line: usize) -> Result<Vec<Part>, YamlError> {
    let mut parts = Vec::new();
    let mut current = Part {
        line: first_line,
        text: String::new(),
    };
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line_number = first_line + index;
        let line = match raw.strip_suffix('\n') {
            Some(line) => line.strip_suffix('\r').unwrap_or(line),
            None => raw,
        };
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(YamlError {
                    line: line_number,
                    message: format!(
                        "invalid document separator `{line}`: kubectl allows only a comment after ---"
                    ),
                });
            }
            if !current.text.is_empty() {
                parts.push(current);
            }
            current = Part {
                line: line_number + 1,
                text: String::new(),
            };
            continue;
        }
        current.text.push_str(line);
        current.text.push('\n');
    }
    if !current.text.is_empty() {
        parts.push(current);
    }
    Ok(parts)
}

/// Parses the first document of a part.
fn parse_part(part: &Part) -> Result<Document, YamlError> {
    check_characters(part)?;
    let at_line = |line: usize| part.line + line.saturating_sub(1);
    let failed = |(line, message): PartError| YamlError {
        line: at_line(line),
        message,
    };
    check_leading_document_end(&part.text).map_err(failed)?;
    let tree = Tree::build_leniently(&part.text).map_err(failed)?;
    let Some(root) = tree.root else {
        return Ok(Document {
            line: part.line,
            value: Value::Null,
            item_lines: Vec::new(),
        });
    };
    let value = Decoder::new(&tree).value(root).map_err(failed)?;
    Ok(Document {
        line: at_line(tree.nodes[root].line),
        value,
        item_lines: tree.item_lines(root).into_iter().map(at_line).collect(),
    })
}

/// Refuses a part whose first token is the document end marker `...`:
/// go-yaml then finds no node where the document should start.
fn check_leading_document_end(text: &str) -> Result<(), PartError> {
    let first = text.lines().enumerate().find(|(_, line)| {
        let line = line.trim_start();
        !line.is_empty() && !line.starts_with('#')
    });
    match first {
        Some((index, line))
            if line
                .strip_prefix("...")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t'])) =>
        {
            Err((
                index + 1,
                "did not find expected node content: a document end marker (...) before any document"
                    .to_owned(),
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses the characters go-yaml refuses anywhere in a document: C0 and C1
/// controls other than tab, line feed, carriage return and NEL, and
/// U+FFFE/U+FFFF.
fn check_characters(part: &Part) -> Result<(), YamlError> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | '\u{85}')
            || ('\u{20}'..='\u{7e}').contains(&c)
            || ('\u{a0}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}'
    };
    for (index, line) in part.text.lines().enumerate() {
        if let Some(c) = line.chars().find(|c| !allowed(*c)) {
            return Err(YamlError {
                line: part.line + index,
                message: format!(
                    "control character U+{:04X} is not allowed in YAML",
                    c as u32
                ),
            });
        }
    }
    Ok(())
}

/// An error of tree building or decoding: 1-based line in the part, and
/// the message.
type PartError = (usize, String);

type NodeId = usize;

/// A node as go-yaml v2's parser keeps it.
#[derive(Debug)]
struct Node {
    /// 1-based line in the part.
    line: usize,
    kind: NodeKind,
}

#[derive(Debug)]
enum NodeKind {
    Scalar {
        value: String,
        /// The full tag (`tag:yaml.org,2002:int`, `!custom`, `!`), if any.
        tag: Option<String>,
        /// Plain (unquoted, not a block scalar).
        plain: bool,
    },
    Sequence(Vec<NodeId>),
    Mapping(Vec<(NodeId, Option<NodeId>)>),
    Alias(NodeId),
}

impl NodeKind {
    /// go-yaml's "implicit": a plain scalar without a tag, or with `!`.
    fn implicit(tag: Option<&str>, plain: bool) -> bool {
        match tag {
            None => plain,
            Some(tag) => tag == "!",
        }
    }
}

/// The nodes of one document, with anchors resolved to the node they name
/// when the alias is read (a later anchor of the same name wins from there
/// on, as in go-yaml).
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    root: Option<NodeId>,
    /// Double-quoted scalars whose value has a `/`, as character ranges of
    /// the text, to look for the `\/` escape that YAML 1.1 lacks.
    slashes: Vec<(usize, usize, usize)>,
}

/// Why building a tree failed: where (1-based line, 0-based column and
/// character index in the part) and what.
#[derive(Debug)]
struct BuildError {
    line: usize,
    col: usize,
    index: usize,
    message: String,
}

impl From<BuildError> for PartError {
    fn from(err: BuildError) -> Self {
        (err.line, err.message)
    }
}

/// The most places one part may need the leniency of go-yaml's scanner,
/// and the most mends of one line (each reads the part again).
const MAX_LENIENCIES: usize = 1000;
const MAX_MENDS_PER_LINE: usize = 64;

impl Tree {
    /// [`Tree::build`] with the leniency of go-yaml's (libyaml's) scanner
    /// where saphyr holds to YAML 1.2: indentation is not checked inside
    /// flow collections or inside quoted scalars, and a tab may follow the
    /// `:` of a key. Each such error is mended in the text (indenting a
    /// line, turning the tab into a space, which changes no value) and the
    /// part read again. Then refuses the `\/` escape, which YAML 1.1 lacks.
    fn build_leniently(text: &str) -> Result<Tree, PartError> {
        let mut text = std::borrow::Cow::Borrowed(text);
        let mut mended = 0;
        let mut last: Option<(usize, String)> = None;
        let mut same_line = (0, 0);
        let tree = loop {
            let err = match Tree::build(&text) {
                Ok(tree) => break tree,
                Err(err) => err,
            };
            // A mend that changed nothing for this error does not help again,
            // nor do many on one line.
            if last.as_ref() == Some(&(err.index, err.message.clone())) {
                return Err(err.into());
            }
            last = Some((err.index, err.message.clone()));
            same_line = if same_line.0 == err.line {
                (err.line, same_line.1 + 1)
            } else {
                (err.line, 1)
            };
            if same_line.1 > MAX_MENDS_PER_LINE {
                return Err(err.into());
            }
            let fixed = match err.message.as_str() {
                "invalid indentation" | "invalid indentation in flow construct" => {
                    indent_line(&text, err.line)
                }
                "invalid indentation in quoted scalar" => {
                    indent_quoted_scalar(&text, err.index, err.col)
                }
                "':' must be followed by a valid YAML whitespace" => {
                    tab_after_colon(&text, err.index)
                }
                _ => None,
            };
            match fixed {
                Some(fixed) if mended < MAX_LENIENCIES => {
                    mended += 1;
                    text = std::borrow::Cow::Owned(fixed);
                }
                _ => return Err(err.into()),
            }
        };
        tree.check_slash_escapes(&text)?;
        Ok(tree)
    }

    /// Refuses `\/` in a double-quoted scalar: go-yaml v2 reads YAML 1.1,
    /// where it is an unknown escape.
    fn check_slash_escapes(&self, text: &str) -> Result<(), PartError> {
        if self.slashes.is_empty() {
            return Ok(());
        }
        let starts: Vec<usize> = text.char_indices().map(|(at, _)| at).collect();
        let byte = |index: usize| starts.get(index).copied().unwrap_or(text.len());
        for (start, end, line) in &self.slashes {
            let mut chars = text[byte(*start)..byte(*end)].chars();
            while let Some(c) = chars.next() {
                if c == '\\' && chars.next() == Some('/') {
                    return Err((
                        *line,
                        "found unknown escape character `\\/` (YAML 1.1 has no such escape; write /)"
                            .to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads the first document of `text`; the rest of the text after that
    /// document's end is not read, as go-yaml reads one document.
    fn build(text: &str) -> Result<Tree, BuildError> {
        let mut parser = Parser::new_from_str(text);
        let mut tree = Tree {
            nodes: Vec::new(),
            root: None,
            slashes: Vec::new(),
        };
        // saphyr numbers each anchor definition; an alias names one.
        let mut anchors: HashMap<usize, NodeId> = HashMap::new();
        // Open collections, innermost last.
        let mut open: Vec<NodeId> = Vec::new();
        loop {
            let (event, span) = match parser.next_event() {
                Some(Ok(next)) => next,
                Some(Err(err)) => {
                    let mark = err.marker();
                    return Err(BuildError {
                        line: mark.line().max(1),
                        col: mark.col(),
                        index: mark.index(),
                        message: err.info().to_owned(),
                    });
                }
                None => return Ok(tree),
            };
            let line = span.start.line();
            let (kind, anchor) = match event {
                Event::StreamStart | Event::Nothing | Event::DocumentStart(_) => continue,
                Event::StreamEnd | Event::DocumentEnd => return Ok(tree),
                Event::SequenceEnd | Event::MappingEnd => {
                    open.pop();
                    continue;
                }
                Event::Alias(anchor) => match anchors.get(&anchor) {
                    Some(target) => (NodeKind::Alias(*target), 0),
                    None => {
                        return Err(BuildError {
                            line,
                            col: span.start.col(),
                            index: span.start.index(),
                            message: "unknown anchor referenced".to_owned(),
                        });
                    }
                },
                Event::Scalar(value, style, anchor, tag) => {
                    if style == ScalarStyle::DoubleQuoted && value.contains('/') {
                        tree.slashes
                            .push((span.start.index(), span.end.index(), line));
                    }
                    (
                        NodeKind::Scalar {
                            value: value.into_owned(),
                            tag: tag.map(|tag| full_tag(&tag)),
                            plain: style == ScalarStyle::Plain,
                        },
                        anchor,
                    )
                }
                Event::SequenceStart(anchor, _) => (NodeKind::Sequence(Vec::new()), anchor),
                Event::MappingStart(anchor, _) => (NodeKind::Mapping(Vec::new()), anchor),
            };
            let id = tree.nodes.len();
            let collection = matches!(kind, NodeKind::Sequence(_) | NodeKind::Mapping(_));
            tree.nodes.push(Node { line, kind });
            tree.attach(open.last().copied(), id);
            if anchor != 0 {
                anchors.insert(anchor, id);
            }
            if collection {
                if open.len() >= MAX_DEPTH {
                    return Err(BuildError {
                        line,
                        col: span.start.col(),
                        index: span.start.index(),
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                open.push(id);
            }
        }
    }

    /// Adds `child` to the collection `parent` (or makes it the root).
    fn attach(&mut self, parent: Option<NodeId>, child: NodeId) {
        let Some(parent) = parent else {
            self.root = Some(child);
            return;
        };
        match &mut self.nodes[parent].kind {
            NodeKind::Sequence(items) => items.push(child),
            NodeKind::Mapping(pairs) => match pairs.last_mut() {
                Some((_, value @ None)) => *value = Some(child),
                _ => pairs.push((child, None)),
            },
            NodeKind::Scalar { .. } | NodeKind::Alias(_) => {}
        }
    }

    /// The lines of the entries of the root mapping's last `items` key,
    /// when its value is a sequence.
    fn item_lines(&self, root: NodeId) -> Vec<usize> {
        let NodeKind::Mapping(pairs) = &self.nodes[self.follow(root)].kind else {
            return Vec::new();
        };
        let items = pairs.iter().rev().find_map(|(key, value)| {
            let is_items = matches!(
                &self.nodes[*key].kind,
                NodeKind::Scalar { value, .. } if value == "items"
            );
            is_items.then_some(*value).flatten()
        });
        match items.map(|items| &self.nodes[self.follow(items)].kind) {
            Some(NodeKind::Sequence(entries)) => entries
                .iter()
                .map(|entry| self.nodes[*entry].line)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The node an alias names (through chains of aliases), or `id` itself.
    fn follow(&self, mut id: NodeId) -> NodeId {
        for _ in 0..MAX_DEPTH {
            match self.nodes[id].kind {
                NodeKind::Alias(target) => id = target,
                _ => break,
            }
        }
        id
    }
}

/// The byte range of 1-based line `line` of `text`, without its `\n`.
fn line_range(text: &str, line: usize) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let end = text[start..].find('\n').map_or(text.len(), |at| start + at);
    Some(start..end)
}

/// The number of leading spaces of a line.
fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Indents line `line` (inside a flow collection) one column deeper than
/// the content line before it, and at least one deeper than it is.
fn indent_line(text: &str, line: usize) -> Option<String> {
    let range = line_range(text, line)?;
    let own = indentation(&text[range.clone()]);
    let before = text[..range.start]
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(0, indentation);
    let wanted = (before + 1).max(own + 1);
    let mut fixed = String::with_capacity(text.len() + wanted);
    fixed.push_str(&text[..range.start]);
    fixed.push_str(&" ".repeat(wanted - own));
    fixed.push_str(&text[range.start..]);
    Some(fixed)
}

/// Indents the continuation lines of the quoted scalar that starts at
/// character `index` (column `col`) past its opening quote.
fn indent_quoted_scalar(text: &str, index: usize, col: usize) -> Option<String> {
    let start = text.char_indices().nth(index).map(|(at, _)| at)?;
    let quote = text[start..]
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'')?;
    // Find the closing quote.
    let mut end = None;
    let mut chars = text[start + 1..].char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            '\'' if quote == '\'' && chars.peek().is_some_and(|(_, next)| *next == '\'') => {
                chars.next();
            }
            c if c == quote => {
                end = Some(start + 1 + at);
                break;
            }
            _ => {}
        }
    }
    let end = end.unwrap_or(text.len());
    let pad = " ".repeat(col + 1);
    let mut fixed = String::with_capacity(text.len() + pad.len() * 4);
    fixed.push_str(&text[..start]);
    let mut chars = text[start..end].chars().peekable();
    while let Some(c) = chars.next() {
        fixed.push(c);
        let line_break = c == '\n' || (c == '\r' && chars.peek() != Some(&'\n'));
        if line_break {
            fixed.push_str(&pad);
        }
    }
    fixed.push_str(&text[end..]);
    Some(fixed)
}

/// Turns the tab right after the `:` before character `index` into a
/// space (go-yaml skips tabs after the `:` of a key).
fn tab_after_colon(text: &str, index: usize) -> Option<String> {
    let at = text
        .char_indices()
        .nth(index)
        .map_or(text.len(), |(at, _)| at);
    let colon = text[..at].trim_end_matches([' ', '\t']);
    if !colon.ends_with(':') || !text[colon.len()..].starts_with('\t') {
        return None;
    }
    let mut fixed = text.to_owned();
    fixed.replace_range(colon.len()..=colon.len(), " ");
    Some(fixed)
}

/// The full name of a tag: `!!int` is `tag:yaml.org,2002:int`, `!foo` is
/// `!foo`, the non-specific `!` is `!`.
fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

/// `tag:yaml.org,2002:int` as `!!int`, for messages.
fn short_tag(tag: &str) -> String {
    match tag.strip_prefix(CORE_TAG_PREFIX) {
        Some(name) => format!("!!{name}"),
        None => tag.to_owned(),
    }
}

/// A scalar as go-yaml v2 resolves it into an `interface{}`.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// Only above `i64::MAX`: go-yaml tries int64 first.
    Uint(u64),
    Float(f64),
    Str(String),
}

impl Scalar {
    /// The value kubectl ends up with: the JSON that sigs.k8s.io/yaml
    /// writes, decoded again with ints kept as ints.
    fn into_json(self) -> Result<Value, String> {
        Ok(match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::from(i),
            // JSON `18446744073709551615` is not an int64 for kubectl: it
            // decodes it as a float.
            Scalar::Uint(u) => json_number(u as f64),
            Scalar::Float(f) if !f.is_finite() => {
                return Err(format!(
                    "{} has no JSON form (kubectl: json: unsupported value)",
                    go_float_key(f)
                ));
            }
            Scalar::Float(f) => json_number(f),
            Scalar::Str(s) => Value::String(s),
        })
    }
}

/// A float as kubectl holds it after its JSON round trip: Go writes an
/// integral float below 1e21 without a fraction or exponent (shortest
/// digits), and kubectl decodes such a number as an int when it fits in
/// int64 (serde_json then reads it as u64/i64 or, beyond, as a float).
pub(crate) fn json_number(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        // Rust prints the shortest digits that read back, padded with
        // zeros, like Go; `+ 0.0` turns -0 into 0.
        let text = format!("{}", f + 0.0);
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            return value;
        }
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A map key as go-yaml v2 keeps it (an `interface{}` map key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    /// The bits of the float, with -0 as 0 (Go compares floats by value).
    Float(u64),
    Str(String),
}

impl Key {
    /// The key of a resolved scalar; `None` for NaN, which equals no key.
    fn of(scalar: &Scalar) -> Option<Key> {
        Some(match scalar {
            Scalar::Null => Key::Null,
            Scalar::Bool(b) => Key::Bool(*b),
            Scalar::Int(i) => Key::Int(*i),
            Scalar::Uint(u) => Key::Uint(*u),
            Scalar::Float(f) if f.is_nan() => return None,
            Scalar::Float(f) => Key::Float((f + 0.0).to_bits()),
            Scalar::Str(s) => Key::Str(s.clone()),
        })
    }
}

/// A mapping being decoded: go-yaml's `map[interface{}]interface{}`.
#[derive(Debug, Default)]
struct GoMap {
    /// Key, value, and the line of the key (in the part).
    entries: Vec<(Scalar, Value, usize)>,
    index: HashMap<Key, usize>,
}

impl GoMap {
    /// Sets `key` (written at `line`), replacing the value of an equal key.
    fn set(&mut self, key: Scalar, value: Value, line: usize) {
        let Some(lookup) = Key::of(&key) else {
            self.entries.push((key, value, line));
            return;
        };
        match self.index.get(&lookup) {
            Some(at) => self.entries[*at].1 = value,
            None => {
                self.index.insert(lookup, self.entries.len());
                self.entries.push((key, value, line));
            }
        }
    }

    /// The JSON object sigs.k8s.io/yaml makes of it: keys as text, null and
    /// uint64 keys refused. Keys that become the same text keep the later
    /// value (kubectl's choice there depends on Go's map order).
    fn into_json(self) -> Result<Map<String, Value>, PartError> {
        let mut object = Map::new();
        for (key, value, line) in self.entries {
            let text = match key {
                Scalar::Str(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => go_float_key(f),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Null => {
                    return Err((
                        line,
                        "a null map key has no JSON form (kubectl refuses it)".to_owned(),
                    ));
                }
                Scalar::Uint(u) => {
                    return Err((
                        line,
                        format!("map key {u} is beyond int64; kubectl refuses uint64 keys"),
                    ));
                }
            };
            object.insert(text, value);
        }
        Ok(object)
    }
}

/// A float key as sigs.k8s.io/yaml writes it: Go's `%g` of the float
/// rounded to float32, shortest digits, `.inf`, `-.inf`, `.nan`.
fn go_float_key(f: f64) -> String {
    let f = f as f32;
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    // `{:e}` gives the shortest digits: "1.2345679e8".
    let formatted = format!("{:e}", f.abs());
    let (mantissa, exponent) = formatted.split_once('e').unwrap_or((&formatted, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let count = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exponent.abs());
    }
    // Digits before the point.
    let point = exponent + 1;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= count {
        format!(
            "{digits}{}",
            "0".repeat((point - count).unsigned_abs() as usize)
        )
    } else {
        let (int, frac) = digits.split_at(point.unsigned_abs() as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{text}")
}

/// Decodes a tree as go-yaml v2 decodes into an `interface{}`, and then as
/// sigs.k8s.io/yaml converts that to JSON.
struct Decoder<'a> {
    tree: &'a Tree,
    /// go-yaml's counters for the alias limit.
    decode_count: usize,
    alias_count: usize,
    alias_depth: usize,
    /// Aliases being expanded, to refuse one that contains itself.
    expanding: HashSet<NodeId>,
    /// Current nesting, counting expanded aliases.
    depth: usize,
}

impl<'a> Decoder<'a> {
    fn new(tree: &'a Tree) -> Self {
        Decoder {
            tree,
            // go-yaml counts the document node too.
            decode_count: 1,
            alias_count: 0,
            alias_depth: 0,
            expanding: HashSet::new(),
            depth: 0,
        }
    }

    fn node(&self, id: NodeId) -> &'a Node {
        &self.tree.nodes[id]
    }

    /// Counts one decoded node as go-yaml does, and refuses a document
    /// where aliases make up too much of what is decoded.
    fn count(&mut self, id: NodeId) -> Result<(), PartError> {
        self.decode_count += 1;
        if self.alias_depth > 0 {
            self.alias_count += 1;
        }
        let ratio = self.alias_count as f64 / self.decode_count as f64;
        if self.alias_count > 100
            && self.decode_count > 1000
            && ratio > allowed_alias_ratio(self.decode_count)
        {
            return Err((
                self.node(id).line,
                "document contains excessive aliasing (an anchor bomb?)".to_owned(),
            ));
        }
        Ok(())
    }

    /// Runs `f` one level deeper, refusing nesting beyond [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut Self) -> Result<T, PartError>,
    ) -> Result<T, PartError> {
        if self.depth >= MAX_DEPTH {
            return Err((
                self.node(id).line,
                format!("nesting deeper than {MAX_DEPTH} levels (counting aliases)"),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// Expands the alias node `id` (whose target is `target`) with `f`.
    fn alias<T>(
        &mut self,
        id: NodeId,
        target: NodeId,
        f: impl FnOnce(&mut Self, NodeId) -> Result<T, PartError>,
    ) -> Result<T, PartError> {
        if !self.expanding.insert(id) {
            return Err((
                self.node(id).line,
                "anchor value contains an alias to itself".to_owned(),
            ));
        }
        self.alias_depth += 1;
        let result = self.nested(id, |decoder| f(decoder, target));
        self.alias_depth -= 1;
        self.expanding.remove(&id);
        result
    }

    /// The JSON value of a node.
    fn value(&mut self, id: NodeId) -> Result<Value, PartError> {
        self.count(id)?;
        let node = self.node(id);
        match &node.kind {
            NodeKind::Alias(target) => self.alias(id, *target, Self::value),
            NodeKind::Scalar { .. } => self
                .scalar(id)?
                .into_json()
                .map_err(|message| (node.line, message)),
            NodeKind::Sequence(items) => self.nested(id, |decoder| {
                items
                    .iter()
                    .map(|item| decoder.value(*item))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }),
            NodeKind::Mapping(pairs) => self.nested(id, |decoder| {
                let mut map = GoMap::default();
                decoder.entries(pairs, &mut map)?;
                map.into_json().map(Value::Object)
            }),
        }
    }

    /// Decodes the pairs of a mapping into `out`, in order: a merge key
    /// sets the merged keys at its place, a later key replaces an earlier
    /// one.
    fn entries(
        &mut self,
        pairs: &[(NodeId, Option<NodeId>)],
        out: &mut GoMap,
    ) -> Result<(), PartError> {
        for (key, value) in pairs {
            let Some(value) = *value else {
                return Err((self.node(*key).line, "mapping key without value".to_owned()));
            };
            if self.is_merge(*key) {
                self.merge(value, out)?;
                continue;
            }
            let line = self.node(*key).line;
            let key = self.key(*key)?;
            let value = self.value(value)?;
            out.set(key, value, line);
        }
        Ok(())
    }

    /// A mapping key: a scalar (through aliases); collections are refused.
    fn key(&mut self, id: NodeId) -> Result<Scalar, PartError> {
        self.count(id)?;
        let node = self.node(id);
        match &node.kind {
            NodeKind::Alias(target) => self.alias(id, *target, Self::key),
            NodeKind::Scalar { .. } => self.scalar(id),
            NodeKind::Sequence(_) | NodeKind::Mapping(_) => Err((
                node.line,
                "invalid map key: a sequence or mapping cannot be a key".to_owned(),
            )),
        }
    }

    /// Whether a key node is the merge key `<<` (plain or tagged `!!merge`).
    fn is_merge(&self, id: NodeId) -> bool {
        match &self.node(id).kind {
            NodeKind::Scalar { value, tag, plain } => {
                value == "<<"
                    && (NodeKind::implicit(tag.as_deref(), *plain)
                        || tag.as_deref() == Some("tag:yaml.org,2002:merge"))
            }
            _ => false,
        }
    }

    /// Applies the value of a merge key to `out`: a mapping, an alias to
    /// one, or a sequence of those (applied last to first, so earlier ones
    /// win).
    fn merge(&mut self, id: NodeId, out: &mut GoMap) -> Result<(), PartError> {
        let refused = |line| {
            Err((
                line,
                "map merge requires a map or a sequence of maps as the value".to_owned(),
            ))
        };
        let node = self.node(id);
        match &node.kind {
            NodeKind::Mapping(_) => self.merge_map(id, out),
            NodeKind::Alias(target) if self.is_mapping(*target) => self.merge_map(id, out),
            NodeKind::Sequence(items) => {
                for item in items.iter().rev() {
                    let item_node = self.node(*item);
                    let mergeable = match &item_node.kind {
                        NodeKind::Mapping(_) => true,
                        NodeKind::Alias(target) => self.is_mapping(*target),
                        _ => false,
                    };
                    if !mergeable {
                        return refused(item_node.line);
                    }
                    self.merge_map(*item, out)?;
                }
                Ok(())
            }
            _ => refused(node.line),
        }
    }

    fn is_mapping(&self, id: NodeId) -> bool {
        matches!(self.node(id).kind, NodeKind::Mapping(_))
    }

    /// Decodes the mapping `id` (or the mapping an alias names) into `out`.
    fn merge_map(&mut self, id: NodeId, out: &mut GoMap) -> Result<(), PartError> {
        self.count(id)?;
        let node = self.node(id);
        match &node.kind {
            NodeKind::Alias(target) => self.alias(id, *target, |decoder, target| {
                decoder.merge_map(target, out)
            }),
            NodeKind::Mapping(pairs) => self.nested(id, |decoder| decoder.entries(pairs, out)),
            _ => Err((
                node.line,
                "map merge requires a map or a sequence of maps as the value".to_owned(),
            )),
        }
    }

    /// A scalar node resolved as go-yaml v2 resolves it.
    fn scalar(&self, id: NodeId) -> Result<Scalar, PartError> {
        let node = self.node(id);
        let NodeKind::Scalar { value, tag, plain } = &node.kind else {
            return Err((node.line, "expected a scalar".to_owned()));
        };
        match (tag.as_deref(), plain) {
            (None, false) => Ok(Scalar::Str(value.clone())),
            (tag, _) => resolve(tag.unwrap_or(""), value).map_err(|message| (node.line, message)),
        }
    }
}

/// The share of decoded nodes that may come from aliases, as go-yaml v2
/// allows it: 99% up to 400,000 nodes, then down to 10% at 4,000,000.
fn allowed_alias_ratio(decode_count: usize) -> f64 {
    if decode_count <= ALIAS_RATIO_RANGE_LOW {
        0.99
    } else if decode_count >= ALIAS_RATIO_RANGE_HIGH {
        0.10
    } else {
        let share = (decode_count - ALIAS_RATIO_RANGE_LOW) as f64
            / (ALIAS_RATIO_RANGE_HIGH - ALIAS_RATIO_RANGE_LOW) as f64;
        0.99 - 0.89 * share
    }
}

/// Resolves a scalar with `tag` (`""` for an untagged plain scalar) as
/// go-yaml v2's `resolve` does, including its refusals for a value that
/// does not fit its tag.
fn resolve(tag: &str, value: &str) -> Result<Scalar, String> {
    let core = |name: &str| format!("{CORE_TAG_PREFIX}{name}");
    let resolvable = tag.is_empty()
        || ["str", "bool", "int", "float", "null", "timestamp"]
            .iter()
            .any(|name| tag == core(name));
    if !resolvable {
        if tag == core("binary") {
            return binary(value).map(Scalar::Str);
        }
        // Unknown and collection tags leave the text.
        return Ok(Scalar::Str(value.to_owned()));
    }
    let (resolved_tag, scalar) = if tag == core("str") {
        ("str", Scalar::Str(value.to_owned()))
    } else {
        resolve_plain(value, tag.is_empty() || tag == core("timestamp"))
    };
    let wanted = tag.strip_prefix(CORE_TAG_PREFIX).unwrap_or(tag);
    if tag.is_empty() || wanted == resolved_tag {
        // A timestamp stays its text in an interface{}.
        return Ok(match scalar {
            Scalar::Str(_) if resolved_tag == "timestamp" => Scalar::Str(value.to_owned()),
            scalar => scalar,
        });
    }
    match (wanted, scalar) {
        ("float", Scalar::Int(i)) => {
            let float = i as f64;
            Ok(Scalar::Float(float))
        }
        _ => Err(format!(
            "cannot decode {} `{value}` as a {}",
            short_tag(&core(resolved_tag)),
            short_tag(tag)
        )),
    }
}

/// What an untagged plain scalar is, as go-yaml v2's resolve table says:
/// the core tag name and the value. `timestamps` allows the timestamp
/// forms (untagged or `!!timestamp` only).
fn resolve_plain(value: &str, timestamps: bool) -> (&'static str, Scalar) {
    let text = || ("str", Scalar::Str(value.to_owned()));
    let hint = match value.bytes().next() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return text(),
    };
    match value {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return ("bool", Scalar::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return ("bool", Scalar::Bool(false));
        }
        "" | "~" | "null" | "Null" | "NULL" => return ("null", Scalar::Null),
        ".nan" | ".NaN" | ".NAN" => return ("float", Scalar::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ("float", Scalar::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return ("float", Scalar::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    match hint {
        b'.' => match go_parse_float(value) {
            Some(f) => ("float", Scalar::Float(f)),
            None => text(),
        },
        b'D' | b'S' => {
            if timestamps && is_timestamp(value) {
                return ("timestamp", Scalar::Str(value.to_owned()));
            }
            let plain = value.replace('_', "");
            if let Some(i) = go_parse_int(&plain, 0) {
                return ("int", Scalar::Int(i));
            }
            if let Some(u) = go_parse_uint(&plain, 0) {
                return ("int", Scalar::Uint(u));
            }
            if is_yaml_float(&plain)
                && let Ok(f) = plain.parse::<f64>()
                && f.is_finite()
            {
                return ("float", Scalar::Float(f));
            }
            if let Some(binary) = plain.strip_prefix("0b") {
                if let Some(i) = go_parse_int(binary, 2) {
                    return ("int", Scalar::Int(i));
                }
                if let Some(u) = go_parse_uint(binary, 2) {
                    return ("int", Scalar::Uint(u));
                }
            } else if let Some(binary) = plain.strip_prefix("-0b")
                && let Some(i) = go_parse_int(&format!("-{binary}"), 2)
            {
                return ("int", Scalar::Int(i));
            }
            text()
        }
        _ => text(),
    }
}

/// Go's `strconv.ParseUint(s, base, 64)` for base 0 (prefix `0x`, `0o`,
/// `0b` or a leading `0` for octal) or an explicit base; `None` on a
/// syntax or range error. `s` has no underscores.
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    let (base, digits) = if base == 0 {
        let bytes = s.as_bytes();
        match bytes {
            [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'x') => (16, &s[2..]),
            [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'o') => (8, &s[2..]),
            [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'b') => (2, &s[2..]),
            [b'0', ..] => (8, &s[1..]),
            _ => (10, s),
        }
    } else {
        (base, s)
    };
    if digits.is_empty() {
        // "0" alone is octal zero; an empty number is a syntax error.
        return (s == "0" && base == 8).then_some(0);
    }
    let mut n: u64 = 0;
    for c in digits.chars() {
        let digit = c.to_digit(36)?;
        if digit >= base {
            return None;
        }
        n = n
            .checked_mul(u64::from(base))?
            .checked_add(u64::from(digit))?;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, base, 64)`: an optional sign, then
/// [`go_parse_uint`].
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let n = go_parse_uint(unsigned, base)?;
    if negative {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

/// go-yaml's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// Go's `strconv.ParseFloat(s, 64)` for text starting with `.`: digits
/// with `_` allowed between digits, an optional exponent; `None` when it
/// does not parse or overflows.
fn go_parse_float(s: &str) -> Option<f64> {
    let bytes = s.as_bytes();
    // Underscores only between digits.
    for (at, b) in bytes.iter().enumerate() {
        if *b == b'_' {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(at + 1);
            if !before.is_some_and(|b| b.is_ascii_digit()) || !after.is_some_and(u8::is_ascii_digit)
            {
                return None;
            }
        }
    }
    let plain = s.replace('_', "");
    if !is_yaml_float(&plain) {
        return None;
    }
    plain.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Whether `s` is one of go-yaml v2's timestamp forms (`2001-12-14`,
/// `2001-12-14T21:59:43.10Z`, `2001-12-14t21:59:43.10-05:00`,
/// `2001-12-14 21:59:43.10`), as Go's `time.Parse` accepts them.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let mut at = 5;
    // A 1 or 2 digit number at `at`, within `range`.
    let number = |at: &mut usize, range: std::ops::RangeInclusive<u32>| -> Option<u32> {
        let start = *at;
        while *at < b.len() && *at - start < 2 && b[*at].is_ascii_digit() {
            *at += 1;
        }
        let n: u32 = s.get(start..*at)?.parse().ok()?;
        range.contains(&n).then_some(n)
    };
    let expect = |at: &mut usize, c: &[u8]| -> Option<()> {
        (*at < b.len() && c.contains(&b[*at])).then(|| *at += 1)
    };
    let year: u32 = s[..4].parse().unwrap_or(0);
    let date = (|| {
        let month = number(&mut at, 1..=12)?;
        expect(&mut at, b"-")?;
        let day = number(&mut at, 1..=31)?;
        let leap =
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (day <= days).then_some(())
    })();
    if date.is_none() {
        return false;
    }
    if at == b.len() {
        return true;
    }
    let zoned = b[at] == b'T' || b[at] == b't';
    let time = (|| {
        expect(&mut at, b"Tt ")?;
        number(&mut at, 0..=23)?;
        expect(&mut at, b":")?;
        number(&mut at, 0..=59)?;
        expect(&mut at, b":")?;
        number(&mut at, 0..=59)?;
        if at + 1 < b.len() && (b[at] == b'.' || b[at] == b',') && b[at + 1].is_ascii_digit() {
            at += 1;
            while at < b.len() && b[at].is_ascii_digit() {
                at += 1;
            }
        }
        Some(())
    })();
    if time.is_none() {
        return false;
    }
    if !zoned {
        return at == b.len();
    }
    match &b[at..] {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2]
            if (*sign == b'+' || *sign == b'-')
                && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) =>
        {
            true
        }
        _ => false,
    }
}

/// The text of a `!!binary` scalar: base64 (line breaks ignored, padding
/// required) decoded, bytes that are not UTF-8 each replaced by U+FFFD as
/// Go's JSON encoder does.
fn binary(value: &str) -> Result<String, String> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let compact: String = value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let bytes = ENGINE
        .decode(compact)
        .map_err(|_| "!!binary value contains invalid base64 data".to_owned())?;
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        text.extend(std::iter::repeat_n('\u{fffd}', chunk.invalid().len()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    /// The value of the only document of `text`.
    fn read(text: &str) -> Value {
        let mut documents = documents(text, 1).expect("parses");
        assert_eq!(documents.len(), 1, "{documents:?}");
        documents.remove(0).value
    }

    /// The value of `value` written as the value of key `v`.
    fn scalar(value: &str) -> Value {
        read(&format!("v: {value}\n"))["v"].clone()
    }

    fn error(text: &str) -> YamlError {
        documents(text, 1).expect_err("refused")
    }

    #[test]
    fn yaml_1_1_booleans_resolve_in_every_spelling() {
        for word in "y Y yes Yes YES true True TRUE on On ON".split(' ') {
            assert_eq!(scalar(word), json!(true), "{word}");
        }
        for word in "n N no No NO false False FALSE off Off OFF".split(' ') {
            assert_eq!(scalar(word), json!(false), "{word}");
        }
        for word in ["tRUE", "yES", "oN", "yesterday", "'yes'", "\"on\""] {
            assert!(scalar(word).is_string(), "{word}");
        }
    }

    #[test]
    fn null_spellings_and_empty_values_are_null() {
        for word in ["~", "null", "Null", "NULL", ""] {
            assert_eq!(scalar(word), Value::Null, "{word:?}");
        }
        assert_eq!(scalar("nULL"), json!("nULL"));
        assert_eq!(scalar("\"\""), json!(""));
        assert_eq!(scalar("!!str"), json!(""));
    }

    #[test]
    fn ints_resolve_as_go_yaml_v2_reads_them() {
        let cases = [
            ("0755", json!(493)),
            ("-0755", json!(-493)),
            ("0x1F", json!(31)),
            ("+0x10", json!(16)),
            ("0b101", json!(5)),
            ("-0b11", json!(-3)),
            ("0o17", json!(15)),
            ("+12", json!(12)),
            ("1_000", json!(1000)),
            ("0x_1F", json!(31)),
            ("0888", json!(888)),
            ("08", json!(8)),
            ("00", json!(0)),
            ("-0", json!(0)),
            ("12a", json!("12a")),
            ("1.2.3", json!("1.2.3")),
            ("0x", json!("0x")),
        ];
        for (text, want) in cases {
            assert_eq!(scalar(text), want, "{text}");
        }
    }

    #[test]
    fn ints_beyond_int64_become_floats_as_kubectl_prints_them() {
        assert_eq!(scalar("9223372036854775807"), json!(i64::MAX));
        assert_eq!(scalar("-9223372036854775808"), json!(i64::MIN));
        // kubectl prints 9223372036854776000, which reads back as this u64.
        assert_eq!(
            scalar("9223372036854775808"),
            json!(9_223_372_036_854_776_000_u64)
        );
        assert_eq!(
            scalar("18446744073709551615"),
            json!(1.844_674_407_370_955_2e19)
        );
        assert_eq!(
            scalar("-9223372036854775809"),
            json!(-9.223_372_036_854_776e18)
        );
        assert_eq!(
            scalar("0xFFFFFFFFFFFFFFFFFF"),
            json!("0xFFFFFFFFFFFFFFFFFF")
        );
    }

    #[test]
    fn floats_resolve_and_integral_ones_become_ints() {
        let cases = [
            ("1e3", json!(1000)),
            ("1.0", json!(1)),
            ("1.", json!(1)),
            ("-0.0", json!(0)),
            (".5", json!(0.5)),
            ("-.5", json!(-0.5)),
            ("+.5", json!(0.5)),
            ("1.5e-3", json!(0.0015)),
            ("1e20", json!(100_000_000_000_000_000_000.0)),
            ("1e21", json!(1e21)),
            ("1_000.5", json!(1000.5)),
            (".5_0", json!(0.5)),
            ("3.14159265358979323846", json!(std::f64::consts::PI)),
            ("1e400", json!("1e400")),
            (".5e999", json!(".5e999")),
            (".", json!(".")),
            ("1e", json!("1e")),
            (".iNf", json!(".iNf")),
        ];
        for (text, want) in cases {
            assert_eq!(scalar(text), want, "{text}");
        }
    }

    #[test]
    fn infinity_and_nan_values_are_refused() {
        for text in [".inf", "-.Inf", "+.INF", ".nan", ".NaN"] {
            let err = error(&format!("a: 1\nv: {text}\n"));
            assert_eq!(err.line, 2, "{text}: {err}");
        }
    }

    #[test]
    fn timestamps_stay_their_text() {
        for text in [
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "2001-12-14 21:59:43.10 -5",
            "2002-02-30",
        ] {
            assert_eq!(scalar(text), json!(text));
        }
        assert_eq!(
            scalar("!!timestamp 2001-12-14T21:59:43.1Z"),
            json!("2001-12-14T21:59:43.1Z")
        );
        assert_eq!(scalar("!!timestamp 2000-02-29"), json!("2000-02-29"));
        assert!(documents("v: !!timestamp 2001-02-29\n", 1).is_err());
        assert!(documents("v: !!timestamp soon\n", 1).is_err());
    }

    #[test]
    fn explicit_tags_decide_the_type_or_refuse() {
        let cases = [
            ("!!str 12", json!("12")),
            ("!!str yes", json!("yes")),
            ("!!int \"0755\"", json!(493)),
            ("!<tag:yaml.org,2002:int> 0x10", json!(16)),
            ("!!float 1", json!(1)),
            ("!!float \"1e3\"", json!(1000)),
            ("!!bool \"yes\"", json!(true)),
            ("!!null \"\"", Value::Null),
            ("!!binary aGVsbG8=", json!("hello")),
            ("!!binary /w==", json!("\u{fffd}")),
            ("!custom 12", json!("12")),
            ("! 12", json!("12")),
            ("!!seq abc", json!("abc")),
        ];
        for (text, want) in cases {
            assert_eq!(scalar(text), want, "{text}");
        }
        assert_eq!(read("v: !!binary |\n  aGVs\n  bG8=\n")["v"], json!("hello"));
        for refused in [
            "!!int abc",
            "!!int 1.5",
            "!!null foo",
            "!!bool 1",
            "!!binary aGVsbG8",
        ] {
            let err = error(&format!("v: {refused}\n"));
            assert_eq!(err.line, 1, "{refused}: {err}");
        }
    }

    #[test]
    fn quoted_and_block_scalars_are_strings() {
        let value = read("a: '0755'\nb: \"yes\"\nc: |-\n  true\nd: >-\n  0x10\n");
        assert_eq!(
            value,
            json!({"a": "0755", "b": "yes", "c": "true", "d": "0x10"})
        );
    }

    #[test]
    fn keys_become_text_as_sigs_k8s_io_yaml_writes_them() {
        let value = read(
            "1: a\n0x10: b\n1.5: c\n1.0: d\n1e3: e\n0.00001: f\n123456789.0: g\n1e39: h\n\
             -0.0: i\n-.inf: j\n.nan: k\nyes: l\noff: m\n2001-12-14: date\n",
        );
        let want = json!({
            "1": "a", "16": "b", "1.5": "c", "1": "d", "1000": "e", "1e-05": "f",
            "1.2345679e+08": "g", ".inf": "h", "-0": "i", "-.inf": "j", ".nan": "k",
            "true": "l", "false": "m", "2001-12-14": "date"
        });
        assert_eq!(value, want);
    }

    #[test]
    fn null_uint64_and_collection_keys_are_refused() {
        for text in [
            "a: 1\n~: x\n",
            "a: 1\n18446744073709551615: x\n",
            "a: 1\n[a, b]: x\n",
        ] {
            let err = error(text);
            assert_eq!(err.line, 2, "{text:?}: {err}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        assert_eq!(read("a: 1\nb: 2\na: 3\n"), json!({"a": 3, "b": 2}));
    }

    #[test]
    fn anchors_and_aliases_expand_with_the_latest_definition() {
        let value =
            read("a: &x hello\nb: *x\nc: &x bye\nd: *x\n&k key: v\ne: *k\nf: &m {k: v}\ng: *m\n");
        assert_eq!(
            value,
            json!({"a": "hello", "b": "hello", "c": "bye", "d": "bye", "key": "v", "e": "key",
                   "f": {"k": "v"}, "g": {"k": "v"}})
        );
        assert_eq!(error("a: 1\nb: *missing\n").line, 2);
        assert_eq!(error("a: 1\nb: &loop [*loop]\n").line, 2);
    }

    #[test]
    fn an_anchor_bomb_is_refused_quickly() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut previous = 'a';
        for name in 'b'..='i' {
            let refs = vec![format!("*{previous}"); 9].join(",");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
            previous = name;
        }
        let started = Instant::now();
        let err = error(&text);
        assert!(err.message.contains("excessive aliasing"), "{err}");
        assert!((1..=9).contains(&err.line), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn moderate_aliasing_is_accepted() {
        // 100 aliases of a 20-entry list: below go-yaml's limit.
        let entries: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
        let mut text = format!("base: &b [{}]\nuses:\n", entries.join(", "));
        for _ in 0..100 {
            text.push_str("- *b\n");
        }
        let value = read(&text);
        assert_eq!(value["uses"].as_array().map(Vec::len), Some(100));
    }

    #[test]
    fn merge_keys_apply_in_order_with_earlier_maps_of_a_list_winning() {
        let value = read(
            "d: &d {a: 1, b: 1, r: eu}\no: &o {b: 2, c: 2}\n\
             list:\n  <<: [*d, *o]\n  r: us\n\
             order:\n  a: before\n  <<: *d\n  <<: *o\n  c: after\n\
             inline:\n  <<: {p: 1, q: 1}\n  q: 2\n\
             quoted:\n  \"<<\": {x: 1}\n",
        );
        assert_eq!(value["list"], json!({"a": 1, "b": 1, "c": 2, "r": "us"}));
        assert_eq!(
            value["order"],
            json!({"a": 1, "b": 2, "r": "eu", "c": "after"})
        );
        assert_eq!(value["inline"], json!({"p": 1, "q": 2}));
        assert_eq!(value["quoted"], json!({"<<": {"x": 1}}));
        assert_eq!(error("a: 1\nb:\n  <<: scalar\n").line, 3);
        assert_eq!(error("s: &s [{a: b}]\nb:\n  <<: *s\n").line, 3);
    }

    #[test]
    fn parts_are_cut_at_separator_lines_as_kubectl_cuts_them() {
        let text =
            "---\na: 1\n--- # comment\nb: 2\n---\n---\n\n---\n# only a comment\n---\n~\n---\n";
        let documents = documents(text, 1).expect("parses");
        let values: Vec<Value> = documents.iter().map(|d| d.value.clone()).collect();
        assert_eq!(
            values,
            [
                json!({"a": 1}),
                json!({"b": 2}),
                Value::Null,
                Value::Null,
                Value::Null
            ]
        );
        let lines: Vec<usize> = documents.iter().map(|d| d.line).collect();
        assert_eq!(lines, [2, 4, 7, 9, 11]);
    }

    #[test]
    fn a_separator_with_content_is_refused_with_its_line() {
        for separator in ["--- !!map", "---foo", "----", "--- {a: 1}"] {
            let err = error(&format!("a: 1\n{separator}\nb: 2\n"));
            assert_eq!(err.line, 2, "{separator}: {err}");
        }
    }

    #[test]
    fn a_document_end_marker_ends_the_part() {
        let documents =
            documents("a: 1\n...\nb: never read\nbroken: [\n---\nc: 3\n", 1).expect("parses");
        let values: Vec<&Value> = documents.iter().map(|d| &d.value).collect();
        assert_eq!(values, [&json!({"a": 1}), &json!({"c": 3})]);
        assert_eq!(error("a: 1\n---\n# c\n...\nb: 2\n").line, 4);
    }

    #[test]
    fn directives_are_refused_because_kubectl_strips_their_document_start() {
        assert!((1..=2).contains(&error("%YAML 1.1\n---\na: 1\n").line));
    }

    #[test]
    fn crlf_line_endings_read_as_lf() {
        let lf = "a: |\n  one\n  two\nb: \"x\n  y\"\nc: p\n  q\n---\nd: 0755\n";
        let crlf = lf.replace('\n', "\r\n");
        assert_eq!(documents(&crlf, 1), documents(lf, 1));
        assert_eq!(read("v: \"x\ry\"\n"), json!({"v": "x y"}));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(read("\u{feff}a: yes\n"), json!({"a": true}));
        assert_eq!(read("\u{feff}---\na: 1\n"), json!({"a": 1}));
    }

    #[test]
    fn block_scalars_at_the_end_of_a_file_end_with_a_line_break_as_in_kubectl() {
        // kubectl ends the last line with \n even when the file does not.
        let cases = [
            ("v: |\n  one\n  two", "one\ntwo\n"),
            ("v: |\n  one\n  two\n", "one\ntwo\n"),
            ("v: |-\n  one\n  two", "one\ntwo"),
            ("v: |+\n  one\n  two", "one\ntwo\n"),
            ("v: |+\n  one\n\n\n", "one\n\n\n"),
            ("v: >\n  one\n  two\n\n  three", "one two\nthree\n"),
            ("v: >-\n  one\n  two", "one two"),
            ("v: |2\n    six\n   seven", "  six\n seven\n"),
        ];
        for (text, want) in cases {
            assert_eq!(read(text)["v"], json!(want), "{text:?}");
            let crlf = text.replace('\n', "\r\n");
            assert_eq!(read(&crlf)["v"], json!(want), "{crlf:?}");
        }
    }

    #[test]
    fn go_yaml_leniencies_are_kept() {
        let value = read(
            "list: [\n  one, two,\n three]\nmap: {\na: b}\nq: \"first\n second\"\n\
             s: 'first\n\n second'\ntab:\tvalue\ntabs:\t\tvalue\n",
        );
        assert_eq!(
            value,
            json!({"list": ["one", "two", "three"], "map": {"a": "b"}, "q": "first second",
                   "s": "first\nsecond", "tab": "value", "tabs": "value"})
        );
    }

    #[test]
    fn the_yaml_1_2_slash_escape_is_refused() {
        assert_eq!(error("a: 1\nb: \"a\\/b\"\n").line, 2);
        assert_eq!(
            read("a: \"a\\\\/b\"\nb: 'a\\/b'\n"),
            json!({"a": "a\\/b", "b": "a\\/b"})
        );
    }

    #[test]
    fn control_characters_are_refused_with_their_line() {
        assert_eq!(error("a: 1\nb: \"bell\u{7}\"\n").line, 2);
        assert_eq!(error("a: 1\n# \u{1b}\n").line, 2);
        assert_eq!(read("a: \"\\e\\t\\0\"\n"), json!({"a": "\u{1b}\t\u{0}"}));
    }

    #[test]
    fn syntax_and_decoding_errors_carry_the_line_in_the_file() {
        let text = "a: 1\n---\nb: 2\n---\nc: [x\n";
        assert!((5..=6).contains(&error(text).line), "{}", error(text));
        let text = "a: 1\n---\nb: 2\nc: !!int nope\n";
        assert_eq!(error(text).line, 4);
        let err = documents("x: [\n", 10).expect_err("refused");
        assert!(err.line >= 10, "{err}");
    }

    #[test]
    fn documents_know_their_lines_and_the_lines_of_list_items() {
        let text = "# header\n\napiVersion: v1\nkind: List\nitems:\n- kind: A\n  n: 1\n-   kind: B\n- *x\n";
        let err = error(text);
        assert_eq!(err.line, 9);
        let text =
            "# header\n\napiVersion: v1\nkind: List\nitems:\n- kind: A\n  n: 1\n-   kind: B\n";
        let document = documents(text, 1).expect("parses").remove(0);
        assert_eq!(document.line, 3);
        assert_eq!(document.item_lines, [6, 8]);
    }

    #[test]
    fn nesting_is_limited_without_overflowing_the_stack() {
        let nested = |depth: usize, leaf: &str| format!("{}{leaf}\n", "- ".repeat(depth));
        assert!(
            error(&nested(MAX_DEPTH + 10, "1"))
                .message
                .contains("nesting")
        );
        assert!(documents(&nested(MAX_DEPTH - 1, "1"), 1).is_ok());
        // Aliases count too.
        let text = format!("a: &a\n{}b:\n{}", nested(150, "1"), nested(150, "*a"));
        assert!(error(&text).message.contains("nesting"));
        // saphyr allows fewer nested flow collections than kubectl.
        let flow = format!("{}1{}", "[".repeat(260), "]".repeat(260));
        assert!(documents(&flow, 1).is_err());
    }

    #[test]
    fn json_numbers_are_what_kubectl_reads_back() {
        assert_eq!(json_number(1.0), json!(1));
        assert_eq!(json_number(-0.0), json!(0));
        assert_eq!(json_number(0.25), json!(0.25));
        assert_eq!(json_number(1e21), json!(1e21));
        assert_eq!(
            json_number(4_611_686_018_427_387_904.0),
            json!(4_611_686_018_427_388_000_i64)
        );
    }

    #[test]
    fn float_keys_print_as_go_formats_float32() {
        let cases = [
            (1000.0, "1000"),
            (123_456_789.0, "1.2345679e+08"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.000_01, "1e-05"),
            (1.5, "1.5"),
            (-2.5e-7, "-2.5e-07"),
            (1e6, "1e+06"),
            (999_999.0, "999999"),
        ];
        for (float, want) in cases {
            assert_eq!(go_float_key(float), want, "{float}");
        }
    }
}
