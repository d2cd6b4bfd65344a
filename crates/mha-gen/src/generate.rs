//! The pure core: specs + templates → generated files. No I/O here.
//!
//! Template paths decide outputs:
//! - `python/<name>.tera` → `python/mha_glue/<name>`; a `<framework>.py.tera` is rendered once per
//!   selected framework (with `key` and `fw` in the context), any other file once;
//! - `python/<name>` without `.tera` is plain: copied into `python/mha_glue/<name>` as it is (a
//!   `.py` file under the `@generated` header);
//! - `python_package/<name>.tera` → `python/<name>`, beside the package (its `pyproject.toml`);
//! - `docs/op_page.rst.tera` → `docs/ops/<Op>.rst`, `docs/op_<x>.rst.tera` → `docs/ops/<Op>.<x>.rst`
//!   (one folder below the site root, where the seed page's `../_static/op_tabs.js` resolves);
//! - `docs_site/<name>` → `docs/<name>`, once for all ops (see [`crate::docs`]);
//! - `rust/op.rs.tera` → `rust/<op>.rs`, `rust/op_<x>.rs.tera` → `rust/<op>_<x>.rs`, formatted;
//! - files under a `macros/` folder are only imported by others.

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
            frameworks: Vec::new(),
            python: true,
            docs: true,
            rust: true,
        }
    }
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
    check_frameworks(specs, &options.frameworks)?;
    if options.python {
        check_templates(specs, templates, &options.frameworks)?;
    }
    let base = templates.engine()?;
    let mut files = Vec::new();
    for spec in specs {
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
            if let (Some(file), Some(text)) = (name.strip_prefix("python/"), templates.plain(name))
            {
                if options.python {
                    files.push(plain_file(
                        &format!("python/{PYTHON_PACKAGE}/{file}"),
                        text,
                        &spec.op,
                    ));
                }
            } else if let Some(file) = name
                .strip_prefix("python_package/")
                .and_then(|f| f.strip_suffix(".tera"))
            {
                if options.python {
                    let mut ctx = renderer.base_context("#");
                    ctx.insert("package", PYTHON_PACKAGE);
                    ctx.insert("version", env!("CARGO_PKG_VERSION"));
                    ctx.insert("frameworks", &renderer.selected(&options.frameworks));
                    files.push(GeneratedFile {
                        path: format!("python/{file}"),
                        contents: renderer.render(name, ctx)?,
                    });
                }
            } else if let Some(file) = name
                .strip_prefix("python/")
                .and_then(|f| f.strip_suffix(".tera"))
            {
                if options.python {
                    renderer.python(name, file, &options.frameworks, &mut files)?;
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
                    files.push(GeneratedFile {
                        path,
                        contents: renderer.render(name, renderer.docs_context())?,
                    });
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
    if options.docs {
        docs_site(specs, templates, &base, &mut files)?;
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
        let error = |message: String| GenError::Render {
            name: name.to_string(),
            op: self.spec.op.clone(),
            message,
        };
        // A template engine bug must not take the generator down: a panic is an error too.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.tera.render(name, &ctx)
        }))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error(format!("the template engine panicked: {what}"))
        })?;
        rendered.map_err(|e| error(tera_message(&e)))
    }

    /// The selected framework keys, in spec order.
    fn selected(&self, selected: &[String]) -> Vec<&String> {
        self.spec
            .frameworks
            .keys()
            .filter(|k| selected.is_empty() || selected.contains(k))
            .collect()
    }

    fn python(
        &self,
        name: &str,
        file: &str,
        selected: &[String],
        out: &mut Vec<GeneratedFile>,
    ) -> Result<(), GenError> {
        let keys: Vec<&String> = self
            .spec
            .frameworks
            .keys()
            .filter(|k| selected.is_empty() || selected.contains(k))
            .collect();
        let mut ctx = self.base_context("#");
        ctx.insert("frameworks", &keys);
        let path = format!("python/{PYTHON_PACKAGE}/{file}");
        match file
            .strip_suffix(".py")
            .and_then(|stem| self.spec.frameworks.get_key_value(stem))
        {
            Some((key, fw)) => {
                if keys.contains(&key) {
                    ctx.insert("key", key);
                    ctx.insert("fw", &to_value(fw)?);
                    out.push(GeneratedFile {
                        path,
                        contents: self.render(name, ctx)?,
                    });
                }
            }
            None => out.push(GeneratedFile {
                path,
                contents: self.render(name, ctx)?,
            }),
        }
        Ok(())
    }
}

/// The site files under `docs_site/`, once for all ops: templates see `ops` (name, summary).
fn docs_site(
    specs: &[Spec],
    templates: &Templates,
    base: &tera::Tera,
    files: &mut Vec<GeneratedFile>,
) -> Result<(), GenError> {
    let Some(first) = specs.first() else {
        return Ok(());
    };
    let mut tera = base.clone();
    // The site's filters (`rst`, `url`, ...) do not depend on the spec they are bound to.
    filters::register(&mut tera, &Arc::new(first.clone()));
    let renderer = Renderer {
        tera: &tera,
        spec: first,
        spec_value: Value::Null,
    };
    let ops: Vec<Value> = specs
        .iter()
        .map(|s| json!({"name": s.op, "summary": s.summary}))
        .collect();
    for name in templates.names() {
        let Some(file) = name.strip_prefix("docs_site/") else {
            continue;
        };
        if let Some(text) = templates.plain(name) {
            let contents = match file.ends_with(".py") {
                true => format!("{}\n{text}", site_header("#")),
                false => text.to_string(),
            };
            files.push(GeneratedFile {
                path: format!("docs/{file}"),
                contents,
            });
        } else if let Some(file) = file.strip_suffix(".tera") {
            let mut ctx = tera::Context::new();
            ctx.insert("ops", &ops);
            files.push(GeneratedFile {
                path: format!("docs/{file}"),
                contents: renderer.render(name, ctx)?,
            });
        }
    }
    Ok(())
}

fn site_header(comment: &str) -> String {
    format!("{comment} @generated by mha-gen for the docs site. Do not edit: change the templates.")
}

fn check_frameworks(specs: &[Spec], selected: &[String]) -> Result<(), GenError> {
    let known: Vec<String> = specs
        .iter()
        .flat_map(|s| s.frameworks.keys().cloned())
        .collect();
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

/// Checks that every selected framework has a module template.
fn check_templates(
    specs: &[Spec],
    templates: &Templates,
    selected: &[String],
) -> Result<(), GenError> {
    let names: BTreeSet<&str> = templates.names().collect();
    let keys = specs.iter().flat_map(|s| s.frameworks.keys());
    for key in keys.filter(|k| selected.is_empty() || selected.contains(k)) {
        let name = format!("python/{key}.py.tera");
        if !names.contains(name.as_str()) {
            return Err(GenError::MissingTemplate { name });
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
