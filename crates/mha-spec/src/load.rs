//! Loading: YAML text → [`Spec`], with every structural and semantic error reported at once.
//!
//! serde stops at the first error, so the loader deserializes, records the error, prunes the
//! offending list item or mapping entry from the document, and tries again. Pruned items are
//! remembered so that their positions stay right and checks that refer to them stay quiet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_path_to_error::Segment;
use serde_yaml::Value;

use crate::error::{SpecError, SpecErrors};
use crate::locate::{join_key, Locator};
use crate::model::Spec;
use crate::validate;

/// The most errors reported for one file before the loader gives up on it.
const MAX_ERRORS: usize = 64;

/// Reads and validates the spec file at `path`.
pub fn load_file(path: &Path) -> Result<Spec, SpecErrors> {
    let file = path.display().to_string();
    let error = |message: String| {
        SpecErrors(vec![SpecError {
            file: file.clone(),
            line: 1,
            column: 1,
            path: String::new(),
            message,
        }])
    };
    // Read at most one byte past the limit, so that no file (or device) is read without end.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MAX_SPEC_BYTES as u64 + 1),
                &mut bytes,
            )
        })
        .map_err(|e| error(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| error("the file is not UTF-8 text".into()))?;
    load_str(&file, &text)
}

/// Every `*.yaml` / `*.yml` spec in `dir`, sorted by file name, with all their errors at once.
pub fn load_dir(dir: &Path) -> Result<Vec<Spec>, SpecErrors> {
    let dir_error = |message: String| {
        SpecErrors(vec![SpecError {
            file: dir.display().to_string(),
            line: 1,
            column: 1,
            path: String::new(),
            message,
        }])
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| dir_error(format!("cannot read spec directory: {e}")))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(dir_error("no *.yaml spec in this directory".into()));
    }
    let (mut specs, mut errors) = (Vec::new(), Vec::new());
    for file in files {
        match load_file(&file) {
            Ok(spec) => specs.push(spec),
            Err(SpecErrors(e)) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        check_unique_ops(&specs).map_err(dir_error)?;
        Ok(specs)
    } else {
        Err(SpecErrors(errors))
    }
}

fn check_unique_ops(specs: &[Spec]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for spec in specs {
        if !seen.insert(&spec.op) {
            return Err(format!("two specs define the op `{}`", spec.op));
        }
    }
    Ok(())
}

/// The largest spec file, in bytes (the bundled one is about 20 KB).
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// The deepest nesting of YAML mappings and sequences in a spec (the bundled one needs 6).
pub const MAX_YAML_DEPTH: usize = 24;

