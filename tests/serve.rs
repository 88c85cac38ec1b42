//! Issue 15, the foundation: `dockmaster serve`'s security model, its read-only pages and
//! its JSON API, driven with plain HTTP requests against the real binary.

use std::os::unix::fs::PermissionsExt;

use crate::support::serve::{csrf_of, request, serve};
use crate::support::{Behaviour, Fixture};

#[test]
fn serve_token_login_host_allowlist_csrf_and_login_rate_limit() {
    let fx = Fixture::new("servesec");
    let s = serve(&fx, "127.0.0.1:0");
    assert!(!s.said.contains("not a loopback"), "{}", s.said);

    // The token: at least 128 bits, in serve.token, mode 0600.
    assert!(s.token.len() >= 32, "{}", s.token);
    let path = fx.state.join("serve.token");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), s.token);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // No session: pages send to the login page, the API says 401.
    let r = s.get("/", None);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("Location"), Some("/login"));
    assert_eq!(s.get("/releases", None).status, 303);
    let r = s.get("/api/status", None);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("log in"));
    assert_eq!(s.get("/api/openapi.json", None).status, 401);
    let r = s.get("/login", None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("login?token="), "{}", r.body);
    assert!(!r.body.contains(&s.token));

    // A name that is not allowed: refused, even with the right token (DNS rebinding).
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{}", s.port),
        format!("127.0.0.1:{}", s.port + 1),
    ] {
        let r = request(
            s.port,
            "GET",
            &format!("/login?token={}", s.token),
            &host,
            &[],
            "",
        );
        assert_eq!(r.status, 421, "{host}: {r:?}");
        assert!(r.header("Set-Cookie").is_none());
    }
    // localhost on the port is allowed.
    let r = request(
        s.port,
        "GET",
        "/",
        &format!("localhost:{}", s.port),
        &[],
        "",
    );
    assert_eq!(r.status, 303);

    // A wrong token: 403, no cookie.
    let r = s.get("/login?token=0123456789abcdef0123456789abcdef", None);
    assert_eq!(r.status, 403);
    assert!(r.header("Set-Cookie").is_none());
    assert!(!r.body.contains(&s.token));

    // The right token: a session cookie, HttpOnly and SameSite=Strict, and on to `/`.
    let r = s.get(&format!("/login?token={}", s.token), None);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("Location"), Some("/"));
    let set = r.header("Set-Cookie").unwrap();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    assert_eq!(r.header("Referrer-Policy"), Some("same-origin"));
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(!cookie.contains(&s.token), "the session is not the token");
    let page = s.get("/", Some(&cookie));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("name=\"viewport\""));
    assert!(!page.body.contains(&s.token), "the token is never shown");
    let csrf = csrf_of(&page.body);

    // The OpenAPI document: behind the cookie, parses, lists the routes.
    let doc = s.get("/api/openapi.json", Some(&cookie)).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    for p in [
        "/api/status",
        "/api/releases",
        "/api/history",
        "/api/openapi.json",
    ] {
        assert!(doc["paths"][p]["get"].is_object(), "{p}");
    }
    let cookie_name = cookie.split('=').next().unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        cookie_name
    );

    // No GET changes anything: /logout is POST only.
    assert_eq!(s.get("/logout", Some(&cookie)).status, 405);
    // POST /logout: refused without the CSRF field, with a foreign Origin, without Origin.
    let form = format!("csrf={csrf}");
    let post = |headers: &[(&str, &str)], body: &str| {
        let mut h = vec![("Cookie", cookie.as_str())];
        h.extend_from_slice(headers);
        request(s.port, "POST", "/logout", &s.host(), &h, body)
    };
    let origin = s.origin();
    let r = post(&[("Origin", &origin)], "");
    assert_eq!(r.status, 403, "no csrf: {r:?}");
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let r = post(&[("Origin", &origin)], "csrf=00");
    assert_eq!(r.status, 403, "wrong csrf");
    let r = post(&[("Origin", "http://evil.example")], &form);
    assert_eq!(r.status, 403, "foreign origin: {r:?}");
    assert!(r.body.contains("Origin"), "{}", r.body);
    let r = post(&[], &form);
    assert_eq!(r.status, 403, "no origin");
    assert_eq!(s.get("/api/status", Some(&cookie)).status, 200, "still in");
    // Both right: the session ends.
    let r = post(&[("Origin", &origin)], &form);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("Location"), Some("/login"));
    assert!(r.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(s.get("/api/status", Some(&cookie)).status, 401);
    assert_eq!(s.get("/", Some(&cookie)).status, 303);

    // More than 5 failed logins within a minute: 429 with Retry-After, even for the
    // right token. (One failed above; four more, then the sixth attempt.)
    for i in 0..4 {
        let r = s.get(&format!("/login?token=bad{i}"), None);
        assert_eq!(r.status, 403, "attempt {}", i + 2);
    }
    let r = s.get("/login?token=bad5", None);
    assert_eq!(r.status, 429, "{r:?}");
    let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let r = s.get(&format!("/login?token={}", s.token), None);
    assert_eq!(r.status, 429);
    assert!(r.header("Set-Cookie").is_none());
    drop(s);

    // A restart keeps the token (and its mode); sessions do not survive it.
    let s2 = serve(&fx, "127.0.0.1:0");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        s2.token,
        "stable token"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cookie2 = s2.login();
    assert_eq!(s2.get("/api/status", Some(&cookie2)).status, 200);
    drop(s2);

    // Not loopback: it says so.
    let s3 = serve(&fx, "0.0.0.0:0");
    assert!(s3.said.contains("not a loopback address"), "{}", s3.said);
}

/// Drop what changes from one second to the next.
fn steady_status(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(c) = v["container"].as_object_mut() {
        c.remove("uptime_seconds");
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("traffic");
    }
    v
}

