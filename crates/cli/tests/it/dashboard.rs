//! The dashboard over real HTTP, as a browser without JavaScript uses it:
//! forms, cookies and redirects. What an attacker tries: forms without their
//! token, another account's site, a stolen session after logout, password
//! guessing, and secrets in the log. (The browser test drives the same pages
//! in Chromium, with and without JavaScript.)

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

use crate::support::*;

/// A browser without JavaScript: keeps cookies, follows nothing by itself.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
    /// Extra headers sent with every request.
    forwarded_https: bool,
}

/// A response as a test looks at it.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    /// The value of the first `csrf` input on the page.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no form token in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }

    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The `Set-Cookie` header that sets `name`.
    fn set_cookie(&self, name: &str) -> String {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie set"))
            .to_string()
    }
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser { http: client(), base: server.base.clone(), cookies: BTreeMap::new(), forwarded_https: false }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut request = request.header("cookie", cookie.join("; "));
        if self.forwarded_https {
            request = request.header("x-forwarded-proto", "https");
        }
        let r = request.send().await.expect("request");
        let headers = r.headers().clone();
        for c in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let pair = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        Page { status: r.status(), headers, body: r.text().await.expect("body") }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.http.get(format!("{}{path}", self.base));
        self.send(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(r).await
    }

    async fn post_multipart(&mut self, path: &str, form: reqwest::multipart::Form) -> Page {
        let r = self.http.post(format!("{}{path}", self.base)).multipart(form);
        self.send(r).await
    }

    /// Signs up through the form; returns the landing page's redirect.
    async fn sign_up(&mut self, handle: &str, password: &str) -> Page {
        let csrf = self.get("/_/signup").await.csrf();
        self.post("/_/signup", &[("csrf", &csrf), ("handle", handle), ("password", password)]).await
    }

    async fn log_in(&mut self, handle: &str, password: &str) -> Page {
        let csrf = self.get("/_/login").await.csrf();
        self.post("/_/login", &[("csrf", &csrf), ("handle", handle), ("password", password)]).await
    }

    /// Saves the site form with these fields (multipart, as the page does).
    async fn save(&mut self, handle: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(&format!("/_/sites/{handle}")).await.csrf();
        let mut form = reqwest::multipart::Form::new().percent_encode_noop().text("csrf", csrf).text("_action", "save");
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        self.post_multipart(&format!("/_/sites/{handle}"), form).await
    }

    /// Follows a save's redirect until the page says it is published.
    async fn until_published(&mut self, location: &str) -> Page {
        let this = tokio::sync::Mutex::new(self);
        eventually("the change is published", || async {
            let page = this.lock().await.get(location).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            assert!(!page.body.contains("status-failed"), "{}", page.body);
            if page.body.contains("status-published") { Ok(page) } else { Err(page.body) }
        })
        .await
    }
}

fn platform() -> TestProject {
    microsites_with(|c| quick(c).replace("access = \"everyone\"", "access = \"everyone\"\nlogins_per_hour = 3"))
}