/// Refuses, before the YAML is parsed into values, a document too large or nested too deep:
/// one streaming pass over its events, stopped at the first collection past the limit.
fn check_bounds(file: &str, text: &str) -> Result<(), SpecErrors> {
    let error = |line: usize, column: usize, message: String| {
        SpecErrors(vec![SpecError {
            file: file.into(),
            line,
            column,
            path: String::new(),
            message,
        }])
    };
    if text.len() > MAX_SPEC_BYTES {
        return Err(error(
            1,
            1,
            format!(
                "the spec is {} bytes long; at most {MAX_SPEC_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    // Flow collections first, by a plain count of brackets (quotes and comments included, so
    // nothing can hide one): a YAML scanner looks ahead to the end of a flow collection that
    // may be a key, which takes quadratic time on deep nesting.
    let mut brackets = 0usize;
    for (line_index, line) in text.lines().enumerate() {
        for (column, c) in line.chars().enumerate() {
            match c {
                '[' | '{' => {
                    brackets += 1;
                    if brackets > MAX_YAML_DEPTH {
                        return Err(error(
                            line_index + 1,
                            column + 1,
                            format!(
                                "brackets nest deeper than {MAX_YAML_DEPTH} levels (flow collections, or brackets in text)"
                            ),
                        ));
                    }
                }
                ']' | '}' => brackets = brackets.saturating_sub(1),
                _ => {}
            }
        }
    }
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        // A syntax error is left to the full parse below, which explains it.
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(());
        };
        match event {
            yaml_rust2::Event::StreamEnd => return Ok(()),
            yaml_rust2::Event::MappingStart(..) | yaml_rust2::Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Err(error(
                        mark.line(),
                        mark.col() + 1,
                        format!("the YAML nests deeper than {MAX_YAML_DEPTH} levels"),
                    ));
                }
            }
            yaml_rust2::Event::MappingEnd | yaml_rust2::Event::SequenceEnd => {
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
}

/// Parses and validates spec text; `file` names it in errors.
pub fn load_str(file: &str, text: &str) -> Result<Spec, SpecErrors> {
    check_bounds(file, text)?;
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        SpecErrors(vec![SpecError {
            file: file.into(),
            line,
            column,
            path: String::new(),
            message: strip_location(&e.to_string()),
        }])
    })?;
    let locator = Locator::new(text);
    let mut pruned = Pruned::default();
    let mut errors = Vec::new();
    let error = |pruned: &Pruned, path: &str, message: String, at_key: bool| {
        let path = pruned.original(path);
        let pos = if at_key {
            locator.key(&path)
        } else {
            locator.value(&path)
        };
        SpecError {
            file: file.into(),
            line: pos.line,
            column: pos.column,
            path,
            message,
        }
    };

    let (problems, dropped) = resolve_extends(&mut value);
    for (path, message) in problems {
        errors.push(error(&pruned, &path, message, false));
    }
    pruned.names.extend(dropped);

    let spec = loop {
        match deserialize(value.clone()) {
            Ok(spec) => break Some(spec),
            Err((segments, message)) => {
                let unknown_field = message.starts_with("unknown field");
                // A misspelt field: report it with the likely name, and read it under that name.
                if unknown_field {
                    if let Some(fixed) = rename_misspelt_field(&mut value, &segments, &message) {
                        errors.push(error(&pruned, &render_path(&segments), fixed, true));
                        if errors.len() >= MAX_ERRORS {
                            break None;
                        }
                        continue;
                    }
                }
                errors.push(error(
                    &pruned,
                    &render_path(&segments),
                    message,
                    unknown_field,
                ));
                if errors.len() >= MAX_ERRORS || !pruned.prune(&mut value, &segments, unknown_field)
                {
                    break None;
                }
            }
        }
    };
    if let Some(spec) = &spec {
        for (path, message) in validate::validate(spec, &pruned.names) {
            errors.push(error(&pruned, &path, message, false));
        }
    }
    match spec {
        Some(spec) if errors.is_empty() => Ok(spec),
        _ => Err(SpecErrors(errors)),
    }
}

/// The most YAML nodes the framework entries may hold once `extends` has copied base entries
/// into the entries that extend them (the bundled specs hold about 600).
pub const MAX_EXTENDED_NODES: usize = 20_000;

/// Merges each framework entry that says `extends: BASE` over a copy of the entry `BASE`:
/// mappings merge key by key, recursively (so `support: {feature: {note: ...}}` changes one
/// note); any other value of the extending entry replaces the base's. The `extends` key stays,
/// so that the model and the docs know where an entry came from. A base must be written out
/// in full (it may not extend another entry). Returns the problems as (field path, message),
/// and the keys of the entries dropped because their `extends` is wrong (an entry without its
/// base would only add errors about the fields it meant to inherit).
fn resolve_extends(root: &mut Value) -> (Vec<(String, String)>, Vec<String>) {
    let mut problems = Vec::new();
    let mut dropped = Vec::new();
    let Some(Value::Mapping(frameworks)) = root.get_mut("frameworks") else {
        return (problems, dropped);
    };
    let keys: Vec<String> = frameworks
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let base_of = |entry: &Value| entry.get("extends").map(|b| b.as_str().map(str::to_string));
    let mut total = 0usize;
    for key in &keys {
        let Some(Some(base)) = frameworks.get(key.as_str()).and_then(base_of) else {
            if let Some(None) = frameworks.get(key.as_str()).and_then(base_of) {
                problems.push((
                    format!("frameworks.{key}.extends"),
                    "`extends` names another framework key".to_string(),
                ));
                frameworks.remove(key.as_str());
                dropped.push(key.clone());
            }
            continue;
        };
        let path = format!("frameworks.{key}.extends");
        let problem = match frameworks.get(base.as_str()) {
            _ if base == *key => Some("an entry cannot extend itself".to_string()),
            None => Some(format!(
                "unknown framework `{base}`{}",
                crate::error::did_you_mean(&base, keys.iter().map(String::as_str))
            )),
            Some(b) if b.get("extends").is_some() => Some(format!(
                "`{base}` extends another entry itself; extend an entry written out in full"
            )),
            Some(b) if !b.is_mapping() => Some(format!("`{base}` is not a mapping")),
            Some(_) => None,
        };
        if let Some(message) = problem {
            problems.push((path, message));
            frameworks.remove(key.as_str());
            dropped.push(key.clone());
            continue;
        }
        let mut merged = frameworks[base.as_str()].clone();
        total += node_count(&merged, MAX_EXTENDED_NODES + 1);
        if total > MAX_EXTENDED_NODES {
            problems.push((
                path,
                format!("the extended framework entries hold more than {MAX_EXTENDED_NODES} nodes"),
            ));
            return (problems, dropped);
        }
        let Some(entry) = frameworks.get(key.as_str()).cloned() else {
            continue;
        };
        merge(&mut merged, entry);
        frameworks.insert(Value::String(key.clone()), merged);
    }
    (problems, dropped)
}

/// Merges `over` into `base`: mappings key by key, recursively; anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// The number of nodes in `value`, counted up to `limit`.
fn node_count(value: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        if count >= limit {
            return count;
        }
        match v {
            Value::Sequence(items) => stack.extend(items),
            Value::Mapping(map) => {
                for (k, v) in map {
                    stack.push(k);
                    stack.push(v);
                }
            }
            Value::Tagged(t) => stack.push(&t.value),
            _ => {}
        }
    }
    count
}

