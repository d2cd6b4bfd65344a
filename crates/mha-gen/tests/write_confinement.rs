//! Nothing outside the output folder is ever written: output paths are checked, links planted in
//! the output folder are replaced or refused, never written through.

use std::os::unix::fs::symlink;

use mha_gen::{write_all, write_if_changed, GeneratedFile, WriteOutcome};

fn file(path: &str) -> GeneratedFile {
    GeneratedFile {
        path: path.into(),
        contents: "generated\n".into(),
    }
}

#[test]
fn paths_that_leave_the_output_folder_are_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let out = root.path().join("out");
    for path in [
        "../x.rst",
        "docs/../../x.rst",
        "/tmp/x.rst",
        "docs/./x.rst",
        "",
        "docs//x.rst",
        "docs\\..\\x.rst",
        "C:x.rst",
        "docs/x\n.rst",
    ] {
        let err = write_all(&out, &[file(path)]).expect_err(path);
        assert!(
            err.to_string().contains("inside the output folder"),
            "{path}: {err}"
        );
    }
    // Refused before anything was made: not even the output folder exists.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn a_link_at_the_temporary_name_is_never_followed() {
    let root = tempfile::tempdir().expect("temp dir");
    let (out, victim) = (root.path().join("out"), root.path().join("victim.txt"));
    std::fs::create_dir_all(out.join("docs")).unwrap();
    std::fs::write(&victim, "precious").unwrap();
    // The old temporary name, and any name in the folder, pointing outside.
    symlink(&victim, out.join("docs/X.mha-gen-tmp")).unwrap();
    for entry in ["docs/.X.rst.tmp", "docs/X.rst.tmp"] {
        symlink(&victim, out.join(entry)).unwrap();
    }
    write_all(&out, &[file("docs/X.rst")]).expect("write");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        std::fs::read_to_string(out.join("docs/X.rst")).unwrap(),
        "generated\n"
    );
}

#[test]
fn a_link_at_the_target_is_replaced_not_written_through() {
    let root = tempfile::tempdir().expect("temp dir");
    let (out, victim) = (root.path().join("out"), root.path().join("victim.txt"));
    std::fs::create_dir_all(out.join("docs")).unwrap();
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, out.join("docs/X.rst")).unwrap();
    let outcomes = write_all(&out, &[file("docs/X.rst")]).expect("write");
    assert_eq!(outcomes[0].1, WriteOutcome::Updated);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(out.join("docs/X.rst")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the page is a file again, not a link"
    );
}

#[test]
fn a_folder_linked_out_of_the_output_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let (out, elsewhere) = (root.path().join("out"), root.path().join("elsewhere"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    symlink(&elsewhere, out.join("docs")).unwrap();
    let err = write_all(&out, &[file("docs/X.rst")]).expect_err("a linked folder");
    assert!(err.to_string().contains("link out of it"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn unchanged_files_are_not_touched_and_no_temporary_file_is_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a.txt");
    assert_eq!(write_if_changed(&path, "x").unwrap(), WriteOutcome::Created);
    assert_eq!(
        write_if_changed(&path, "x").unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(write_if_changed(&path, "y").unwrap(), WriteOutcome::Updated);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.txt"]);
}
