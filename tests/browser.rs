//! The release page in a real browser: headless Chromium over WebDriver (see
//! `support::browser`) logs in with the login URL, rolls back through the confirm page,
//! follows the job to its end, finds the event in the history, and sees the status page
//! follow a rollback made with the CLI without a reload (server-sent events).
//!
//! With `DOCKMASTER_SCREENSHOTS=<dir>` it also saves the status and releases pages at
//! phone and desktop width there (status-phone.png, status-desktop.png, releases-phone.png,
//! releases-desktop.png), to look at.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::browser::{Browser, DESKTOP, PHONE, require_browser};
use crate::support::serve::serve;
use crate::support::{Behaviour, Fixture};

/// The CSS selector of a release's row. Tags have dots (`2026.01.09-def4567`), which an
/// `#id` selector would read as classes: match the attribute instead.
fn release_row(tag: &str) -> String {
    format!("tr[id=\"release-{tag}\"]")
}

/// `#live`'s text names this tag (and only it).
fn shows(text: &str, tag: &str) -> bool {
    text.split_whitespace().any(|w| w == tag)
}

#[test]
fn serve_in_a_real_browser_rolls_back_through_the_confirm_page() {
    // Fail at once, before building anything, when there is no browser.
    require_browser();
    let fx = Fixture::new("browser");
    let older = fx.tag_today(&fx.head());
    fx.dm(&["deploy"]).ok();
    let newer = fx.tag_today(&fx.push_version(Behaviour::Good));
    fx.dm(&["deploy"]).ok();
    let live_image = |fx: &Fixture| fx.live().expect("a live container").image_ref;
    assert!(live_image(&fx).ends_with(&format!(":{newer}")));

    let s = serve(&fx, "127.0.0.1:0");
    let b = Browser::start();

    // The login URL sets the session cookie and sends to the status page.
    b.goto(&s.login_url());
    assert_eq!(b.path(), "/", "{}", b.whereabouts());
    assert!(
        b.find_all("form[action=\"/logout\"]").len() == 1,
        "logged in: the logout form\n{}",
        b.whereabouts()
    );

    // Both releases, one row each.
    b.goto(&s.url("/releases"));
    for tag in [&older, &newer] {
        b.wait_for(
            &release_row(tag),
            |t| t.contains(tag.as_str()),
            Duration::from_secs(10),
        );
    }

    if let Some(dir) = std::env::var_os("DOCKMASTER_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        for (size, (w, h)) in [("phone", PHONE), ("desktop", DESKTOP)] {
            b.set_size(w, h);
            for (page, path) in [("status", "/"), ("releases", "/releases")] {
                b.goto(&s.url(path));
                let file = dir.join(format!("{page}-{size}.png"));
                b.screenshot(&file);
                eprintln!("screenshot: {}", file.display());
            }
        }
        b.set_size(DESKTOP.0, DESKTOP.1);
        b.goto(&s.url("/releases"));
    }

    // The live release cannot be rolled back to; the older one has an enabled link.
    let live_row = b.find(&release_row(&newer));
    assert!(
        b.find_in(&live_row, "a.rollback").is_empty(),
        "the live release offers a rollback: {}",
        b.html_of(&live_row, false)
    );
    let row = b.find(&release_row(&older));
    let links = b.find_in(&row, "a.rollback");
    assert_eq!(
        links.len(),
        1,
        "the older release has no enabled rollback link (a.rollback): {}",
        b.html_of(&row, false)
    );
    assert_eq!(
        b.attr_of(&links[0], "href").as_deref(),
        Some(format!("/rollback?release={older}").as_str())
    );
    b.click_on(&links[0]);

    // The confirm page says what goes and what comes; nothing changed yet.
    b.wait_for(
        "#from-to",
        |t| t.contains(&format!("{newer} → {older}")),
        Duration::from_secs(20),
    );
    assert!(
        live_image(&fx).ends_with(&format!(":{newer}")),
        "a GET acted"
    );
    b.click("#confirm");

    // The job page (not a refusal), until the job ends.
    b.wait_for_path("/jobs/", Duration::from_secs(30));
    let state = b.wait_for(
        "#job-state",
        |t| matches!(t.trim(), "succeeded" | "failed"),
        Duration::from_secs(120),
    );
    let output = b.find_all("#job-output");
    let output = output.first().map(|e| b.text_of(e)).unwrap_or_default();
    assert_eq!(state.trim(), "succeeded", "the job's output:\n{output}");

    // The history has the page's rollback: who is web@<host>, it went to the older tag.
    b.goto(&s.url("/history"));
    let mut seen = vec![];
    let found = b.find_all("tr[id^=\"event-\"]").iter().any(|row| {
        let cell = |label: &str| {
            b.find_in(row, &format!("td[data-label=\"{label}\"]"))
                .first()
                .map(|c| b.text_of(c))
                .unwrap_or_default()
        };
        let (who, from_to) = (cell("Who"), cell("From → to"));
        seen.push(format!("{who} | {from_to}"));
        who.starts_with("web@") && from_to.trim().ends_with(&format!("→ {older}"))
    });
    assert!(
        found,
        "no event by web@… to {older}; the rows (who | from → to):\n{}",
        seen.join("\n")
    );

    // The real container runs the older release.
    assert!(
        live_image(&fx).ends_with(&format!(":{older}")),
        "{}",
        live_image(&fx)
    );

    // The status page says so.
    b.goto(&s.url("/"));
    b.wait_for("#live", |t| shows(t, &older), Duration::from_secs(20));

    // Someone rolls back with the CLI: the open page follows without a reload (a reload
    // would drop this mark).
    b.execute("window.dockmasterTestMark = 'no reload'; return null");
    fx.dm(&["rollback", &newer, "--yes"]).ok();
    b.wait_for(
        "#live",
        |t| shows(t, &newer) && !shows(t, &older),
        Duration::from_secs(60),
    );
    assert_eq!(
        b.execute("return window.dockmasterTestMark || null"),
        serde_json::json!("no reload"),
        "the page reloaded instead of updating itself"
    );
    assert!(live_image(&fx).ends_with(&format!(":{newer}")));
}
