//! The OpenAPI document against an API fuzzer: schemathesis, with every
//! check on, for a bounded time, once with an account's token and once with
//! the admin token. It must find nothing: no 5xx, no status or body the
//! document does not describe, no schema-valid request refused or invalid one
//! accepted.
//!
//! What a schema cannot spell out is given to it in a hooks module: real
//! images for uploads, and the reference of an uploaded image for fields of
//! `format: media`.
//!
//! schemathesis comes from `SESAME_TEST_SCHEMATHESIS` (scripts/test installs
//! it from `scripts/fuzz/requirements.txt` into `target/schemathesis`).

use std::path::PathBuf;
use std::process::Command;

use crate::support::{ADMIN, Api, Server, image_bytes, microsites_with, ok, quick};

/// Seconds each fuzzer runs (`SESAME_TEST_FUZZ_SECONDS`, default 45).
fn budget() -> String {
    std::env::var("SESAME_TEST_FUZZ_SECONDS").unwrap_or_else(|_| "45".into())
}

fn schemathesis() -> PathBuf {
    let path = std::env::var("SESAME_TEST_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis/bin/schemathesis")
    });
    assert!(
        path.is_file(),
        "{} is missing: scripts/test installs schemathesis (python3 -m venv target/schemathesis && \
         target/schemathesis/bin/pip install -r scripts/fuzz/requirements.txt), or point SESAME_TEST_SCHEMATHESIS at one",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openapi_fuzzer_finds_nothing_with_an_account_or_the_admin_token() {
    let fuzzer = schemathesis();
    // Limits high enough that the fuzzer reaches the logic behind them.
    let dir = microsites_with(|c| {
        quick(c).replace(
            "max_updates_per_hour = 600",
            "max_updates_per_hour = 1000000\nsignups_per_hour = 1000000\ninvalidations_per_hour = 1000000\n\
             status_reads_per_minute = 1000000",
        )
    });
    let server = Server::start_with(dir.path(), &[("SESAME_ADMIN_TOKEN", ADMIN)], "127.0.0.1:0");
    let api = Api::new(&server);
    let token = api.sign_up("fuzzer").await;
    // The account's run works on its own site; the admin's on any.
    let config = dir.path().join("schemathesis-user.toml");
    std::fs::write(&config, "[parameters]\nhandle = \"fuzzer\"\n").expect("write fuzzer config");
    // Valid data the schema cannot spell out: images for uploads, and the
    // references of images the account uploaded for `format: media` fields.
    let mut images = Vec::new();
    for (format, content_type) in [
        (image::ImageFormat::Png, "image/png"),
        (image::ImageFormat::Jpeg, "image/jpeg"),
        (image::ImageFormat::Gif, "image/gif"),
        (image::ImageFormat::WebP, "image/webp"),
    ] {
        images.push((content_type, image_bytes(format, 12, 9)));
    }
    let r = api
        .http
        .post(server.url("/api/media"))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(images[0].1.clone())
        .send()
        .await
        .expect("upload");
    let uploaded: serde_json::Value = r.json().await.expect("json");
    let reference = uploaded["ref"].as_str().expect("ref").to_string();
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut hooks = format!(
        "{FUZZER_PATCH}import schemathesis\nfrom hypothesis import strategies as st\n\n\
         schemathesis.openapi.format('media', st.just('REF'))\n\n{MEDIA_BY_FORMAT}"
    )
    .replace("REF", &reference);
    for (content_type, bytes) in &images {
        hooks.push_str(&format!(
            "schemathesis.openapi.media_type('{content_type}', st.just(bytes.fromhex('{}')))\n",
            hex(bytes)
        ));
    }
    // An archive to import: the fuzzer's own site.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let site = br#"{"id": "fuzzer", "name": "Fuzzed"}"#;
    let mut header = tar::Header::new_gnu();
    header.set_size(site.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "documents/sites.ndjson", &site[..]).expect("append");
    let archive = tar.into_inner().expect("tar").finish().expect("gzip");
    hooks.push_str(&format!(
        "schemathesis.openapi.media_type('application/gzip', st.just(bytes.fromhex('{}')))\n",
        hex(&archive)
    ));
    std::fs::write(dir.path().join("sesame_fuzz_hooks.py"), hooks).expect("write hooks");
    let spec = server.url("/api/openapi.json");
    let runs: Vec<_> = [("account", token.as_str(), Some(&config)), ("admin", ADMIN, None)]
        .into_iter()
        .map(|(who, token, config)| {
            let mut command = Command::new(&fuzzer);
            command
                .env("NO_COLOR", "1")
                .env("SCHEMATHESIS_HOOKS", "sesame_fuzz_hooks")
                .env("PYTHONPATH", dir.path())
                .current_dir(dir.path());
            if let Some(config) = config {
                command.arg("--config-file").arg(config);
            }
            command.args(["run", &spec, "--url", &server.base, "--checks", "all", "--workers", "1", "--seed", "1"]);
            command.args(["--max-time", &budget(), "-H", &format!("Authorization: Bearer {token}")]);
            (who, std::thread::spawn(move || command.output().expect("run schemathesis")))
        })
        .collect();
    for (who, run) in runs {
        let out = run.join().expect("fuzzer thread");
        let report = String::from_utf8_lossy(&out.stdout);
        // Warnings (such as operations it could rarely reach) are not findings.
        let clean = out.status.success() && !report.contains("FAILURES") && !report.contains("ERRORS");
        assert!(
            clean,
            "the fuzzer with the {who} token found problems:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(server);
    assert!(ok(dir.path(), &["verify"]).contains("identical"), "whatever the fuzzer wrote publishes with parity");
}

/// Works around a crash of the pinned schemathesis (4.32.5): after a 2xx JSON
/// response it looks for links in every string of the body, and a stored URL
/// such as `http://[` (which the sites schema allows) makes Python's
/// `urlsplit` raise, ending the run with "An internal error occurred". Such a
/// string is not a link; the patch makes it count as none.
/// Image fields carry the `HASH.EXT` pattern, from which the fuzzer would
/// make up references to images nobody uploaded (refused, rightly, with 422):
/// it is to use the format's strategy above, the account's own upload.
const MEDIA_BY_FORMAT: &str = "\
def _by_format(node):
    if isinstance(node, dict):
        if node.get('format') == 'media':
            node.pop('pattern', None)
        for value in node.values():
            _by_format(value)
    elif isinstance(node, list):
        for value in node:
            _by_format(value)


@schemathesis.hook
def before_load_schema(context, raw_schema):
    _by_format(raw_schema)
";

const FUZZER_PATCH: &str = "\
import schemathesis.engine.observations as _observations

_same_origin_path = _observations._same_origin_path


def _same_origin_path_or_none(value, origin):
    try:
        return _same_origin_path(value, origin)
    except ValueError:
        return None


_observations._same_origin_path = _same_origin_path_or_none
";
