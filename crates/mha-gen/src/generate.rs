//! The pure core: specs + templates → generated files. No I/O here.
//!
//! Template paths decide outputs (`<op_module>` is the op's snake-case name, `multihead_attention`):
//! - `python/package/<name>` → `python/mha_glue/<name>`, once for all ops (the package: its
//!   `__init__.py` lists the ops; `_shared.py`, `checkpoints.py`, `_frameworks.py` are plain);
//! - `python/op/<name>` → `python/mha_glue/<op_module>/<name>`, for every op (generic: the op
//!   package's `__init__.py`, `_spec.py` with the spec's facts as Python data);
//! - `python/ops/<op_module>/<name>` → `python/mha_glue/<op_module>/<name>`, for that op only: a
//!   `<framework>.py[.tera]` once per selected framework (with `key` and `fw` in the context), any
//!   other file once. An op with framework files there must have one for every selected framework;
//!   an op without any gets its package (`__init__.py`, `_spec.py`) and no framework modules;
//! - a file without `.tera` is plain: copied as it is (a `.py` file under the `@generated` header);
//! - `python_package/<name>.tera` → `python/<name>`, once, beside the package (its `pyproject.toml`);
//! - `docs/op_page.rst.tera` → `docs/ops/<Op>.rst`, `docs/op_<x>.rst.tera` → `docs/ops/<Op>.<x>.rst`
//!   (one folder below the site root, where the seed page's `../_static/op_tabs.js` resolves);
//! - `docs_site/<name>` → `docs/<name>`, once for all ops (see [`crate::docs`]);
//! - `rust/op.rs.tera` → `rust/<op_module>.rs`, `rust/op_<x>.rs.tera` → `rust/<op_module>_<x>.rs`,
//!   formatted;
//! - files under a `macros/` folder are only included by others;
//! - a Rust or docs template that renders to nothing but whitespace for an op writes no file
//!   (a template for layers renders nothing for a function).
//!
//! Templates render once per op with the op's spec as `spec`; templates rendered once for all ops
//! see `ops` (each op's `name`, `module`, `summary`, `kind`, and its whole `spec`).

use std::collections::BTreeSet;
use std::sync::Arc;

use mha_spec::Spec;
use serde_json::{json, Value};

use crate::docs;
use crate::error::{tera_message, GenError};
use crate::filters;
use crate::templates::Templates;

/// The Python package the glue modules go into.
pub const PYTHON_PACKAGE: &str = "mha_glue";

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Path relative to the output folder, `/`-separated.
    pub path: String,
    /// Full contents.
    pub contents: String,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ops (spec `op` names) to generate for; empty means all.
    pub ops: Vec<String>,
    /// Framework keys to generate glue for; empty means all.
    pub frameworks: Vec<String>,
    /// Generate the Python glue package.
    pub python: bool,
    /// Generate the docs pages.
    pub docs: bool,
    /// Generate the Rust code.
    pub rust: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ops: Vec::new(),
            frameworks: Vec::new(),
            python: true,
            docs: true,
            rust: true,
        }
    }
}

/// The specs `selected` names (all for none), in the given order.
pub fn select_ops<'s>(specs: &'s [Spec], selected: &[String]) -> Result<Vec<&'s Spec>, GenError> {
    for name in selected {
        if !specs.iter().any(|s| &s.op == name) {
            return Err(GenError::UnknownOp {
                name: name.clone(),
                known: specs.iter().map(|s| s.op.clone()).collect(),
            });
        }
    }
    Ok(specs
        .iter()
        .filter(|s| selected.is_empty() || selected.contains(&s.op))
        .collect())
}