/// `unique_bytes` and `shared_bytes` are null when the engine did not count disk use in
/// time: compare them only when both sides have them.
fn steady_releases(a: &mut serde_json::Value, b: &mut serde_json::Value) {
    for (x, y) in a
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(b.as_array_mut().unwrap())
    {
        // How much of an image other images share depends on every image on the engine,
        // which the tests running beside this one change between the two reads: both
        // sides must report the split or both not, and it must add up to the size.
        for side in [&mut *x, &mut *y] {
            if let (Some(u), Some(sh)) =
                (side["unique_bytes"].as_i64(), side["shared_bytes"].as_i64())
            {
                assert_eq!(u + sh, side["size_bytes"].as_i64().unwrap(), "{side}");
            }
        }
        for k in ["unique_bytes", "shared_bytes"] {
            x.as_object_mut().unwrap().remove(k);
            y.as_object_mut().unwrap().remove(k);
        }
    }
}

/// Every key of `value` is a property of `schema` in the OpenAPI document.
fn keys_documented(doc: &serde_json::Value, schema: &str, value: &serde_json::Value) {
    let props = &doc["components"]["schemas"][schema]["properties"];
    for k in value.as_object().unwrap().keys() {
        assert!(props[k].is_object(), "{schema}.{k} is not documented");
    }
}

#[test]
fn serve_pages_and_api_show_what_the_cli_says() {
    let fx = Fixture::new("servepages");
    let v1 = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let v2 = fx.tag_today(&fx.push_version(Behaviour::CrashAtStart));
    fx.dm(&["deploy", "--timeout", "20s"]).code(1);
    let v3 = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();

    let s = serve(&fx, "127.0.0.1:0");
    let cookie = s.login();
    let get_json = |p: &str| {
        let r = s.get(p, Some(&cookie));
        assert_eq!(r.status, 200, "{p}: {r:?}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        r.json()
    };

    // The API is the CLI's --json, from the same code.
    let mut api = get_json("/api/releases");
    let mut cli = fx.dm(&["releases", "--json"]).ok().json();
    steady_releases(&mut api, &mut cli);
    assert_eq!(api, cli);
    assert_eq!(
        get_json("/api/history"),
        fx.dm(&["history", "--json"]).ok().json()
    );
    assert_eq!(
        get_json("/api/history?limit=1"),
        fx.dm(&["history", "--json", "--limit", "1"]).ok().json()
    );
    let status = get_json("/api/status");
    assert_eq!(
        steady_status(status.clone()),
        steady_status(fx.dm(&["status", "--json"]).ok().json())
    );
    assert_eq!(status["live"], v3.as_str());
    assert_eq!(
        s.get("/api/history?limit=x", Some(&cookie)).status,
        400,
        "a bad limit"
    );
    assert_eq!(s.get("/api/nope", Some(&cookie)).status, 404);

    // What the API returns is what its OpenAPI document describes.
    let doc = get_json("/api/openapi.json");
    keys_documented(&doc, "Status", &status);
    keys_documented(&doc, "Release", &api[0]);
    keys_documented(&doc, "Event", &get_json("/api/history")[0]);

    // `/`: the live release, its health and the rollback target.
    let page = s.get("/", Some(&cookie));
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(
        body.contains(&format!("<span class=\"mark live\">{v3}</span>")),
        "{body}"
    );
    // (Docker's own check may still be starting: dockmaster's gate probes it itself.)
    assert!(
        ["starting", "healthy"]
            .iter()
            .any(|h| body.contains(&format!("<dt>health</dt><dd>{h}</dd>"))),
        "{body}"
    );
    assert!(
        body.contains(&format!("<dt>rollback to</dt><dd>{v1}</dd>")),
        "{body}"
    );

    // `/releases`: every release with its marks; a rollback link to the confirm page, or a
    // disabled button with its reason.
    let page = s.get("/releases", Some(&cookie));
    assert_eq!(page.status, 200);
    let row = |tag: &str| -> String {
        let start = page
            .body
            .find(&format!("<tr id=\"release-{tag}\""))
            .unwrap_or_else(|| panic!("no row for {tag}:\n{}", page.body));
        let end = page.body[start..].find("</tr>").unwrap() + start;
        page.body[start..end].to_string()
    };
    let (r1, r2, r3) = (row(&v1), row(&v2), row(&v3));
    assert!(r3.contains(">live<") && r3.contains("known-good"), "{r3}");
    assert!(r3.contains("disabled title=\"live already\""), "{r3}");
    assert!(r2.contains(">failed<"), "{r2}");
    assert!(r2.contains("disabled title=\"marked failed\""), "{r2}");
    assert!(r1.contains("previous") && r1.contains("known-good"), "{r1}");
    assert!(
        r1.contains(&format!("href=\"/rollback?release={v1}\"")),
        "{r1}"
    );
    assert!(!r3.contains("href=\"/rollback") && !r2.contains("href=\"/rollback"));
    assert!(r1.contains("v1"), "the commit subject: {r1}");
    assert!(page.body.find(&v3) < page.body.find(&v1), "newest first");

    // `/history`: every event, with who and the outcome.
    let page = s.get("/history", Some(&cookie));
    assert_eq!(page.status, 200);
    let events = get_json("/api/history");
    for e in events.as_array().unwrap() {
        let who = format!(
            "{}@{}",
            e["user"].as_str().unwrap(),
            e["host"].as_str().unwrap()
        );
        assert!(page.body.contains(&who), "{who}: {}", page.body);
        assert!(page.body.contains(e["outcome"].as_str().unwrap()));
    }
    assert!(page.body.contains("rolled-back") || page.body.contains("failed"));
}
