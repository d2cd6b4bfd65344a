//! Embeds every file under the workspace's `templates/` folder into the library: the `*.tera`
//! templates and the plain files copied as they are (e.g. `python/checkpoints.py`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    // Read at run time: a build script binary reused from another checkout (a copied target/)
    // must embed this checkout's templates, not those of the folder it was compiled in.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("../../templates");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut out = String::from("/// Bundled templates as (path relative to `templates/`, text).\npub const BUNDLED_TEMPLATES: &[(&str, &str)] = &[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let rel = file
            .strip_prefix(&root)
            .expect("under templates/")
            .to_string_lossy()
            .replace('\\', "/");
        let abs = file.canonicalize().expect("template path");
        writeln!(
            out,
            "    ({rel:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("bundled_templates.rs");
    std::fs::write(dest, out).expect("write bundled_templates.rs");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden files, Python's byte-code caches and editor backups are not templates (a stray
        // `__pycache__` from running a plain glue file in place would not even be UTF-8).
        let skipped = name.starts_with('.')
            || name == "__pycache__"
            || name.ends_with(".pyc")
            || name.ends_with('~');
        if skipped {
            continue;
        }
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