/// Renders every output for `specs`, sorted by path.
pub fn generate(
    specs: &[Spec],
    templates: &Templates,
    options: &Options,
) -> Result<Vec<GeneratedFile>, GenError> {
    // Specs built in code skip the loader: hold them to the same rules before any template runs.
    let errors: Vec<_> = specs
        .iter()
        .flat_map(|spec| mha_spec::check(spec).err().into_iter().flat_map(|e| e.0))
        .collect();
    if !errors.is_empty() {
        return Err(GenError::Spec(mha_spec::SpecErrors(errors)));
    }
    let specs: Vec<Spec> = select_ops(specs, &options.ops)?
        .into_iter()
        .cloned()
        .collect();
    check_frameworks(&specs, &options.frameworks)?;
    if options.python {
        check_templates(&specs, templates, &options.frameworks)?;
    }
    let base = templates.engine()?;
    let mut files = Vec::new();
    for spec in &specs {
        let spec = Arc::new(spec.clone());
        let mut tera = base.clone();
        filters::register(&mut tera, &spec);
        let renderer = Renderer {
            tera: &tera,
            spec: &spec,
            spec_value: to_value(&*spec)?,
        };
        for name in templates.names() {
            if name.split('/').any(|part| part == "macros") {
                continue;
            }
            if let Some(rest) = name.strip_prefix("python/") {
                if options.python {
                    renderer.python(templates, name, rest, &options.frameworks, &mut files)?;
                }
            } else if let Some(stem) = name
                .strip_prefix("docs/")
                .and_then(|f| f.strip_suffix(".rst.tera"))
            {
                if options.docs {
                    let path = match stem.strip_prefix("op_") {
                        Some("page") => format!("docs/ops/{}.rst", spec.op),
                        Some(x) => format!("docs/ops/{}.{x}.rst", spec.op),
                        None => continue,
                    };
                    let contents = renderer.render(name, renderer.docs_context())?;
                    if !contents.trim().is_empty() {
                        files.push(GeneratedFile { path, contents });
                    }
                }
            } else if let Some(stem) = name
                .strip_prefix("rust/")
                .and_then(|f| f.strip_suffix(".rs.tera"))
            {
                if options.rust {
                    let module = snake_case(&spec.op);
                    let path = match stem {
                        "op" => format!("rust/{module}.rs"),
                        other => match other.strip_prefix("op_") {
                            Some(x) => format!("rust/{module}_{x}.rs"),
                            None => continue,
                        },
                    };
                    let source = renderer.render(name, renderer.base_context("//"))?;
                    if source.trim().is_empty() {
                        continue;
                    }
                    let contents = format!(
                        "{}\n{}",
                        header("//", &spec.op),
                        format_rust(&path, &source)?
                    );
                    files.push(GeneratedFile { path, contents });
                }
            }
        }
    }
    let once = Once::new(&specs, templates, &base, options)?;
    if options.python {
        once.render(
            "python/package/",
            &format!("python/{PYTHON_PACKAGE}/"),
            &mut files,
        )?;
        once.render("python_package/", "python/", &mut files)?;
    }
    if options.docs {
        once.render("docs_site/", "docs/", &mut files)?;
    }
    for f in &files {
        crate::write::check_relative(&f.path)?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = BTreeSet::new();
    for f in &files {
        if !seen.insert(&f.path) {
            return Err(GenError::DuplicateOutput(f.path.clone()));
        }
    }
    Ok(files)
}

struct Renderer<'a> {
    tera: &'a tera::Tera,
    spec: &'a Spec,
    spec_value: Value,
}

impl Renderer<'_> {
    fn base_context(&self, comment: &str) -> tera::Context {
        let mut ctx = tera::Context::new();
        ctx.insert("spec", &self.spec_value);
        ctx.insert("generated_header", &header(comment, &self.spec.op));
        ctx.insert("op_snake", &snake_case(&self.spec.op));
        let derived_types: serde_json::Map<String, Value> = self
            .spec
            .derived
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    json!(filters::derived_rust_type(self.spec, &d.name)),
                )
            })
            .collect();
        ctx.insert("derived_types", &derived_types);
        ctx
    }

    /// The base context plus, per framework key, what its glue does (`glue_strategies`) and the
    /// glue package's name (`package`).
    fn docs_context(&self) -> tera::Context {
        let mut ctx = self.base_context("#");
        let strategies: serde_json::Map<String, Value> = self
            .spec
            .frameworks
            .iter()
            .map(|(key, fw)| (key.clone(), json!(docs::glue_strategy(self.spec, fw))))
            .collect();
        ctx.insert("glue_strategies", &strategies);
        ctx.insert("package", PYTHON_PACKAGE);
        ctx
    }

    fn render(&self, name: &str, ctx: tera::Context) -> Result<String, GenError> {
        render(self.tera, name, &ctx, &self.spec.op)
    }

    /// The selected framework keys, in spec order.
    fn selected(&self, selected: &[String]) -> Vec<&String> {
        self.spec
            .frameworks
            .keys()
            .filter(|k| selected.is_empty() || selected.contains(k))
            .collect()
    }

    /// Renders (or copies) one template under `python/` for this op, if it is this op's.
    fn python(
        &self,
        templates: &Templates,
        name: &str,
        rest: &str,
        selected: &[String],
        out: &mut Vec<GeneratedFile>,
    ) -> Result<(), GenError> {
        let module = snake_case(&self.spec.op);
        let (file, own) = if rest.starts_with("package/") {
            return Ok(());
        } else if let Some(file) = rest.strip_prefix("op/") {
            (file, false)
        } else if let Some(after) = rest.strip_prefix("ops/") {
            match after
                .strip_prefix(module.as_str())
                .and_then(|f| f.strip_prefix('/'))
            {
                Some(file) => (file, true),
                None => return Ok(()), // another op's
            }
        } else {
            return Err(GenError::MisplacedTemplate {
                name: name.to_string(),
                message: "Python templates go under python/package/ (once), python/op/ (every op) or python/ops/<op_module>/ (one op)".into(),
            });
        };
        let out_name = file.strip_suffix(".tera").unwrap_or(file);
        let path = format!("python/{PYTHON_PACKAGE}/{module}/{out_name}");
        let framework = match own {
            true => out_name
                .strip_suffix(".py")
                .and_then(|stem| self.spec.frameworks.get_key_value(stem)),
            false => None,
        };
        if let Some((key, _)) = framework {
            if !selected.is_empty() && !selected.contains(key) {
                return Ok(());
            }
        }
        if let Some(text) = templates.plain(name) {
            out.push(plain_file(&path, text, &self.spec.op));
            return Ok(());
        }
        let mut ctx = self.base_context("#");
        ctx.insert(
            "frameworks",
            &glue_frameworks(self.spec, templates, selected),
        );
        ctx.insert("spec_frameworks", &self.selected(selected));
        ctx.insert("package", PYTHON_PACKAGE);
        if let Some((key, fw)) = framework {
            ctx.insert("key", key);
            ctx.insert("fw", &to_value(fw)?);
        }
        out.push(GeneratedFile {
            path,
            contents: self.render(name, ctx)?,
        });
        Ok(())
    }
}

