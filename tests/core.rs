//! Issue 2: deploy, rollback, releases, status, logs with zero configuration.

use crate::support::{Behaviour, Fixture, ImageForm, Options};

#[test]
fn deploy_lifecycle_new_commit_same_commit_releases_and_rollback() {
    let fx = Fixture::new("life");
    let first = fx.head();
    let tag1 = fx.tag_today(&first);

    // First deploy: builds, puts live, prints DEPLOYED_<VAR>= last on stdout.
    let out = fx.dm(&["deploy"]);
    out.ok()
        .stderr_has("[1/8]")
        .stderr_has("[8/8]")
        .stderr_has("DEPLOYMENT COMPLETE")
        .stderr_has("Image built");
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag1}"));
    let live = fx.live().expect("a container");
    assert!(live.running);
    assert_eq!(live.image_ref, format!("{}:{tag1}", fx.repo));
    assert_eq!(fx.served_version(), "v1");
    assert_eq!(
        fx.image_id(&format!("{}:latest", fx.repo)),
        Some(live.image_id.clone())
    );
    // The image carries its facts as OCI labels.
    let labels = crate::support::docker_out(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.revision\"}}|{{index .Config.Labels \"org.opencontainers.image.version\"}}",
        &format!("{}:{tag1}", fx.repo),
    ]);
    assert_eq!(labels.trim(), format!("{first}|{tag1}"));

    // A new commit pushed to origin from elsewhere: deploy fetches and fast-forwards.
    let second = fx.push_version_elsewhere(Behaviour::Good);
    let tag2 = fx.tag_today(&second);
    let out = fx.dm(&["deploy"]);
    out.ok().stderr_has("Fast-forwarded");
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag2}"));
    assert_eq!(fx.head(), second);
    assert_eq!(fx.served_version(), "v2");

    // The same commit again: no build.
    let out = fx.dm(&["deploy"]);
    out.ok().stderr_has("Skipped: ");
    assert!(!out.stderr.contains("Image built"), "{}", out.stderr);
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag2}"));

    // releases: newest first, live marked; JSON has the contract's fields.
    let out = fx.dm(&["releases"]);
    out.ok();
    let pos1 = out.stdout.find(&tag1).expect("tag1 listed");
    let pos2 = out.stdout.find(&tag2).expect("tag2 listed");
    assert!(pos2 < pos1, "newest first:\n{}", out.stdout);
    let json = fx.dm(&["releases", "--json"]).ok().json();
    let arr = json.as_array().expect("array");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["tag"], tag2.as_str());
    assert_eq!(arr[0]["live"], true);
    assert_eq!(arr[0]["commit"], second.as_str());
    assert_eq!(arr[1]["tag"], tag1.as_str());
    assert_eq!(arr[1]["live"], false);
    assert!(arr[1]["size_bytes"].as_i64().unwrap() > 1_000_000);
    assert!(arr[1]["created"].as_str().unwrap().starts_with("20"));

    // Rollback to the first tag.
    let out = fx.dm(&["rollback", &tag1]);
    out.ok()
        .stderr_has("ROLLBACK COMPLETE")
        .stderr_has(&format!("Target image:  {}:{tag1}", fx.repo));
    assert_eq!(fx.served_version(), "v1");
    assert_eq!(fx.live().unwrap().image_ref, format!("{}:{tag1}", fx.repo));
    assert_eq!(
        fx.image_id(&format!("{}:latest", fx.repo)),
        fx.image_id(&format!("{}:{tag1}", fx.repo)),
        "latest follows the live release"
    );

    // Rollback to the live tag without -y: refused (no terminal to ask), nothing changes.
    let before = fx.snapshot();
    let out = fx.dm(&["rollback", &tag1]);
    out.code(2).stderr_has("already live").stderr_has("-y");
    assert_eq!(fx.snapshot(), before);
    // With -y: re-deployed (a new container).
    fx.dm(&["rollback", &tag1, "-y"]).ok();
    let after = fx.live().unwrap();
    assert_ne!(after.id, before.live.unwrap().id);
    assert_eq!(after.image_ref, format!("{}:{tag1}", fx.repo));
}

#[test]
fn rollback_refuses_malformed_and_unknown_tags_without_changing_anything() {
    let fx = Fixture::new("badtag");
    fx.dm(&["deploy"]).ok();
    let tag1 = fx.tag_today(&fx.head());
    let before = fx.snapshot();

    let out = fx.dm(&["rollback", "not-a-tag"]);
    out.code(2)
        .stderr_has("`not-a-tag` is not a release tag")
        .stderr_has("hint:");
    assert_eq!(fx.snapshot(), before);

    let out = fx.dm(&["rollback", "2020.01.01-abcdef0"]);
    out.code(2)
        .stderr_has(&format!("no release {}:2020.01.01-abcdef0 exists", fx.repo))
        .stderr_has(&tag1);
    assert_eq!(fx.snapshot(), before);
}

