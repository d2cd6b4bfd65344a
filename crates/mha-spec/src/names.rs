//! What a name or a line of text from a spec may hold.
//!
//! Spec text reaches Python, Rust, reStructuredText, HTML and file paths. The generators escape
//! every value for its context; these rules are the first line: a name that is not an identifier
//! in every target language, or text with line breaks or invisible characters, is an error at
//! load, naming its field.

/// Python's keywords (hard and the builtin constants), which no generated name may be.
pub const PYTHON_KEYWORDS: &[&str] = &[
    "False",
    "None",
    "True",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "class",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "except",
    "finally",
    "for",
    "from",
    "global",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "yield",
    "__debug__",
    "NotImplemented",
    "Ellipsis",
    "__builtins__",
    "__name__",
    "__file__",
    "__all__",
];

/// Python builtins the generated glue calls: a parameter of that name would shadow them.
pub const PYTHON_BUILTINS: &[&str] = &[
    "abs",
    "all",
    "any",
    "bool",
    "bytes",
    "callable",
    "dict",
    "divmod",
    "enumerate",
    "float",
    "frozenset",
    "getattr",
    "hasattr",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "object",
    "print",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "setattr",
    "slice",
    "sorted",
    "str",
    "sum",
    "super",
    "tuple",
    "type",
    "vars",
    "zip",
];

/// Rust's strict and reserved keywords (2015 to 2024 editions).
pub const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen", "union",
];

/// The longest name a spec may give anything.
pub const MAX_NAME_LEN: usize = 64;

/// The longest line of text (a doc, a note, a reason).
pub const MAX_TEXT_LEN: usize = 2000;

/// Why `name` cannot be a parameter, derived value, argument, feature or framework key: it must
/// be a lowercase ASCII identifier (`[a-z][a-z0-9_]*`) that is no Python or Rust keyword and
/// shadows no Python builtin. `None` when it is fine.
pub fn check_snake_name(name: &str) -> Option<String> {
    if !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Some(format!(
            "`{}` is not a lowercase identifier ([a-z][a-z0-9_]*)",
            shown(name)
        ));
    }
    check_length(name).or_else(|| check_reserved(name))
}

/// Why `name` cannot be an op name: it must be a CamelCase ASCII identifier (`[A-Z][A-Za-z0-9]*`),
/// which is also a safe file stem.
pub fn check_op_name(name: &str) -> Option<String> {
    if !name.starts_with(|c: char| c.is_ascii_uppercase())
        || !name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Some(format!(
            "`{}` is not a CamelCase identifier ([A-Z][A-Za-z0-9]*); the op name becomes type, module and file names",
            shown(name)
        ));
    }
    check_length(name).or_else(|| check_reserved(name))
}

/// Why `name` cannot be a Python keyword argument: an ASCII identifier that is no keyword.
pub fn check_identifier(name: &str) -> Option<String> {
    if !is_ascii_identifier(name) {
        return Some(format!(
            "`{}` is not an ASCII identifier ([A-Za-z_][A-Za-z0-9_]*)",
            shown(name)
        ));
    }
    check_length(name).or_else(|| {
        PYTHON_KEYWORDS
            .contains(&name)
            .then(|| format!("`{name}` is a Python keyword"))
    })
}

/// Why `path` cannot be a dotted Python path (`torch.nn.MultiheadAttention`); with
/// `numeric_parts`, parts after the first may also be numbers (`layers.0.weight`, state_dict names).
pub fn check_dotted(path: &str, numeric_parts: bool) -> Option<String> {
    if path.len() > 4 * MAX_NAME_LEN {
        return Some(format!(
            "is {} bytes long, more than {}",
            path.len(),
            4 * MAX_NAME_LEN
        ));
    }
    for (i, part) in path.split('.').enumerate() {
        let numeric =
            numeric_parts && i > 0 && !part.is_empty() && part.chars().all(|c| c.is_ascii_digit());
        if !numeric && !is_ascii_identifier(part) {
            return Some(format!(
                "`{}` is not a dotted path of ASCII identifiers",
                shown(path)
            ));
        }
        if PYTHON_KEYWORDS.contains(&part) {
            return Some(format!("`{path}`: `{part}` is a Python keyword"));
        }
    }
    None
}

