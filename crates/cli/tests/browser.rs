//! The dashboard in a real browser: `e2e/dashboard.mjs` drives Debian's
//! Chromium through Playwright against a real `sesame serve` of the
//! micro-site example started here. The test command installs Chromium and
//! the Node packages (`npm ci` in `e2e/`); without them this test fails,
//! saying what is missing.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("workspace root")
}

#[test]
fn the_dashboard_works_end_to_end_in_chromium() {
    let e2e = workspace().join("e2e");
    let chromium = std::env::var("SESAME_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's `chromium` (scripts/test does) or set SESAME_CHROMIUM"
    );
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "the browser test's Node packages are missing: run `npm ci --prefix e2e` (scripts/test does)"
    );

    // The DNS the platform's custom-domain checks ask, whose answers the script sets.
    let dns = sesame_testkit::FakeDns::start();
    let domains = format!(
        "\n[domains]\ncname_target = \"sites.platform.test\"\nresolver = \"{}\"\ncheck_seconds = 1\n",
        dns.addr
    );
    let project = microsites_with(|c| quick(c).replace("quiet_ms = 300", "quiet_ms = 100") + &domains);
    let dir = project.path();
    ok(dir, &["accounts", "create", "--admin", "root"]);
    let mut set = Command::new(bin())
        .args(["--project", dir.to_str().expect("utf-8"), "accounts", "password", "root"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run sesame accounts password");
    std::io::Write::write_all(&mut set.stdin.take().expect("stdin"), b"the root password\n").expect("write");
    assert!(set.wait().expect("wait").success(), "set the admin's password");
    let avatar = dir.join("avatar.png");
    std::fs::write(&avatar, image_bytes(image::ImageFormat::Png, 96, 96)).expect("write the avatar");
    let shots = std::env::var("SESAME_SCREENSHOTS").unwrap_or_else(|_| dir.join("screenshots").display().to_string());

    let server = Server::start(dir);
    let out = Command::new("node")
        .arg(e2e.join("dashboard.mjs"))
        .env("SESAME_BASE", &server.base)
        .env("SESAME_ADMIN", "root")
        .env("SESAME_ADMIN_PASSWORD", "the root password")
        .env("SESAME_AVATAR", &avatar)
        .env("SESAME_DNS_MANAGEMENT", &dns.management)
        .env("SESAME_SCREENSHOTS", &shots)
        .env("SESAME_CHROMIUM", &chromium)
        .output()
        .expect("run node (install Node.js: scripts/test does)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("dashboard end to end: ok"), "{stdout}");
    println!("{stdout}");
}