/// Deserializes a spec, enums written as `{variant: value}` maps; an error comes with its path.
fn deserialize(value: Value) -> Result<Spec, (Vec<Segment>, String)> {
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    serde_yaml::with::singleton_map_recursive::deserialize(tracked).map_err(
        |e: serde_yaml::Error| {
            (
                track.path().iter().cloned().collect(),
                strip_location(&e.to_string()),
            )
        },
    )
}

/// serde_yaml appends ` at line L column C` to some messages; positions are reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message.get(..i).unwrap_or(message).to_string(),
        None => message.to_string(),
    }
}

fn render_path(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } => path = join_key(&path, key),
            Segment::Enum { variant } => path = join_key(&path, variant),
            Segment::Unknown => path = join_key(&path, "?"),
        }
    }
    path
}

/// What the loader removed from the document to get past errors.
#[derive(Default)]
struct Pruned {
    /// Per sequence path (in original coordinates), the original indices removed.
    removed: BTreeMap<String, BTreeSet<usize>>,
    /// Names (`name`, `native`, `drop` or mapping key) of removed items.
    names: BTreeSet<String>,
}

impl Pruned {
    /// Maps a path in the pruned document back to the original document.
    fn original(&self, path: &str) -> String {
        let mut out = String::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').unwrap_or(after.len());
                let mut index: usize = after[..end].parse().unwrap_or(0);
                if let Some(removed) = self.removed.get(&out) {
                    for r in removed {
                        if *r <= index {
                            index += 1;
                        }
                    }
                }
                out.push_str(&format!("[{index}]"));
                rest = after.get(end + 1..).unwrap_or("");
            } else {
                let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
                let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
                out = join_key(&out, &rest_trimmed[..end]);
                rest = &rest_trimmed[end..];
            }
        }
        out
    }

    /// Removes the item the error is in; false when nothing removable remains.
    fn prune(&mut self, root: &mut Value, segments: &[Segment], unknown_field: bool) -> bool {
        // An unknown field: drop that key. Otherwise drop the innermost list item or user-keyed entry.
        let cut = if unknown_field {
            segments.len().checked_sub(1)
        } else {
            (0..segments.len()).rev().find(|&i| match &segments[i] {
                Segment::Seq { .. } => true,
                Segment::Map { .. } => i > 0 && is_user_keyed(&segments[..i]),
                _ => false,
            })
        };
        let Some(cut) = cut else { return false };
        let Some(parent) = walk_mut(root, &segments[..cut]) else {
            return false;
        };
        let parent_path = self.original(&render_path(&segments[..cut]));
        match (&segments[cut], parent) {
            (Segment::Seq { index }, Value::Sequence(items)) if *index < items.len() => {
                let item = items.remove(*index);
                self.remember(&item);
                let original =
                    self.original(&format!("{}[{index}]", render_path(&segments[..cut])));
                let original_index = original
                    .rsplit('[')
                    .next()
                    .and_then(|s| s.trim_end_matches(']').parse().ok());
                self.removed
                    .entry(parent_path)
                    .or_default()
                    .insert(original_index.unwrap_or(*index));
                true
            }
            (Segment::Map { key }, Value::Mapping(map)) => {
                if !unknown_field {
                    self.names.insert(key.clone());
                }
                map.remove(key.as_str()).is_some()
            }
            _ => false,
        }
    }

    fn remember(&mut self, item: &Value) {
        for field in ["name", "native", "drop"] {
            if let Some(Value::String(name)) = item.get(field) {
                self.names.insert(name.clone());
            }
        }
    }
}

/// Mappings whose keys the spec's author chooses (frameworks, support tables).
fn is_user_keyed(parent: &[Segment]) -> bool {
    matches!(parent, [Segment::Map { key }] if key == "frameworks")
        || matches!(parent.last(), Some(Segment::Map { key }) if key == "support")
}

fn walk_mut<'v>(mut value: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    for segment in segments {
        value = match segment {
            Segment::Seq { index } => value.get_mut(*index)?,
            Segment::Map { key } => value.get_mut(key.as_str())?,
            _ => return None,
        };
    }
    Some(value)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" where `x` is a likely typo of an
/// expected field the mapping lacks: renames the key in `root` and returns the message to report.
fn rename_misspelt_field(root: &mut Value, segments: &[Segment], message: &str) -> Option<String> {
    let names: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (&unknown, expected) = names.split_first()?;
    let likely = crate::error::suggest(unknown, expected.iter().copied())?;
    let (_, parent_segments) = segments.split_last()?;
    let Value::Mapping(map) = walk_mut(root, parent_segments)? else {
        return None;
    };
    if map.contains_key(likely) {
        return None;
    }
    let field = map.remove(unknown)?;
    map.insert(Value::String(likely.to_string()), field);
    Some(format!(
        "unknown field `{unknown}` (did you mean `{likely}`?)"
    ))
}