/// Why `url` cannot be a documentation link: `http(s)://` and URL characters only (no spaces,
/// quotes, angle brackets, backslashes or backticks).
pub fn check_url(url: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&*+,;=%".contains(c);
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Some(format!("`{}` is not an http(s) URL", shown(url)));
    }
    if let Some(c) = url.chars().find(|c| !allowed(*c)) {
        return Some(format!(
            "the URL holds {}, which a URL must percent-encode",
            describe(c)
        ));
    }
    (url.len() > MAX_TEXT_LEN).then(|| format!("is longer than {MAX_TEXT_LEN} bytes"))
}

/// Why `text` cannot be one line of documentation: no line breaks, control or invisible
/// formatting characters, at most [`MAX_TEXT_LEN`] bytes.
pub fn check_line(text: &str) -> Option<String> {
    if let Some(c) = text.chars().find(|c| is_hidden(*c)) {
        return Some(format!(
            "holds {}; spec text is one line of visible characters",
            describe(c)
        ));
    }
    (text.len() > MAX_TEXT_LEN)
        .then(|| format!("is {} bytes long, more than {MAX_TEXT_LEN}", text.len()))
}

/// Line breaks, control characters and invisible format characters (Unicode Cc, Cf, Zl, Zp):
/// characters that end lines in some target language, hide text, or reorder it on screen.
pub fn is_hidden(c: char) -> bool {
    let u = u32::from(c);
    c.is_control()
        || matches!(
            u,
            0xAD | 0x600..=0x605
                | 0x61C
                | 0x6DD
                | 0x70F
                | 0x890..=0x891
                | 0x8E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

fn is_ascii_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_length(name: &str) -> Option<String> {
    (name.len() > MAX_NAME_LEN).then(|| {
        format!(
            "`{}...` is {} bytes long, more than {MAX_NAME_LEN}",
            name.chars().take(16).collect::<String>(),
            name.len()
        )
    })
}

fn check_reserved(name: &str) -> Option<String> {
    if PYTHON_KEYWORDS.contains(&name) {
        Some(format!("`{name}` is a Python keyword"))
    } else if RUST_KEYWORDS.contains(&name) {
        Some(format!("`{name}` is a Rust keyword"))
    } else if PYTHON_BUILTINS.contains(&name) {
        Some(format!(
            "`{name}` is a Python builtin the generated glue uses"
        ))
    } else {
        None
    }
}

/// `c` in words: `U+2028 (a line separator)`.
fn describe(c: char) -> String {
    match c {
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
            format!("a line break (U+{:04X})", u32::from(c))
        }
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        c if is_hidden(c) => format!("an invisible character (U+{:04X})", u32::from(c)),
        c => format!("`{c}`"),
    }
}

/// A name for an error message: hidden characters as `\u{..}`, at most 40 characters.
pub(crate) fn shown(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().take(40) {
        if is_hidden(c) || c == '`' {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    if name.chars().count() > 40 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_snake_name("embed_dim"), None);
        for bad in [
            "class", "None", "lambda", "True", "type", "é", "a-b", "A", "", "len", "self",
        ] {
            assert!(check_snake_name(bad).is_some(), "{bad}");
        }
        assert_eq!(check_op_name("MultiheadAttention"), None);
        for bad in ["../../x/X", "Self", "None", "a", "X/Y", "X.Y"] {
            assert!(check_op_name(bad).is_some(), "{bad}");
        }
        assert_eq!(check_dotted("out_proj.weight", true), None);
        assert_eq!(check_dotted("layers.0.weight", true), None);
        assert!(check_dotted("os; import x", false).is_some());
        assert!(check_dotted("a..b", false).is_some());
        assert!(check_dotted("x.import", false).is_some());
    }

    #[test]
    fn text_and_urls() {
        assert_eq!(check_line("Total features (E)."), None);
        assert_eq!(check_line("non\u{a0}breaking"), None);
        for bad in [
            "a\nb", "a\rb", "\u{2028}", "\u{7f}", "\u{ad}", "\u{200b}", "\u{202e}",
        ] {
            assert!(check_line(bad).is_some(), "{bad:?}");
        }
        assert_eq!(check_url("https://pytorch.org/docs/x.html#y"), None);
        for bad in [
            "javascript:alert(1)",
            "https://x/\"onclick=",
            "https://x/a b",
            "https://x/'",
        ] {
            assert!(check_url(bad).is_some(), "{bad}");
        }
    }
}
