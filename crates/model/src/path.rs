//! Paths to fields inside an object, as diffs and policies name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// A map field: `spec`, `replicas`, a label name.
    Field(String),
    /// A list element chosen by its merge key(s): `containers[name=web]`.
    Key(Vec<(String, String)>),
    /// A list element by position, for lists without merge keys.
    Index(usize),
}

/// A path to a field, written like `spec.template.spec.containers[name=web].image`.
///
/// Map keys that are not plain words are quoted: `metadata.labels["app.kubernetes.io/name"]`.
/// Lists of objects are addressed by merge key, as server-side apply does, so a
/// path stays stable when list elements move.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The empty path (the whole object).
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a map field.
    pub fn field(&self, name: impl Into<String>) -> Self {
        self.with(Segment::Field(name.into()))
    }

    /// This path extended by a list element chosen by merge keys.
    pub fn key(&self, keys: Vec<(String, String)>) -> Self {
        self.with(Segment::Key(keys))
    }

    /// This path extended by a list position.
    pub fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        Self(segments)
    }

    /// Whether `self` equals `other` or lies inside it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// Parses a JSON pointer (`/spec/replicas`, `/metadata/labels/app.kubernetes.io~1name`)
    /// into a path of map fields; numeric segments become list positions.
    pub fn from_json_pointer(pointer: &str) -> Result<Self, PathError> {
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(PathError::new(pointer, "a JSON pointer starts with `/`"));
        };
        let segments = rest
            .split('/')
            .map(|raw| {
                let name = raw.replace("~1", "/").replace("~0", "~");
                match name.parse::<usize>() {
                    Ok(index) => Segment::Index(index),
                    Err(_) => Segment::Field(name),
                }
            })
            .collect();
        Ok(Self(segments))
    }
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn write_token(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if is_word(s) {
        f.write_str(s)
    } else {
        write!(f, "{s:?}")
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if is_word(name) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(name)?;
                }
                Segment::Field(name) => write!(f, "[{name:?}]")?,
                Segment::Key(keys) => {
                    f.write_str("[")?;
                    for (j, (k, v)) in keys.iter().enumerate() {
                        if j > 0 {
                            f.write_str(",")?;
                        }
                        write_token(f, k)?;
                        f.write_str("=")?;
                        write_token(f, v)?;
                    }
                    f.write_str("]")?;
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A string that is not a field path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("field path `{path}` is malformed: {reason}")]
pub struct PathError {
    path: String,
    reason: &'static str,
}

impl PathError {
    fn new(path: &str, reason: &'static str) -> Self {
        Self {
            path: path.to_owned(),
            reason,
        }
    }
}

/// A small cursor over the characters of a path being parsed.
struct Parser<'a> {
    text: &'a str,
    rest: &'a str,
}

impl<'a> Parser<'a> {
    fn fail(&self, reason: &'static str) -> PathError {
        PathError::new(self.text, reason)
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// A bare word or a quoted string.
    fn token(&mut self) -> Result<String, PathError> {
        if self.rest.starts_with('"') {
            let mut escaped = false;
            for (i, c) in self.rest.char_indices().skip(1) {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        let (quoted, rest) = self.rest.split_at(i + 1);
                        self.rest = rest;
                        return serde_json::from_str(quoted)
                            .map_err(|_| self.fail("bad escape in a quoted name"));
                    }
                    _ => escaped = false,
                }
            }
            return Err(self.fail("unterminated quoted name"));
        }
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return Err(self.fail("expected a name"));
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(word.to_owned())
    }

    /// The inside of `[...]` after the opening bracket.
    fn bracket(&mut self) -> Result<Segment, PathError> {
        let first = self.token()?;
        let segment = if self.eat('=') {
            let mut keys = vec![(first, self.token()?)];
            while self.eat(',') {
                let k = self.token()?;
                if !self.eat('=') {
                    return Err(self.fail("expected `=` in a merge-key selector"));
                }
                keys.push((k, self.token()?));
            }
            Segment::Key(keys)
        } else if first.bytes().all(|b| b.is_ascii_digit()) {
            first
                .parse()
                .map(Segment::Index)
                .map_err(|_| self.fail("list index out of range"))?
        } else {
            Segment::Field(first)
        };
        if !self.eat(']') {
            return Err(self.fail("expected `]`"));
        }
        Ok(segment)
    }
}

impl FromStr for FieldPath {
    type Err = PathError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut p = Parser { text, rest: text };
        let mut segments = Vec::new();
        while !p.rest.is_empty() {
            if p.eat('[') {
                segments.push(p.bracket()?);
            } else {
                if !segments.is_empty() && !p.eat('.') {
                    return Err(p.fail("expected `.` or `[` between segments"));
                }
                segments.push(Segment::Field(p.token()?));
            }
        }
        Ok(Self(segments))
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_image() -> FieldPath {
        FieldPath::root()
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers")
            .key(vec![("name".into(), "web".into())])
            .field("image")
    }

    #[test]
    fn paths_print_like_kubectl_explain_with_merge_keys() {
        assert_eq!(
            container_image().to_string(),
            "spec.template.spec.containers[name=web].image"
        );
        let label = FieldPath::root()
            .field("metadata")
            .field("labels")
            .field("app.kubernetes.io/name");
        assert_eq!(
            label.to_string(),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        let port = FieldPath::root().field("ports").key(vec![
            ("containerPort".into(), "80".into()),
            ("protocol".into(), "TCP".into()),
        ]);
        assert_eq!(port.to_string(), "ports[containerPort=80,protocol=TCP]");
        assert_eq!(
            FieldPath::root().field("args").index(2).to_string(),
            "args[2]"
        );
    }

    #[test]
    fn paths_round_trip_through_text_and_json() {
        for path in [
            "spec.template.spec.containers[name=web].image",
            r#"metadata.labels["app.kubernetes.io/name"]"#,
            r#"data["a \"quoted\" key"]"#,
            "ports[containerPort=80,protocol=TCP]",
            "args[2]",
            "",
        ] {
            let parsed: FieldPath = path.parse().expect(path);
            assert_eq!(parsed.to_string(), path);
            let json = serde_json::to_string(&parsed).expect("serializes");
            let back: FieldPath = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, parsed);
        }
    }

    #[test]
    fn malformed_paths_are_rejected_with_a_reason() {
        for bad in ["spec..x", "a[", "a[name=]", r#"a["open]"#, "a]b"] {
            let err = bad.parse::<FieldPath>().expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn json_pointers_become_paths() {
        let p = FieldPath::from_json_pointer("/metadata/labels/app.kubernetes.io~1name")
            .expect("pointer");
        assert_eq!(
            p.to_string(),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        assert!(FieldPath::from_json_pointer("spec").is_err());
        let inside = container_image();
        let prefix = FieldPath::from_json_pointer("/spec/template").expect("pointer");
        assert!(inside.starts_with(&prefix));
        assert!(!prefix.starts_with(&inside));
    }
}
