//! Spec errors: each names the file, the line and column, and the field path.

use std::fmt;

/// One problem found in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file, as given to the loader.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// The field path, e.g. `frameworks.keras.args[3].from` (empty for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one or more spec files, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.0 {
            writeln!(f, "{error}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{} in spec", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for SpecErrors {}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` when a candidate is close, else nothing; the candidate is shown as
/// names in errors are (hidden characters and backticks as `\u{..}`, at most 40 characters).
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(name, candidates)
        .map(|c| format!(" (did you mean `{}`?)", crate::names::shown(c)))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["embed_dim", "num_heads", "batch_first"];
        assert_eq!(suggest("batchfirst", names), Some("batch_first"));
        assert_eq!(suggest("embed_dims", names), Some("embed_dim"));
        assert_eq!(suggest("colour", names), None);
    }

    #[test]
    fn a_suggestion_shows_hidden_characters_escaped() {
        assert_eq!(
            did_you_mean("embed_dim", ["embed_dim\n"]),
            " (did you mean `embed_dim\\u{a}`?)"
        );
        assert_eq!(
            did_you_mean("embed_dim", ["embed_dim"]),
            " (did you mean `embed_dim`?)"
        );
    }
}
