//! The spec's small expression language: shapes, conditions and computed arguments.
//!
//! Grammar (Python-like, so an expression reads the same in the spec, in Python and, after
//! [`Expr::to_rust`], in Rust):
//!
//! ```text
//! or   := and ("or" and)*          and  := not ("and" not)*        not := "not" not | cmp
//! cmp  := sum (("==" | "!=") sum)? sum  := prod (("+" | "-") prod)* prod := atom (("*" | "//") atom)*
//! atom := INT | "true" | "false" | IDENT | "(" or ")"
//! ```
//! Booleans used in arithmetic count as 0 or 1, as in Python.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// The longest expression source, in bytes.
pub const MAX_EXPR_LEN: usize = 512;

/// The deepest nesting of operations (parentheses, `not`s and chains of binary operators).
pub const MAX_EXPR_DEPTH: usize = 32;

/// The type of a value an expression yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprType {
    /// A non-negative integer size.
    Int,
    /// A boolean condition.
    Bool,
}

impl fmt::Display for ExprType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExprType::Int => "int",
            ExprType::Bool => "bool",
        })
    }
}

/// A value an expression evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprValue {
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl ExprValue {
    fn as_int(self) -> i64 {
        match self {
            ExprValue::Int(v) => v,
            ExprValue::Bool(b) => i64::from(b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    FloorDiv,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    fn python(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::FloorDiv => "//",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }

    fn is_arithmetic(self) -> bool {
        matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::FloorDiv)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Int(i64),
    Bool(bool),
    Ident(String),
    Not(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
}

/// A parsed expression, kept with its source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    source: String,
    root: Node,
}

impl Expr {
    /// Parses `source`; the error says what was expected where. Expressions longer than
    /// [`MAX_EXPR_LEN`] bytes or nested deeper than [`MAX_EXPR_DEPTH`] are refused, so that no
    /// input can exhaust the stack of the parser or of the passes over the tree.
    pub fn parse(source: &str) -> Result<Expr, String> {
        if source.len() > MAX_EXPR_LEN {
            return Err(format!(
                "the expression is {} bytes long; at most {MAX_EXPR_LEN} are allowed",
                source.len()
            ));
        }
        let tokens = tokenize(source)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let root = parser.or()?;
        if let Some(tok) = parser.tokens.get(parser.pos) {
            return Err(format!(
                "unexpected `{tok}` in expression `{}`",
                source.trim()
            ));
        }
        if depth(&root) > MAX_EXPR_DEPTH {
            return Err(format!(
                "the expression nests more than {MAX_EXPR_DEPTH} operations deep"
            ));
        }
        Ok(Expr {
            source: source.trim().to_string(),
            root,
        })
    }

    /// The expression as written in the spec.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every identifier the expression reads, sorted.
    pub fn identifiers(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        collect_idents(&self.root, &mut out);
        out
    }

    /// The expression's type, given the type of each identifier; an error names what does not fit.
    pub fn type_of(&self, lookup: &dyn Fn(&str) -> Option<ExprType>) -> Result<ExprType, String> {
        type_of(&self.root, lookup)
    }

    /// Evaluates the expression; identifiers come from `lookup`.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<ExprValue>) -> Result<ExprValue, String> {
        eval(&self.root, lookup)
    }

    /// Python source for the expression (identifiers verbatim: they are ASCII identifiers).
    pub fn to_python(&self) -> String {
        render_python(&self.root)
    }

    /// Rust source for the expression's value, over `usize` and `bool` values, for use inside a
    /// function that returns an `Option`: every `+ - * //` is a checked operation ended by `?`,
    /// so an overflow, a negative size or a division by zero returns `None` instead of
    /// panicking or wrapping. `name` renders each identifier (a field read, a method call),
    /// `lookup` gives its type.
    pub fn to_rust(
        &self,
        lookup: &dyn Fn(&str) -> Option<ExprType>,
        name: &dyn Fn(&str) -> String,
    ) -> String {
        RustRender { lookup, name }.value(&self.root)
    }

    /// Rust source for the expression as an `Option` (`None` on overflow, a negative size or a
    /// division by zero); see [`Expr::to_rust`].
    pub fn to_rust_checked(
        &self,
        lookup: &dyn Fn(&str) -> Option<ExprType>,
        name: &dyn Fn(&str) -> String,
    ) -> String {
        let r = RustRender { lookup, name };
        match &self.root {
            Node::Binary(op, lhs, rhs) if op.is_arithmetic() => r.checked(*op, lhs, rhs),
            other => format!("Some({})", r.value(other)),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExprVisitor;
        impl Visitor<'_> for ExprVisitor {
            type Value = Expr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression (a string, an integer or a boolean)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expr, E> {
                Expr::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expr, E> {
                Expr::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expr, E> {
                Expr::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Expr, E> {
                Expr::parse(if v { "true" } else { "false" }).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(ExprVisitor)
    }
}

fn render_python(node: &Node) -> String {
    match node {
        Node::Int(v) => v.to_string(),
        Node::Bool(true) => "True".into(),
        Node::Bool(false) => "False".into(),
        Node::Ident(id) => id.clone(),
        Node::Not(inner) => format!("not {}", parenthesized(inner, render_python(inner), 0)),
        Node::Binary(op, lhs, rhs) => {
            // Comparisons do not chain: `(a == b) == c` keeps its parentheses on both sides.
            let chains = matches!(op, BinOp::Eq | BinOp::Ne);
            format!(
                "{} {} {}",
                parenthesized(lhs, render_python(lhs), precedence(*op) + u8::from(chains)),
                op.python(),
                parenthesized(rhs, render_python(rhs), precedence(*op) + 1),
            )
        }
    }
}

/// Python's precedence of `not`: between `and` and the comparisons.
const NOT_PRECEDENCE: u8 = 3;

/// `text` in parentheses when `node` binds looser than `min`; `min == 0` always parenthesizes
/// a binary operation (the operand of `not`).
fn parenthesized(node: &Node, text: String, min: u8) -> String {
    match node {
        Node::Binary(op, ..) if min == 0 || precedence(*op) < min => format!("({text})"),
        Node::Not(_) if NOT_PRECEDENCE < min => format!("({text})"),
        _ => text,
    }
}

struct RustRender<'a> {
    lookup: &'a dyn Fn(&str) -> Option<ExprType>,
    name: &'a dyn Fn(&str) -> String,
}

impl RustRender<'_> {
    fn is_bool(&self, node: &Node) -> bool {
        type_of(node, self.lookup) == Ok(ExprType::Bool)
    }

    /// The node's value in its own type (`usize` or `bool`).
    fn value(&self, node: &Node) -> String {
        match node {
            Node::Int(v) => format!("{v}usize"),
            Node::Bool(b) => b.to_string(),
            Node::Ident(id) => (self.name)(id),
            Node::Not(inner) => format!("!{}", self.operand(inner)),
            Node::Binary(op, lhs, rhs) if op.is_arithmetic() => {
                format!("{}?", self.checked(*op, lhs, rhs))
            }
            Node::Binary(op, lhs, rhs) => {
                let ints = !self.is_bool(lhs) || !self.is_bool(rhs);
                let side = |n: &Node| {
                    if ints {
                        self.int(n)
                    } else {
                        self.operand_within(n, *op)
                    }
                };
                let op_text = match op {
                    BinOp::And => "&&",
                    BinOp::Or => "||",
                    other => other.python(),
                };
                format!("{} {op_text} {}", side(lhs), side(rhs))
            }
        }
    }

    /// `lhs.checked_op(rhs)`, an `Option<usize>`.
    fn checked(&self, op: BinOp, lhs: &Node, rhs: &Node) -> String {
        let method = match op {
            BinOp::Add => "checked_add",
            BinOp::Sub => "checked_sub",
            BinOp::Mul => "checked_mul",
            _ => "checked_div",
        };
        format!("{}.{method}({})", self.int(lhs), self.int(rhs))
    }

    /// The node as a `usize` (a bool counts 0 or 1, as in Python).
    fn int(&self, node: &Node) -> String {
        if self.is_bool(node) {
            format!("usize::from({})", self.value(node))
        } else {
            self.value(node)
        }
    }

    /// The node where a unary operator applies: parenthesized if it is a binary operation.
    fn operand(&self, node: &Node) -> String {
        match node {
            Node::Binary(op, ..) if !op.is_arithmetic() => format!("({})", self.value(node)),
            _ => self.value(node),
        }
    }

    /// The node as an operand of the boolean operator `parent`.
    fn operand_within(&self, node: &Node, parent: BinOp) -> String {
        match node {
            Node::Binary(op, ..)
                if !op.is_arithmetic() && precedence(*op) <= precedence(parent) =>
            {
                format!("({})", self.value(node))
            }
            _ => self.value(node),
        }
    }
}

fn precedence(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 1,
        BinOp::And => 2,
        BinOp::Eq | BinOp::Ne => 4,
        BinOp::Add | BinOp::Sub => 5,
        BinOp::Mul | BinOp::FloorDiv => 6,
    }
}

/// The depth of the tree (a leaf is 1). Iterative, so that it is safe on any tree.
fn depth(root: &Node) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1)];
    while let Some((node, d)) = stack.pop() {
        deepest = deepest.max(d);
        match node {
            Node::Not(inner) => stack.push((inner, d + 1)),
            Node::Binary(_, lhs, rhs) => {
                stack.push((lhs, d + 1));
                stack.push((rhs, d + 1));
            }
            Node::Int(_) | Node::Bool(_) | Node::Ident(_) => {}
        }
    }
    deepest
}

fn collect_idents<'a>(node: &'a Node, out: &mut BTreeSet<&'a str>) {
    match node {
        Node::Ident(name) => {
            out.insert(name);
        }
        Node::Not(inner) => collect_idents(inner, out),
        Node::Binary(_, lhs, rhs) => {
            collect_idents(lhs, out);
            collect_idents(rhs, out);
        }
        Node::Int(_) | Node::Bool(_) => {}
    }
}