/// Whether `python/ops/<op_module>/<key>.py[.tera]` exists.
fn has_glue_module(templates: &Templates, module: &str, key: &str) -> bool {
    let stem = format!("python/ops/{module}/{key}.py");
    templates
        .names()
        .any(|n| n == stem || n.strip_suffix(".tera") == Some(stem.as_str()))
}

/// The selected framework keys of `spec` that have a glue module template, in spec order.
fn glue_frameworks<'s>(
    spec: &'s Spec,
    templates: &Templates,
    selected: &[String],
) -> Vec<&'s String> {
    let module = snake_case(&spec.op);
    spec.frameworks
        .keys()
        .filter(|k| selected.is_empty() || selected.contains(k))
        .filter(|k| has_glue_module(templates, &module, k))
        .collect()
}

/// The templates rendered once for all ops: the package files under `python/package/`, its
/// `pyproject.toml` under `python_package/`, and the docs site under `docs_site/`.
struct Once<'a> {
    tera: Option<tera::Tera>,
    templates: &'a Templates,
    context: tera::Context,
    ops: Vec<String>,
}

impl<'a> Once<'a> {
    fn new(
        specs: &[Spec],
        templates: &'a Templates,
        base: &tera::Tera,
        options: &Options,
    ) -> Result<Self, GenError> {
        let tera = specs.first().map(|first| {
            let mut tera = base.clone();
            // The filters once-rendered templates use (`py`, `rst`, `url`, ...) do not depend on
            // the spec they are bound to.
            filters::register(&mut tera, &Arc::new(first.clone()));
            tera
        });
        let mut ops = Vec::new();
        // framework key -> the packages its glue needs, over every op (pyproject's extras).
        let mut extras: Vec<(&str, Vec<&str>)> = Vec::new();
        for spec in specs {
            let glue = glue_frameworks(spec, templates, &options.frameworks);
            for key in &glue {
                let fw = &spec.frameworks[key.as_str()];
                let at = match extras.iter().position(|(k, _)| k == key) {
                    Some(at) => at,
                    None => {
                        extras.push((key.as_str(), Vec::new()));
                        extras.len() - 1
                    }
                };
                let packages = &mut extras[at].1;
                for p in std::iter::once(&fw.package).chain(&fw.backend) {
                    if !packages.contains(&p.as_str()) {
                        packages.push(p);
                    }
                }
            }
            ops.push(json!({
                "name": spec.op,
                "module": snake_case(&spec.op),
                "summary": spec.summary,
                "kind": spec.kind,
                "frameworks": glue,
                "spec": to_value(spec)?,
            }));
        }
        let names: Vec<String> = specs.iter().map(|s| s.op.clone()).collect();
        let extras: Vec<Value> = extras
            .iter()
            .map(|(key, packages)| json!({"key": key, "packages": packages}))
            .collect();
        let mut context = tera::Context::new();
        context.insert("ops", &ops);
        context.insert("extras", &extras);
        context.insert("package", PYTHON_PACKAGE);
        context.insert("version", env!("CARGO_PKG_VERSION"));
        Ok(Once {
            tera,
            templates,
            context,
            ops: names,
        })
    }