#[test]
fn dirty_checkout_is_refused_with_the_fix() {
    let fx = Fixture::new("dirty");
    fx.dm(&["deploy"]).ok();
    let before = fx.snapshot();
    std::fs::write(fx.dir.join("www/version"), "edited on the NAS\n").unwrap();
    let out = fx.dm(&["deploy"]);
    out.code(2)
        .stderr_has("uncommitted changes")
        .stderr_has("www/version")
        .stderr_has("git -C");
    assert_eq!(fx.snapshot(), before);
    // --no-pull does not make a dirty checkout deployable either.
    fx.dm(&["deploy", "--no-pull"])
        .code(2)
        .stderr_has("uncommitted changes");
    assert_eq!(fx.snapshot(), before);
}

#[test]
fn diverged_checkout_is_refused_with_the_fix() {
    let fx = Fixture::new("diverged");
    fx.dm(&["deploy"]).ok();
    let before = fx.snapshot();
    fx.push_version_elsewhere(Behaviour::Good);
    // A local commit that is not on origin.
    std::fs::write(fx.dir.join("www/local"), "x\n").unwrap();
    crate::support::git(&fx.work, &["add", "-A"]);
    crate::support::git(&fx.work, &["commit", "-q", "-m", "local only"]);
    let head = fx.head();
    let out = fx.dm(&["deploy"]);
    out.code(2)
        .stderr_has("has diverged from origin/main")
        .stderr_has("1 local commit(s)")
        .stderr_has("reset --hard origin/main");
    assert_eq!(fx.snapshot(), before);
    assert_eq!(fx.head(), head, "the checkout is not touched");
}

#[test]
fn no_compose_file_is_a_clear_error() {
    crate::support::require_engine();
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::Dm {
        cmd: {
            let mut c = std::process::Command::new(crate::support::BIN);
            c.arg("deploy")
                .current_dir(dir.path())
                .env("DOCKMASTER_STATE_DIR", dir.path().join("state"))
                .env_remove("COMPOSE_FILE");
            c
        },
    }
    .run();
    out.code(2)
        .stderr_has("no compose file in")
        .stderr_has("-f/--file");
    let out = crate::support::Dm {
        cmd: {
            let mut c = std::process::Command::new(crate::support::BIN);
            c.args(["-f", "missing.yml", "releases"])
                .current_dir(dir.path());
            c
        },
    }
    .run();
    out.code(2).stderr_has("missing.yml does not exist");
}

#[test]
fn several_buildable_services_need_service_flag() {
    let fx = Fixture::with(
        "twosvc",
        Options {
            second_buildable: true,
            ..Options::default()
        },
    );
    let out = fx.dm(&["deploy"]);
    out.code(2)
        .stderr_has("several services with `build:`: app, worker")
        .stderr_has("--service");
    assert!(fx.live().is_none());
    assert!(fx.images().is_empty());
    fx.dm(&["deploy", "--service", "app"]).ok();
    assert_eq!(fx.served_version(), "v1");
}

#[test]
fn first_deploy_that_never_gets_healthy_exits_1_with_logs() {
    let fx = Fixture::new("neverok");
    fx.push_version(Behaviour::CrashAtStart);
    let out = fx.dm(&["deploy", "--timeout", "20s"]);
    out.code(1)
        .stderr_has("failed its health gate")
        .stderr_has("fatal: DATABASE_URL is not set")
        .stderr_has("nothing to go back to");
}

#[test]
fn container_name_is_kept() {
    let fx = Fixture::with(
        "cname",
        Options {
            container_name: true,
            ..Options::default()
        },
    );
    fx.dm(&["deploy"]).ok();
    let live = fx.live().unwrap();
    assert_eq!(Some(live.name.clone()), fx.container_name);
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    let live2 = fx.live().unwrap();
    assert_eq!(Some(live2.name), fx.container_name);
    assert_eq!(fx.served_version(), "v2");
}

#[test]
fn image_form_with_image_variable_and_tag_variable() {
    let fx = Fixture::with(
        "imgvar",
        Options {
            image_form: ImageForm::ImageVarTagVar,
            ..Options::default()
        },
    );
    let out = fx.dm(&["deploy"]);
    out.ok();
    assert_eq!(
        out.last_line(),
        format!("DEPLOYED_APP_TAG={}", fx.tag_today(&fx.head()))
    );
    assert!(
        fx.live()
            .unwrap()
            .image_ref
            .starts_with(&format!("{}:", fx.repo))
    );
}