fn type_of(node: &Node, lookup: &dyn Fn(&str) -> Option<ExprType>) -> Result<ExprType, String> {
    match node {
        Node::Int(_) => Ok(ExprType::Int),
        Node::Bool(_) => Ok(ExprType::Bool),
        Node::Ident(name) => lookup(name).ok_or_else(|| format!("unknown name `{name}`")),
        Node::Not(inner) => match type_of(inner, lookup)? {
            ExprType::Bool => Ok(ExprType::Bool),
            other => Err(format!("`not` needs a bool, got {other}")),
        },
        Node::Binary(op, lhs, rhs) => {
            let (l, r) = (type_of(lhs, lookup)?, type_of(rhs, lookup)?);
            match op {
                op if op.is_arithmetic() => Ok(ExprType::Int),
                BinOp::Eq | BinOp::Ne if l == r => Ok(ExprType::Bool),
                BinOp::Eq | BinOp::Ne => Err(format!("cannot compare {l} with {r}")),
                _ if l == ExprType::Bool && r == ExprType::Bool => Ok(ExprType::Bool),
                _ => Err(format!("`{}` needs bools, got {l} and {r}", op.python())),
            }
        }
    }
}

fn eval(node: &Node, lookup: &dyn Fn(&str) -> Option<ExprValue>) -> Result<ExprValue, String> {
    Ok(match node {
        Node::Int(v) => ExprValue::Int(*v),
        Node::Bool(b) => ExprValue::Bool(*b),
        Node::Ident(name) => lookup(name).ok_or_else(|| format!("unknown name `{name}`"))?,
        Node::Not(inner) => match eval(inner, lookup)? {
            ExprValue::Bool(b) => ExprValue::Bool(!b),
            ExprValue::Int(_) => return Err("`not` needs a bool".into()),
        },
        Node::Binary(op, lhs, rhs) => {
            let (l, r) = (eval(lhs, lookup)?, eval(rhs, lookup)?);
            let overflow = || format!("`{}` overflows", op.python());
            match op {
                BinOp::Add => {
                    ExprValue::Int(l.as_int().checked_add(r.as_int()).ok_or_else(overflow)?)
                }
                BinOp::Sub => {
                    ExprValue::Int(l.as_int().checked_sub(r.as_int()).ok_or_else(overflow)?)
                }
                BinOp::Mul => {
                    ExprValue::Int(l.as_int().checked_mul(r.as_int()).ok_or_else(overflow)?)
                }
                BinOp::FloorDiv => match r.as_int() {
                    0 => return Err("division by zero".into()),
                    d => ExprValue::Int(l.as_int().div_euclid(d)),
                },
                BinOp::Eq => ExprValue::Bool(l == r),
                BinOp::Ne => ExprValue::Bool(l != r),
                BinOp::And | BinOp::Or => match (l, r) {
                    (ExprValue::Bool(a), ExprValue::Bool(b)) => {
                        ExprValue::Bool(if *op == BinOp::And { a && b } else { a || b })
                    }
                    _ => return Err(format!("`{}` needs bools", op.python())),
                },
            }
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Int(i64),
    Word(String),
    Sym(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Int(v) => write!(f, "{v}"),
            Token::Word(w) => f.write_str(w),
            Token::Sym(s) => f.write_str(s),
        }
    }
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    const SYMBOLS: [&str; 8] = ["//", "==", "!=", "+", "-", "*", "(", ")"];
    let mut tokens = Vec::new();
    let mut rest = source.trim_start();
    while let Some(c) = rest.chars().next() {
        if let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            tokens.push(Token::Sym(sym));
            rest = &rest[sym.len()..];
        } else if c.is_ascii_digit() {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let value = rest[..end]
                .parse()
                .map_err(|_| format!("integer `{}` is too large", &rest[..end]))?;
            tokens.push(Token::Int(value));
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Word(rest[..end].to_string()));
            rest = &rest[end..];
        } else {
            return Err(format!(
                "unexpected character `{c}` in expression `{}`",
                source.trim()
            ));
        }
        rest = rest.trim_start();
    }
    if tokens.is_empty() {
        return Err("empty expression".into());
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Current recursion depth of `not` and parentheses.
    depth: usize,
}

impl Parser {
    /// Runs `f` one level deeper; refuses past [`MAX_EXPR_DEPTH`].
    fn nested(&mut self, f: fn(&mut Self) -> Result<Node, String>) -> Result<Node, String> {
        if self.depth >= MAX_EXPR_DEPTH {
            return Err(format!(
                "the expression nests more than {MAX_EXPR_DEPTH} operations deep"
            ));
        }
        self.depth += 1;
        let node = f(self);
        self.depth -= 1;
        node
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        self.eat(|t| matches!(t, Token::Sym(s) if *s == sym))
    }

    fn eat_word(&mut self, word: &str) -> bool {
        self.eat(|t| matches!(t, Token::Word(w) if w == word))
    }

    fn eat(&mut self, pred: impl Fn(&Token) -> bool) -> bool {
        let hit = self.tokens.get(self.pos).is_some_and(pred);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn binary(
        &mut self,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self) -> Result<Node, String>,
    ) -> Result<Node, String> {
        let mut lhs = next(self)?;
        'outer: loop {
            for (text, op) in ops {
                let matched = if text.chars().all(|c| c.is_ascii_alphabetic()) {
                    self.eat_word(text)
                } else {
                    self.eat_sym(text)
                };
                if matched {
                    lhs = Node::Binary(*op, Box::new(lhs), Box::new(next(self)?));
                    continue 'outer;
                }
            }
            return Ok(lhs);
        }
    }

    fn or(&mut self) -> Result<Node, String> {
        self.binary(&[("or", BinOp::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Node, String> {
        self.binary(&[("and", BinOp::And)], Self::not)
    }

    fn not(&mut self) -> Result<Node, String> {
        if self.eat_word("not") {
            Ok(Node::Not(Box::new(self.nested(Self::not)?)))
        } else {
            self.cmp()
        }
    }

    fn cmp(&mut self) -> Result<Node, String> {
        let lhs = self.sum()?;
        for (text, op) in [("==", BinOp::Eq), ("!=", BinOp::Ne)] {
            if self.eat_sym(text) {
                return Ok(Node::Binary(op, Box::new(lhs), Box::new(self.sum()?)));
            }
        }
        Ok(lhs)
    }

    fn sum(&mut self) -> Result<Node, String> {
        self.binary(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::prod)
    }

    fn prod(&mut self) -> Result<Node, String> {
        self.binary(&[("*", BinOp::Mul), ("//", BinOp::FloorDiv)], Self::atom)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match token {
            Some(Token::Int(v)) => Ok(Node::Int(v)),
            Some(Token::Word(w)) if w == "true" || w == "True" => Ok(Node::Bool(true)),
            Some(Token::Word(w)) if w == "false" || w == "False" => Ok(Node::Bool(false)),
            Some(Token::Word(w)) if !matches!(w.as_str(), "and" | "or" | "not") => {
                Ok(Node::Ident(w))
            }
            Some(Token::Sym("(")) => {
                let inner = self.nested(Self::or)?;
                if self.eat_sym(")") {
                    Ok(inner)
                } else {
                    Err("missing `)`".into())
                }
            }
            Some(other) => Err(format!(
                "unexpected `{other}`, expected a number, a name or `(`"
            )),
            None => Err("expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(name: &str) -> Option<ExprType> {
        match name {
            "embed_dim" | "num_heads" | "kdim" => Some(ExprType::Int),
            "bias" | "add_bias_kv" | "add_zero_attn" => Some(ExprType::Bool),
            _ => None,
        }
    }

    #[test]
    fn renders_python_and_rust() {
        let rust = |src: &str| {
            Expr::parse(src)
                .unwrap()
                .to_rust(&types, &|n| n.to_string())
        };
        let checked = |src: &str| {
            Expr::parse(src)
                .unwrap()
                .to_rust_checked(&types, &|n| n.to_string())
        };
        let e = Expr::parse("add_bias_kv + add_zero_attn").unwrap();
        assert_eq!(e.to_python(), "add_bias_kv + add_zero_attn");
        assert_eq!(
            rust("add_bias_kv + add_zero_attn"),
            "usize::from(add_bias_kv).checked_add(usize::from(add_zero_attn))?"
        );
        assert_eq!(
            checked("add_bias_kv + add_zero_attn"),
            "usize::from(add_bias_kv).checked_add(usize::from(add_zero_attn))"
        );
        let e = Expr::parse("kdim == embed_dim and not bias").unwrap();
        assert_eq!(
            rust("kdim == embed_dim and not bias"),
            "kdim == embed_dim && !bias"
        );
        assert_eq!(e.to_python(), "kdim == embed_dim and not bias");
        let e = Expr::parse("embed_dim // (num_heads * 2)").unwrap();
        assert_eq!(
            checked("embed_dim // (num_heads * 2)"),
            "embed_dim.checked_div(num_heads.checked_mul(2usize)?)"
        );
        assert_eq!(e.to_python(), "embed_dim // (num_heads * 2)");
        assert_eq!(e.type_of(&types), Ok(ExprType::Int));
        // Bool literals and comparisons count 0 or 1 in arithmetic, as in Python.
        assert_eq!(
            checked("true + true"),
            "usize::from(true).checked_add(usize::from(true))"
        );
        assert_eq!(
            rust("(kdim == 1) + 1"),
            "usize::from(kdim == 1usize).checked_add(1usize)?"
        );
        assert_eq!(checked("0 - 1"), "0usize.checked_sub(1usize)");
        // Comparisons do not chain; `not` keeps its operand.
        let e = Expr::parse("(bias == add_bias_kv) == add_zero_attn").unwrap();
        assert_eq!(e.to_python(), "(bias == add_bias_kv) == add_zero_attn");
        assert_eq!(
            rust("(bias == add_bias_kv) == add_zero_attn"),
            "(bias == add_bias_kv) == add_zero_attn"
        );
        assert_eq!(
            Expr::parse("(not bias) == bias").unwrap().to_python(),
            "(not bias) == bias"
        );
        assert_eq!(
            rust("not (bias or bias) and bias"),
            "!(bias || bias) && bias"
        );
        assert_eq!(checked("bias"), "Some(bias)");
    }

    #[test]
    fn bounded() {
        let deep = format!("{}1{}", "(".repeat(1500), ")".repeat(1500));
        assert!(Expr::parse(&deep).unwrap_err().contains("bytes long"));
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(Expr::parse(&deep).unwrap_err().contains("nests more than"));
        assert!(Expr::parse(&"not ".repeat(40))
            .unwrap_err()
            .contains("nests"));
        let sum = vec!["1"; 100].join("+");
        assert!(Expr::parse(&sum).unwrap_err().contains("nests"));
        let ok = vec!["1"; 20].join("+");
        assert!(Expr::parse(&ok).is_ok());
        assert!(Expr::parse(&"not ".repeat(37000)).is_err());
    }

    #[test]
    fn evaluates() {
        let env = |n: &str| match n {
            "embed_dim" => Some(ExprValue::Int(16)),
            "num_heads" => Some(ExprValue::Int(4)),
            "bias" => Some(ExprValue::Bool(true)),
            _ => None,
        };
        assert_eq!(
            Expr::parse("embed_dim // num_heads").unwrap().eval(&env),
            Ok(ExprValue::Int(4))
        );
        assert_eq!(
            Expr::parse("3 * embed_dim - bias").unwrap().eval(&env),
            Ok(ExprValue::Int(47))
        );
        assert!(Expr::parse("embed_dim // 0").unwrap().eval(&env).is_err());
    }

    #[test]
    fn rejects_bad_syntax_and_types() {
        assert!(Expr::parse("embed_dim +").is_err());
        assert!(Expr::parse("embed_dim $ 2").is_err());
        assert!(Expr::parse("(embed_dim").is_err());
        assert!(Expr::parse("").is_err());
        let e = Expr::parse("bias and embed_dim").unwrap();
        assert!(e.type_of(&types).is_err());
        let e = Expr::parse("nope * 2").unwrap();
        assert_eq!(e.type_of(&types), Err("unknown name `nope`".into()));
    }
}
