//! Bad configuration, templates and input fail with messages that say where
//! and what, and leave the project as it was.

use crate::support::{bin, built_example, fails, ok, write};

#[test]
fn config_errors_name_file_key_and_problem() {
    let dir = built_example("microsites");
    let config = dir.path().join("sesame.toml");
    let original = std::fs::read_to_string(&config).expect("read");

    std::fs::write(&config, original.replace("order = \"title\"", "order = \"alphabetical\"")).expect("write");
    let err = fails(dir.path(), &["build"]);
    assert!(err.contains("sesame.toml: routes[1].order: unknown variant `alphabetical`"), "{err}");
    assert!(err.contains("(line "), "{err}");

    std::fs::write(
        &config,
        original.replace("collection = \"sites\"\npath = \"/sites/\"", "collection = \"blogs\"\npath = \"/sites/\""),
    )
    .expect("write");
    let err = fails(dir.path(), &["build"]);
    assert!(err.contains("routes[1].collection: unknown collection \"blogs\" (declared: sites)"), "{err}");

    std::fs::write(&config, "base_url = \"https://example.org\"\n[[routes]]\nkind = \"page\"\n").expect("write");
    let err = fails(dir.path(), &["build"]);
    assert!(err.contains("routes[0].path: required for kind = \"page\""), "{err}");
}

#[test]
fn template_errors_name_template_line_and_document() {
    let dir = built_example("microsites");
    write(dir.path(), "templates/site.html", "<h1>{{ doc.name }}</h1>\n<p>\n{{ doc.name.first.letter }}\n</p>\n");
    let err = fails(dir.path(), &["build"]);
    assert!(err.contains("template site.html line 3 rendering /"), "{err}");
    assert!(err.contains("(document sites/"), "{err}");

    write(dir.path(), "templates/site.html", "{% if %}\n");
    let err = fails(dir.path(), &["build"]);
    assert!(err.contains("template site.html line 1 while compiling: syntax error"), "{err}");
}

#[test]
fn import_errors_name_the_line_and_change_nothing() {
    let dir = built_example("microsites");
    let before = ok(dir.path(), &["build"]);
    assert!(before.contains(" 0 changed"), "{before}");
    let cases = [
        ("{\"id\": \"zed\", \"name\": \"Zed\"}\nnot json\n", "line 2: not valid JSON"),
        ("{\"name\": \"no id\"}\n", "line 1: missing \"id\""),
        ("\n{\"id\": \"../etc\", \"name\": \"x\"}\n", "line 2: id \"../etc\" must not start with '.'"),
        ("{\"id\": \"a/b\"}\n", "line 1: id \"a/b\" must not contain '/'"),
        ("{\"id\": \"a b\"}\n", "line 1: id \"a b\" must not contain ' '"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ("{\"id\": \"zed\", \"name\": 7}\n", "line 1: /name: must be a string (the title)"),
        ("{\"id\": \"zed\", \"sections\": [{\"body\": 1}]}\n", "line 1: /sections/0/body"),
    ];
    for (content, message) in cases {
        let file = write(dir.path(), "bad.ndjson", content);
        let err = fails(dir.path(), &["import", file.to_str().expect("utf-8"), "--collection", "sites"]);
        assert!(err.contains(message), "{content:?}: {err}");
    }
    let file = write(dir.path(), "good.ndjson", "{\"id\": \"zed\"}\n");
    let err = fails(dir.path(), &["import", file.to_str().expect("utf-8"), "--collection", "blogs"]);
    assert!(err.contains("unknown collection \"blogs\" (sesame.toml declares: sites)"), "{err}");
    // The first line of the first case was valid, but nothing was kept.
    let after = ok(dir.path(), &["build"]);
    assert!(after.contains(" 0 changed"), "{after}");
}

/// Regression: a build's warnings written to a file or a pipe carried ANSI
/// colour codes.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = built_example("microsites");
    let out = std::process::Command::new(bin())
        .arg("--project")
        .arg(dir.path())
        .arg("build")
        .env("SESAME_LOG", "debug")
        .output()
        .expect("run sesame");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !logs.is_empty(), "{logs}");
    assert!(!logs.contains('\u{1b}'), "escape codes in a piped log: {logs:.400}");
}

/// Regression: `apply` kept the publish lease when a line failed, so the
/// next publish waited 15 s for it to expire (`moderate` gives it back the
/// same way).
#[test]
fn a_failed_apply_gives_the_publish_lease_back() {
    let dir = built_example("microsites");
    let bad = write(dir.path(), "bad.ndjson", "{\"op\": \"put\", \"collection\": \"sites\"}\nnot json\n");
    let err = fails(dir.path(), &["apply", bad.to_str().expect("utf-8")]);
    assert!(err.contains("line 1"), "{err}");
    let started = std::time::Instant::now();
    ok(dir.path(), &["build"]);
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(5), "the next build waited {waited:?} for the lease");
}