#[test]
fn image_form_without_image_uses_project_service_repository() {
    let fx = Fixture::with(
        "noimg",
        Options {
            image_form: ImageForm::NoImage,
            ..Options::default()
        },
    );
    let out = fx.dm(&["deploy"]);
    out.ok();
    let tag = fx.tag_today(&fx.head());
    assert_eq!(out.last_line(), format!("DEPLOYED_APP_TAG={tag}"));
    assert_eq!(fx.live().unwrap().image_ref, format!("{}:{tag}", fx.repo));
    // The checkout stays clean: the override file lives in the state directory.
    assert_eq!(
        crate::support::git_out(&fx.work, &["status", "--porcelain"]),
        ""
    );
    fx.push_version(Behaviour::Good);
    fx.dm(&["deploy"]).ok();
    fx.dm(&["rollback", &tag]).ok();
    assert_eq!(fx.served_version(), "v1");
}

#[test]
fn compose_file_in_a_subdirectory_of_the_checkout() {
    let fx = Fixture::with(
        "subdir",
        Options {
            subdir: Some("backend"),
            ..Options::default()
        },
    );
    fx.dm(&["deploy"]).ok();
    assert_eq!(fx.served_version(), "v1");
    // Also from the checkout's root with -f.
    let out = fx
        .dm_cmd(&["-f", "backend/docker-compose.yml", "status", "--json"])
        .current_dir(&fx.work)
        .run();
    out.ok();
    assert_eq!(out.json()["live"], fx.tag_today(&fx.head()).as_str());
}

#[test]
fn json_outputs_are_one_document_and_status_and_logs_work() {
    let fx = Fixture::new("json");
    let deploy = fx.dm(&["deploy", "--json"]);
    deploy.ok();
    let d = deploy.json();
    let tag = fx.tag_today(&fx.head());
    assert_eq!(d["outcome"], "succeeded");
    assert_eq!(d["tag"], tag.as_str());
    assert_eq!(d["built"], true);

    let status = fx.dm(&["status", "--json"]);
    let s = status.ok().json();
    assert_eq!(s["live"], tag.as_str());
    assert_eq!(s["container"]["state"], "running");
    assert_eq!(s["matches_record"], true);
    assert_eq!(s["latest_matches"], true);
    assert!(s["container"]["uptime_seconds"].as_i64().is_some());

    let human = fx.dm(&["status"]);
    human
        .ok()
        .stdout_has(&format!("live:           {tag}"))
        .stdout_has("matches what runs");

    let logs = fx.dm(&["logs", "--tail", "5"]);
    logs.ok().stdout_has("starting release v1");

    let rb = fx.dm(&["rollback", &tag, "-y", "--json"]);
    let r = rb.ok().json();
    assert_eq!(r["outcome"], "succeeded");
    assert_eq!(r["tag"], tag.as_str());
}

#[test]
fn deploy_dry_run_changes_nothing() {
    let fx = Fixture::new("dry");
    fx.dm(&["deploy"]).ok();
    let before = fx.snapshot();
    let head = fx.head();
    let second = fx.push_version_elsewhere(Behaviour::Good);
    let out = fx.dm(&["deploy", "--dry-run", "--json"]);
    out.ok();
    let j = out.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["commit"], second.as_str());
    assert_eq!(j["built"], true);
    assert_eq!(fx.snapshot(), before);
    assert_eq!(fx.head(), head, "no fast-forward in a dry run");
}

/// CI runs the suite twice: `DOCKMASTER_COMPOSE=docker-compose` must be Debian's v1 and
/// `DOCKMASTER_COMPOSE="docker compose"` the v2 plugin, so each pass provably ran on the
/// compose it names (a v2 `docker-compose` wrapper on PATH would fail the v1 pass).
#[test]
fn compose_forced_by_dockmaster_compose_is_the_expected_version_and_used() {
    let program = crate::support::compose_program();
    let expected_major = match program.join(" ").as_str() {
        "docker-compose" => 1,
        "docker compose" => 2,
        other => panic!(
            "DOCKMASTER_COMPOSE={other:?}: this test knows `docker-compose` (v1) and `docker compose` (v2)"
        ),
    };
    let version = crate::support::compose()
        .args(["version", "--short"])
        .output()
        .expect("run compose");
    let version = String::from_utf8_lossy(&version.stdout);
    assert_eq!(
        version.trim().trim_start_matches('v').split('.').next(),
        Some(expected_major.to_string().as_str()),
        "`{} version --short` says {version:?}",
        program.join(" ")
    );
    let fx = Fixture::new("composev");
    let out = fx.dm(&["deploy"]);
    out.ok()
        .stderr_has(&format!("{} (v{expected_major})", program.join(" ")));
}
