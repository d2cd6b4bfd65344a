//! Where each node of a YAML document sits: field path → line and column.
//!
//! serde reports errors by field path; this index turns such a path back into a position in the
//! file. Paths read like `frameworks.keras.args[3].from`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Positions of every value and every mapping key of one document.
#[derive(Debug, Default)]
pub struct Locator {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Locator {
    /// Indexes `text`; a document the parser rejects yields an empty index.
    pub fn new(text: &str) -> Locator {
        let mut builder = Builder::default();
        if Parser::new_from_str(text)
            .load(&mut builder, false)
            .is_err()
        {
            return Locator::default();
        }
        Locator {
            values: builder.values,
            keys: builder.keys,
        }
    }

    /// The position of the value at `path`, else of its key, else of the nearest ancestor.
    pub fn value(&self, path: &str) -> Position {
        self.find(path, false)
    }

    /// The position of the key at `path` (for unknown fields), else as [`Locator::value`].
    pub fn key(&self, path: &str) -> Position {
        self.find(path, true)
    }

    fn find(&self, path: &str, key_first: bool) -> Position {
        let mut current = path;
        loop {
            let (first, second) = if key_first {
                (&self.keys, &self.values)
            } else {
                (&self.values, &self.keys)
            };
            if let Some(pos) = first.get(current).or_else(|| second.get(current)) {
                return *pos;
            }
            match parent(current) {
                Some(up) => current = up,
                None => {
                    return self
                        .values
                        .get("")
                        .copied()
                        .unwrap_or(Position { line: 1, column: 1 })
                }
            }
        }
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    })
}

/// The path of a mapping entry `key` under `path`.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Builder {
    /// If the next scalar is a mapping key, records it and returns true.
    fn take_key(&mut self, text: &str, pos: Position) -> bool {
        if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
            if key.is_none() {
                self.keys.insert(join_key(path, text), pos);
                *key = Some(text.to_string());
                return true;
            }
        }
        false
    }

    /// The path of the value about to start, and moves the parent past it.
    fn next_value_path(&mut self) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key }) => join_key(path, &key.take().unwrap_or_default()),
            Some(Frame::Seq { path, index }) => {
                *index += 1;
                format!("{path}[{}]", *index - 1)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::Scalar(text, ..) if self.take_key(&text, pos) => {}
            Event::Scalar(..) | Event::Alias(_) => {
                let path = self.next_value_path();
                self.values.insert(path, pos);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_value_path();
                self.values.insert(path.clone(), pos);
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, index: 0 }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_keys() {
        let text = "op: X\nsignature:\n  - name: a\n    type: int\n  - {name: b, type: bool}\n";
        let loc = Locator::new(text);
        assert_eq!(loc.value("op"), Position { line: 1, column: 5 });
        assert_eq!(
            loc.key("signature[0].type"),
            Position { line: 4, column: 5 }
        );
        assert_eq!(
            loc.value("signature[1].type"),
            Position {
                line: 5,
                column: 21
            }
        );
        assert_eq!(
            loc.value("signature[1].missing"),
            Position { line: 5, column: 5 }
        );
        assert_eq!(loc.value("signature[7]"), Position { line: 3, column: 3 });
    }
}