#[tokio::test]
async fn a_site_is_signed_up_for_edited_and_rolled_back_without_javascript() {
    let project = platform();
    let server = Server::in_process(project.path());
    let mut ann = Browser::new(&server);
    let landing = ann.sign_up("ann", "a long password").await;
    assert_eq!((landing.status, landing.location()), (StatusCode::SEE_OTHER, "/_/sites/ann"));

    let saved = ann.save("ann", &[("/name", "Corner of Ann"), ("/links/0/url", "https://ann.example")]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = ann.until_published(saved.location()).await;
    assert!(page.body.contains("See it live at &#x2f;ann&#x2f;"), "{}", page.body);
    let public = client().get(server.url("/ann/")).send().await.expect("get").text().await.expect("body");
    assert!(public.contains("Corner of Ann"), "{public}");

    // Errors land beside the field they name, and nothing is written.
    let refused = ann.save("ann", &[("/name", "Ann"), ("/links/0/url", "ftp://nope")]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("id=\"f-links-0-url-error\""), "{}", refused.body);
    assert!(refused.body.contains("aria-invalid=\"true\" aria-describedby=\"f-links-0-url-error\""));

    // A list edit re-renders the draft without saving it.
    let csrf = ann.get("/_/sites/ann").await.csrf();
    let form = reqwest::multipart::Form::new()
        .percent_encode_noop()
        .text("csrf", csrf)
        .text("_action", "add:/links")
        .text("/name", "Draft name")
        .text("/links/0/url", "https://ann.example");
    let draft = ann.post_multipart("/_/sites/ann", form).await;
    assert_eq!(draft.status, StatusCode::OK);
    assert!(draft.body.contains("name=\"&#x2f;links&#x2f;1&#x2f;url\""), "a second, empty link");
    assert!(draft.body.contains("Not saved yet"));

    let second = ann.save("ann", &[("/name", "Ann, renamed")]).await;
    ann.until_published(second.location()).await;
    let history = ann.get("/_/sites/ann/history").await;
    // What a rollback brings back, field by field.
    assert!(history.body.contains("differ from now"), "{}", history.body);
    assert!(history.body.contains("now: Ann, renamed; then: Corner of Ann"), "{}", history.body);
    let first_generation = history
        .body
        .split("name=\"generation\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a version to roll back to")
        .to_string();
    let csrf = history.csrf();
    let rolled =
        ann.post("/_/sites/ann/rollback", &[("csrf", csrf.as_str()), ("generation", first_generation.as_str())]).await;
    assert_eq!(rolled.status, StatusCode::SEE_OTHER, "{}", rolled.body);
    ann.until_published(rolled.location()).await;
    let public = client().get(server.url("/ann/")).send().await.expect("get").text().await.expect("body");
    assert!(public.contains("Corner of Ann"), "the first version is back: {public}");
}

#[tokio::test]
async fn forms_without_their_token_are_refused() {
    let project = platform();
    let server = Server::in_process(project.path());
    let mut ann = Browser::new(&server);
    // Sign-up: no token, another browser's token, no cookie at all.
    ann.get("/_/signup").await;
    let missing = ann.post("/_/signup", &[("handle", "ann"), ("password", "a long password")]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let other = Browser::new(&server).get("/_/signup").await.csrf();
    let wrong = ann.post("/_/signup", &[("csrf", &other), ("handle", "ann"), ("password", "a long password")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(ann.sign_up("ann", "a long password").await.status, StatusCode::SEE_OTHER);

    // Signed in: a save, a rollback, a token, a logout without the session's token.
    let form = reqwest::multipart::Form::new().percent_encode_noop().text("_action", "save").text("/name", "forged");
    assert_eq!(ann.post_multipart("/_/sites/ann", form).await.status, StatusCode::FORBIDDEN);
    let form =
        reqwest::multipart::Form::new().percent_encode_noop().text("csrf", other.clone()).text("/name", "forged");
    assert_eq!(ann.post_multipart("/_/sites/ann", form).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ann.post("/_/sites/ann/rollback", &[("generation", "1")]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ann.post("/_/tokens", &[("csrf", &other), ("label", "x")]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ann.post("/_/logout", &[("csrf", "")]).await.status, StatusCode::FORBIDDEN);
    let upload = ann.http.post(server.url("/_/media")).header("x-csrf-token", &other).body(vec![0u8; 10]);
    assert_eq!(ann.send(upload).await.status, StatusCode::FORBIDDEN);
    let edit = ann.get("/_/sites/ann").await;
    assert!(!edit.body.contains("forged"), "nothing was saved");
    let public = client().get(server.url("/ann/")).send().await.expect("get");
    assert_eq!(public.status(), StatusCode::NOT_FOUND, "nothing was published");
}

#[tokio::test]
async fn session_cookies_are_http_only_lax_and_secure_behind_https() {
    let project = platform();
    let server = Server::in_process(project.path());
    let mut plain = Browser::new(&server);
    let cookie = plain.sign_up("ann", "a long password").await.set_cookie("sesame_session");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/_/"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "a plain-HTTP site cannot use Secure cookies: {cookie}");
    let value = cookie.split(';').next().and_then(|p| p.split_once('=')).map(|(_, v)| v).expect("value");
    assert_eq!(value.len(), 64, "256 random bits");

    let mut behind_tls = Browser::new(&server);
    behind_tls.forwarded_https = true;
    let cookie = behind_tls.sign_up("bob", "a long password").await.set_cookie("sesame_session");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let mut anonymous = Browser::new(&server);
    anonymous.forwarded_https = true;
    assert!(anonymous.get("/_/login").await.set_cookie("sesame_csrf").contains("; Secure"));

    // Dashboard pages: never cached by a CDN, never indexed, the site's CSP.
    let page = plain.get("/_/sites/ann").await;
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-robots-tag"], "noindex, nofollow");
    let csp = page.headers["content-security-policy"].to_str().expect("ascii");
    let script_src = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).expect("script-src");
    assert_eq!(script_src, "script-src 'self'", "no inline script: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let sitemap = client().get(server.url("/sitemap.xml")).send().await.expect("get").text().await.expect("body");
    assert!(!sitemap.contains("/_/"), "{sitemap}");
}

#[tokio::test]
async fn logout_ends_a_stolen_session_and_passwords_are_guessed_slowly() {
    let project = platform();
    let server = Server::in_process(project.path());
    let mut ann = Browser::new(&server);
    ann.sign_up("ann", "a long password").await;
    let mut thief = Browser::new(&server);
    thief.cookies = ann.cookies.clone();
    assert_eq!(thief.get("/_/sites/ann").await.status, StatusCode::OK, "a copied cookie works until…");
    let csrf = ann.get("/_/sites/ann").await.csrf();
    let out = ann.post("/_/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/_/login"));
    let after = thief.get("/_/sites/ann").await;
    assert_eq!((after.status, after.location()), (StatusCode::SEE_OTHER, "/_/login"), "…its session ends");

    // "Sign out everywhere" ends every session of the account.
    let mut phone = Browser::new(&server);
    assert_eq!(phone.log_in("ann", "a long password").await.status, StatusCode::SEE_OTHER);
    let mut laptop = Browser::new(&server);
    laptop.log_in("ann", "a long password").await;
    let csrf = laptop.get("/_/tokens").await.csrf();
    laptop.post("/_/logout", &[("csrf", &csrf), ("everywhere", "1")]).await;
    assert_eq!(phone.get("/_/sites/ann").await.status, StatusCode::SEE_OTHER);

    // Guessing: three sign-ins an hour per address and per handle (this
    // test's setting; two were the phone and the laptop), then 429.
    let mut guesser = Browser::new(&server);
    let wrong = guesser.log_in("ann", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("do not match"), "{}", wrong.body);
    let limited = guesser.log_in("ann", "a long password").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "the right password does not help now");
    assert!(limited.body.contains("Too many sign-in attempts. Try again in"), "{}", limited.body);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn another_account_can_neither_see_nor_change_a_site() {
    let project = platform();
    let server = Server::in_process(project.path());
    let mut ann = Browser::new(&server);
    ann.sign_up("ann", "a long password").await;
    let saved = ann.save("ann", &[("/name", "Ann")]).await;
    let change = saved.location().rsplit('=').next().expect("change id").to_string();
    let mut bob = Browser::new(&server);
    bob.sign_up("bob", "another long password").await;

    for path in ["/_/sites/ann", "/_/sites/ann/history"] {
        let page = bob.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!page.body.contains("Ann"), "{path} shows nothing of ann's");
    }
    let csrf = bob.get("/_/sites/bob").await.csrf();
    let form = reqwest::multipart::Form::new().percent_encode_noop().text("csrf", csrf.clone()).text("/name", "pwned");
    assert_eq!(bob.post_multipart("/_/sites/ann", form).await.status, StatusCode::FORBIDDEN);
    let form = reqwest::multipart::Form::new().percent_encode_noop().text("csrf", csrf.clone()).text("/name", "pwned");
    assert_eq!(bob.post_multipart("/_/sites/ann/preview", form).await.status, StatusCode::FORBIDDEN);
    let rollback = bob.post("/_/sites/ann/rollback", &[("csrf", &csrf), ("generation", "1")]).await;
    assert_eq!(rollback.status, StatusCode::FORBIDDEN);
    assert_eq!(bob.get(&format!("/_/changes/{change}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(bob.get("/_/admin").await.status, StatusCode::FORBIDDEN, "the console is for admins");

    // Through the API, with a token bob makes in the dashboard.
    let made = bob.post("/_/tokens", &[("csrf", &csrf), ("label", "script")]).await;
    assert_eq!(made.status, StatusCode::CREATED);
    let token = made
        .body
        .split("id=\"new-token\" class=\"code\" readonly value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the token, shown once")
        .to_string();
    let api = Api::new(&server);
    assert_eq!(api.put_site(&token, "ann", "pwned").await.status(), StatusCode::FORBIDDEN);
    assert_eq!(api.put_site(&token, "bob", "Bob").await.status(), StatusCode::ACCEPTED, "its own site");
    let tokens = bob.get("/_/tokens").await;
    assert!(!tokens.body.contains(&token), "shown only once");
    let hash = tokens.body.split("name=\"hash\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("hash");
    let hash = hash.to_string();
    assert_eq!(bob.post("/_/tokens/revoke", &[("csrf", &csrf), ("hash", &hash)]).await.status, StatusCode::SEE_OTHER);
    assert_eq!(api.put_site(&token, "bob", "Bob").await.status(), StatusCode::UNAUTHORIZED, "revoked");
    let ann_csrf = ann.get("/_/tokens").await.csrf();
    let theirs = ann.post("/_/tokens/revoke", &[("csrf", &ann_csrf), ("hash", &hash)]).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "a token is revoked by its owner only");

    let edit = ann.get("/_/sites/ann").await;
    assert!(edit.body.contains("value=\"Ann\""), "ann's site is untouched: {}", edit.body);
}

#[tokio::test]
async fn the_log_holds_no_password_cookie_or_form_token() {
    let project = platform();
    let log = project.path().join("serve.log");
    let server = Server::logged(project.path(), &[("SESAME_LOG", "debug")], &log);
    let mut ann = Browser::new(&server);
    let password = "a very secret passphrase";
    ann.sign_up("ann", password).await;
    Browser::new(&server).log_in("ann", "a wrong guess at it").await;
    let session = ann.cookies["sesame_session"].clone();
    let saved = ann.save("ann", &[("/name", "Ann")]).await;
    ann.until_published(saved.location()).await;
    let csrf = ann.get("/_/sites/ann").await.csrf();
    ann.post("/_/logout", &[("csrf", &csrf)]).await;
    server.terminate();
    let text = std::fs::read_to_string(&log).expect("read the log");
    assert!(text.len() > 1000, "the debug log says something: {text}");
    for secret in [password, "a wrong guess at it", &session, &csrf] {
        assert!(!text.contains(secret), "{secret:?} is in the log");
    }
}

#[tokio::test]
async fn an_admin_only_dashboard_moderates_and_takes_a_site_down() {
    let project = microsites_with(|c| quick(c).replace("access = \"everyone\"", "access = \"admins\""));
    let dir = project.path();
    ok(dir, &["accounts", "create", "--admin", "root"]);
    let set = std::process::Command::new(bin())
        .args(["--project", dir.to_str().expect("utf-8"), "accounts", "password", "root"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b"root password here\n")?;
            child.wait_with_output()
        })
        .expect("set the password");
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stdout));
    let server = Server::in_process(dir);
    let api = Api::new(&server);
    let token = api.sign_up("ann").await;
    let change = change_id(&api.put_site(&token, "ann", "Ann").await.json().await.expect("json"));
    api.published(&token, change).await;

    let mut stranger = Browser::new(&server);
    assert_eq!(stranger.get("/_/signup").await.status, StatusCode::NOT_FOUND, "no sign-up");
    let mut root = Browser::new(&server);
    let landing = root.log_in("root", "root password here").await;
    assert_eq!((landing.status, landing.location()), (StatusCode::SEE_OTHER, "/_/admin"));
    let console = root.get("/_/admin?q=ann").await;
    assert!(console.body.contains("value=\"sites&#x2f;ann\""), "{}", console.body);
    let csrf = console.csrf();
    let done =
        root.post("/_/admin", &[("csrf", &csrf), ("_action", "takedown"), ("doc", "sites/ann"), ("q", "ann")]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(root.get(done.location()).await.body.contains("1 changed"));
    eventually("/ann/ answers 410", || async {
        let status = client().get(server.url("/ann/")).send().await.expect("get").status();
        if status == StatusCode::GONE { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    let console = root.get("/_/admin?q=ann").await;
    assert!(console.body.contains("taken down"), "{}", console.body);
    assert!(console.body.contains("changes waiting to be published"));
}

#[tokio::test]
async fn drafts_the_schedule_and_the_export_work_without_javascript() {
    let project = platform();
    let server = Server::in_process(project.path());
    let public = || async { client().get(server.url("/ann/")).send().await.expect("get").text().await.expect("body") };
    let mut ann = Browser::new(&server);
    ann.sign_up("ann", "a long password").await;
    let saved = ann.save("ann", &[("/name", "Ann Published")]).await;
    ann.until_published(saved.location()).await;

    // Saved as a draft: the form shows it, the site does not.
    let csrf = ann.get("/_/sites/ann").await.csrf();
    let form = reqwest::multipart::Form::new()
        .percent_encode_noop()
        .text("csrf", csrf)
        .text("_action", "draft")
        .text("/name", "Ann Drafted");
    let drafted = ann.post_multipart("/_/sites/ann", form).await;
    assert_eq!((drafted.status, drafted.location()), (StatusCode::SEE_OTHER, "/_/sites/ann?drafted=1"));
    let page = ann.get("/_/sites/ann?drafted=1").await;
    assert!(page.body.contains("You are editing a draft saved"), "{}", page.body);
    assert!(page.body.contains("value=\"Ann Drafted\""), "the form edits the draft");
    assert!(page.body.contains("id=\"export\""), "the export link");
    assert!(public().await.contains("Ann Published") && !public().await.contains("Ann Drafted"));

    // Another account can neither publish nor schedule it.
    let mut bob = Browser::new(&server);
    bob.sign_up("bob", "another long password").await;
    let csrf = bob.get("/_/sites/bob").await.csrf();
    for path in ["/_/sites/ann/draft/publish", "/_/sites/ann/draft/discard", "/_/sites/ann/schedule"] {
        let page = bob.post(path, &[("csrf", csrf.as_str()), ("publish_at", "2099-01-01T00:00")]).await;
        assert!(page.status.is_client_error(), "{path} as bob: {}", page.status);
    }
    assert_eq!(bob.get("/_/sites/ann/export").await.status, StatusCode::FORBIDDEN);

    // A schedule in the past is refused, a later one kept and shown.
    let csrf = page.csrf();
    let past = ann.post("/_/sites/ann/schedule", &[("csrf", csrf.as_str()), ("publish_at", "2001-01-01T09:00")]).await;
    assert_eq!(past.status, StatusCode::CONFLICT);
    assert!(past.body.contains("in the past"), "{}", past.body);
    let next_year =
        sesame_model::time::rfc3339((sesame_model::time::now() / 60 + 365 * 24 * 60) * 60)[..16].to_string();
    let set = ann.post("/_/sites/ann/schedule", &[("csrf", csrf.as_str()), ("publish_at", &next_year)]).await;
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{}", set.body);
    let page = ann.get(set.location()).await;
    assert!(page.body.contains(&format!("value=\"{next_year}\"")), "{}", page.body);
    assert!(page.body.contains(&format!("until {} UTC", next_year.replace('T', " "))));

    // The archive downloads with the session.
    let archive = ann.http.get(server.url("/_/sites/ann/export"));
    let cookie: Vec<String> = ann.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let r = archive.header("cookie", cookie.join("; ")).send().await.expect("export");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/gzip");

    // Published now: the site shows it and the draft is gone.
    let published = ann.post("/_/sites/ann/draft/publish", &[("csrf", csrf.as_str())]).await;
    assert_eq!(published.status, StatusCode::SEE_OTHER, "{}", published.body);
    let page = ann.until_published(published.location()).await;
    assert!(!page.body.contains("You are editing a draft"));
    assert!(public().await.contains("Ann Drafted"));
}