    /// Every template under `prefix` → `out_prefix` + its path (without `.tera`).
    fn render(
        &self,
        prefix: &str,
        out_prefix: &str,
        files: &mut Vec<GeneratedFile>,
    ) -> Result<(), GenError> {
        let Some(tera) = &self.tera else {
            return Ok(());
        };
        for name in self.templates.names() {
            let Some(file) = name.strip_prefix(prefix) else {
                continue;
            };
            if file.split('/').any(|part| part == "macros") {
                continue;
            }
            let header = |comment: &str| match prefix {
                "docs_site/" => site_header(comment),
                _ => package_header(comment, &self.ops),
            };
            if let Some(text) = self.templates.plain(name) {
                let contents = match file.ends_with(".py") {
                    true => format!("{}\n{text}", header("#")),
                    false => text.to_string(),
                };
                files.push(GeneratedFile {
                    path: format!("{out_prefix}{file}"),
                    contents,
                });
            } else if let Some(file) = file.strip_suffix(".tera") {
                let mut ctx = self.context.clone();
                ctx.insert("generated_header", &header("#"));
                let contents = render(tera, name, &ctx, &self.ops.join(", "))?;
                files.push(GeneratedFile {
                    path: format!("{out_prefix}{file}"),
                    contents,
                });
            }
        }
        Ok(())
    }
}

/// Renders template `name` for `op` (the op, or the ops, it is rendered for, as errors name it).
fn render(
    tera: &tera::Tera,
    name: &str,
    ctx: &tera::Context,
    op: &str,
) -> Result<String, GenError> {
    let error = |message: String| GenError::Render {
        name: name.to_string(),
        op: op.to_string(),
        message,
    };
    // A template engine bug must not take the generator down: a panic is an error too.
    let rendered =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tera.render(name, ctx))).map_err(
            |panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error(format!("the template engine panicked: {what}"))
            },
        )?;
    rendered.map_err(|e| error(tera_message(&e)))
}

/// The `@generated` header of files made once from all the ops' specs.
fn package_header(comment: &str, ops: &[String]) -> String {
    format!(
        "{comment} @generated by mha-gen from the op specs ({}). Do not edit: change the specs or the templates.",
        ops.join(", ")
    )
}

fn site_header(comment: &str) -> String {
    format!("{comment} @generated by mha-gen for the docs site. Do not edit: change the templates.")
}

fn check_frameworks(specs: &[Spec], selected: &[String]) -> Result<(), GenError> {
    let mut known: Vec<String> = Vec::new();
    for key in specs.iter().flat_map(|s| s.frameworks.keys()) {
        if !known.contains(key) {
            known.push(key.clone());
        }
    }
    for name in selected {
        if !known.contains(name) {
            return Err(GenError::UnknownFramework {
                name: name.clone(),
                known,
            });
        }
    }
    Ok(())
}

/// Checks that an op with framework modules under `python/ops/<op_module>/` has one for every
/// selected framework of its spec (an op without any gets only its package files).
fn check_templates(
    specs: &[Spec],
    templates: &Templates,
    selected: &[String],
) -> Result<(), GenError> {
    for spec in specs {
        let module = snake_case(&spec.op);
        let keys = spec.frameworks.keys();
        if !keys.clone().any(|k| has_glue_module(templates, &module, k)) {
            continue;
        }
        for key in keys.filter(|k| selected.is_empty() || selected.contains(k)) {
            if !has_glue_module(templates, &module, key) {
                return Err(GenError::MissingTemplate {
                    name: format!("python/ops/{module}/{key}.py.tera"),
                });
            }
        }
    }
    Ok(())
}

fn to_value(v: &impl serde::Serialize) -> Result<Value, GenError> {
    serde_json::to_value(v).map_err(|e| GenError::Render {
        name: "context".into(),
        op: String::new(),
        message: e.to_string(),
    })
}

/// A plain file as it is; Python files get the `@generated` header.
fn plain_file(path: &str, text: &str, op: &str) -> GeneratedFile {
    let contents = match path.ends_with(".py") {
        true => format!("{}\n{text}", header("#", op)),
        false => text.to_string(),
    };
    GeneratedFile {
        path: path.to_string(),
        contents,
    }
}

fn header(comment: &str, op: &str) -> String {
    format!("{comment} @generated by mha-gen from the {op} op spec. Do not edit: change the spec or the templates.")
}

/// Parses and pretty-prints generated Rust.
fn format_rust(path: &str, source: &str) -> Result<String, GenError> {
    let file = syn::parse_file(source).map_err(|e| {
        let line = e.span().start().line;
        let text = source
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .trim();
        GenError::RustSyntax {
            file: path.to_string(),
            message: format!("{e} at line {line}: `{text}`"),
        }
    })?;
    Ok(prettyplease::unparse(&file))
}

/// `MultiheadAttention` → `multihead_attention`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
