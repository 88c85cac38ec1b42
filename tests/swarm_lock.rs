//! The cluster-wide lock (`runtime::swarm::lock`) against real swarms of real engines: the
//! contenders are threads, each with its own runtime and its own connection, as separate
//! dockmaster processes would be.

use std::collections::HashMap;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ConfigSpec;
use dockmaster::lock::{Error, Holder};
use dockmaster::runtime::swarm::lock::{
    ClusterLock, LABEL_COMMAND, LABEL_HEARTBEAT, LABEL_HOST, LABEL_LOCK, LABEL_PID, LABEL_SINCE,
    LABEL_USER, TakenOver, config_name,
};

use crate::support::swarm::{Node, Swarm};

const APP: &str = "shop";
/// Long enough that nothing is stale in a test that is not about staleness.
const LONG: Duration = Duration::from_secs(60);

#[test]
fn eight_concurrent_acquires_yield_exactly_one_winner_and_seven_held_naming_it() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let host = swarm.manager().docker_host.clone();

    let outcomes = race(&vec![(host.clone(), Duration::ZERO); 8], LONG);
    let winner = one_winner(&outcomes);
    assert!(
        matches!(outcomes[winner], Ok(None)),
        "nothing to take over: {:?}",
        outcomes[winner]
    );

    // Released: the config is gone, and the lock can be taken again.
    assert_eq!(config_id(swarm.manager(), &config_name(APP)), None);
    block_on(async {
        let docker = connect(&host).await;
        let (lock, taken) = ClusterLock::acquire(&docker, APP, "deploy again", None, LONG)
            .await
            .expect("the released lock is free");
        assert!(taken.is_none());
        lock.release().await.expect("release");
    });
    assert_eq!(config_id(swarm.manager(), &config_name(APP)), None);
    eprintln!("one winner of 8: {:.1?}", started.elapsed());
}

#[test]
fn two_managers_racing_through_their_own_engines_yield_one_winner() {
    let started = Instant::now();
    let swarm = Swarm::new(2);
    let (manager, other) = (swarm.manager(), &swarm.nodes()[1]);

    // A worker cannot take it: configs live in the managers' store.
    let refused = block_on(async {
        let docker = connect(&other.docker_host).await;
        match ClusterLock::acquire(&docker, APP, "deploy", None, LONG).await {
            Ok(_) => panic!("a worker took the cluster lock"),
            Err(e) => e,
        }
    });
    assert!(
        matches!(
            refused,
            Error::Cluster {
                status: Some(503),
                ..
            }
        ),
        "{refused:?}"
    );
    let text = dockmaster::error::Error::from(refused).to_string();
    assert!(
        text.starts_with("cannot take the cluster lock dockmaster-lock-shop: ")
            && text.ends_with(
                "\nhint: point DOCKER_HOST at a manager of the swarm (`docker node ls` works there)"
            ),
        "{text}"
    );

    // Both engines of the machine share one hostname, so the node is named by its id.
    let id = other.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    manager.docker_ok(&["node", "promote", id.trim()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !other.docker(&["config", "ls", "-q"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "node 1 is no manager 30 s after its promotion:\n{}",
            other.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let hosts = [
        (manager.docker_host.clone(), Duration::ZERO),
        (other.docker_host.clone(), Duration::ZERO),
    ];
    let mut wins = [0; 2];
    for _ in 0..5 {
        let outcomes = race(&hosts, LONG);
        wins[one_winner(&outcomes)] += 1;
        assert_eq!(config_id(manager, &config_name(APP)), None);
        assert_eq!(config_id(other, &config_name(APP)), None);
    }
    eprintln!(
        "two managers, 5 rounds: node 0 won {}, node 1 won {} ({:.1?})",
        wins[0],
        wins[1],
        started.elapsed()
    );
}

#[test]
fn a_stale_lock_is_taken_over_and_a_fresh_one_is_not() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let node = swarm.manager();
    let name = config_name(APP);
    block_on(async {
        let docker = connect(&node.docker_host).await;

        // A holder that died a minute ago.
        let dead = lock_by_hand(&docker, now() - 60).await;
        let (lock, taken) = ClusterLock::acquire(&docker, APP, "deploy", None, secs(2))
            .await
            .expect("a stale lock is taken over");
        let TakenOver { holder, silent_for } = taken.expect("reports the takeover");
        let holder = holder.expect("names the dead holder");
        assert_eq!(
            (holder.command.as_str(), holder.pid, holder.host.as_str()),
            ("crashed deploy", 4242, "elsewhere")
        );
        assert!(
            (secs(59)..secs(70)).contains(&silent_for),
            "silent for {silent_for:?}"
        );
        assert_eq!(config_id(node, &dead), None, "the dead lock is removed");
        assert_eq!(config_id(node, &name).as_deref(), Some(lock.id()));

        // Its own lock is fresh: not taken over.
        let e = refused(ClusterLock::acquire(&docker, APP, "prune", None, secs(2)).await);
        assert_held_by(&e, "deploy");
        lock.release().await.expect("release");

        // A lock by hand that beat just now: fresh, whoever made it.
        let alive = lock_by_hand(&docker, now()).await;
        let e = refused(ClusterLock::acquire(&docker, APP, "deploy", None, secs(2)).await);
        assert_held_by(&e, "crashed deploy");
        assert_eq!(config_id(node, &name), Some(alive));
    });
    eprintln!("takeover: {:.1?}", started.elapsed());
}

#[test]
fn eight_takers_racing_for_one_stale_lock_yield_one_winner() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let host = swarm.manager().docker_host.clone();
    let dead = block_on(async { lock_by_hand(&connect(&host).await, now() - 60).await });

    let outcomes = race(&vec![(host.clone(), Duration::ZERO); 8], secs(2));
    let winner = one_winner(&outcomes);
    // The winner is a taker, or a contender whose first create came after a taker removed
    // the dead lock and before that taker created its own (the taker is then refused).
    match &outcomes[winner] {
        Ok(Some(t)) => assert_eq!(
            t.holder.as_ref().map(|h| h.command.as_str()),
            Some("crashed deploy")
        ),
        Ok(None) => {}
        Err(e) => unreachable!("{e}"),
    }
    assert_eq!(config_id(swarm.manager(), &dead), None);
    eprintln!("one taker of 8: {:.1?}", started.elapsed());
}

/// Two takers see the same stale lock; the slow one's removal reaches the engine after the
/// fast one has created its own lock. Removing by id, it removes only the stale lock (gone
/// already) and is refused; by name, it would remove the fast one's fresh lock and both
/// would hold it.
#[test]
fn a_slow_taker_removes_only_the_stale_lock_not_the_new_one() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let host = swarm.manager().docker_host.clone();
    let dead = block_on(async { lock_by_hand(&connect(&host).await, now() - 60).await });

    // Both have looked at the stale lock before the fast one's removal (100 ms) arrives;
    // the slow one's (1 s) arrives long after the fast one's create.
    let outcomes = race(
        &[
            (host.clone(), Duration::from_millis(100)),
            (host.clone(), secs(1)),
        ],
        secs(2),
    );
    match &outcomes[0] {
        Ok(Some(t)) => assert_eq!(
            t.holder.as_ref().map(|h| h.command.as_str()),
            Some("crashed deploy")
        ),
        other => panic!("the fast taker did not take over: {other:?}"),
    }
    assert_held_by(
        outcomes[1].as_ref().expect_err("the slow taker is refused"),
        "deploy #0",
    );
    assert_eq!(config_id(swarm.manager(), &dead), None);
    eprintln!("slow taker: {:.1?}", started.elapsed());
}

#[test]
fn the_heartbeat_keeps_a_held_lock_from_being_taken_over() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let node = swarm.manager();
    let host = node.docker_host.clone();
    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = std::thread::spawn({
        let host = host.clone();
        move || {
            block_on(async {
                let docker = connect(&host).await;
                let (lock, _) = ClusterLock::acquire(&docker, APP, "deploy", None, secs(2))
                    .await
                    .expect("acquire");
                held_tx.send(()).expect("send");
                // Awaits, so the heartbeat runs.
                release_rx.await.expect("told to release");
                lock.release().await.expect("release");
            })
        }
    });
    held.recv().expect("the holder took the lock");
    let first_beat = heartbeat_label(node);

    let mut refusals = 0;
    block_on(async {
        let docker = connect(&host).await;
        let until = Instant::now() + secs(5);
        while Instant::now() < until {
            let e = refused(ClusterLock::acquire(&docker, APP, "prune", None, secs(2)).await);
            assert_held_by(&e, "deploy");
            refusals += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let last_beat = heartbeat_label(node);
    release.send(()).expect("the holder waits");
    holder.join().expect("the holder");
    assert!(refusals >= 10, "only {refusals} attempts in 5 s");
    assert!(
        last_beat >= first_beat + 3,
        "the heartbeat moved from {first_beat} to {last_beat} only"
    );
    assert_eq!(config_id(node, &config_name(APP)), None);
    eprintln!(
        "heartbeat: {refusals} refusals over 5 s ({:.1?})",
        started.elapsed()
    );
}

/// A holder whose process froze (no heartbeat) is taken over; when it wakes, its heartbeat
/// stops and its release leaves the new holder's lock alone: everything is by id.
#[test]
fn a_frozen_holder_is_taken_over_and_its_late_release_leaves_the_new_lock() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let node = swarm.manager();
    let host = node.docker_host.clone();
    let (held_tx, held) = mpsc::channel();
    let (taken_tx, taken) = mpsc::channel::<()>();
    let frozen = std::thread::spawn({
        let host = host.clone();
        move || {
            block_on(async {
                let docker = connect(&host).await;
                let (lock, _) = ClusterLock::acquire(&docker, APP, "deploy", None, secs(2))
                    .await
                    .expect("acquire");
                held_tx.send(()).expect("send");
                // Blocks this runtime's only thread: the heartbeat cannot run.
                taken.recv().expect("the lock was taken over");
                // Awake again: the heartbeat finds its config gone and stops.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                lock.release().await.expect("a late release is no error");
            })
        }
    });
    held.recv().expect("the first holder took the lock");
    std::thread::sleep(Duration::from_millis(3500));
    let (lock, taken_over) = block_on(async {
        let docker = connect(&host).await;
        ClusterLock::acquire_on(&docker, &host, APP, "rollback", None, secs(2))
            .await
            .expect("the frozen holder's lock is taken over")
    });
    let t = taken_over.expect("a takeover");
    assert_eq!(
        t.holder.map(|h| h.command),
        Some("deploy".to_string()),
        "names the frozen holder"
    );
    assert!(t.silent_for >= secs(2), "{:?}", t.silent_for);
    taken_tx.send(()).expect("wake the frozen holder");
    frozen.join().expect("the frozen holder");
    assert_eq!(
        config_id(node, &config_name(APP)).as_deref(),
        Some(lock.id()),
        "the new holder's lock survives the old holder's release"
    );
    drop(lock);
    eprintln!("frozen holder: {:.1?}", started.elapsed());
}

#[test]
fn dropping_an_unreleased_lock_removes_it() {
    let started = Instant::now();
    let swarm = Swarm::new(1);
    let node = swarm.manager();
    let host = node.docker_host.clone();
    let name = config_name(APP);

    // Dropped inside the runtime that took it (which is then blocked in the drop).
    block_on(async {
        let docker = connect(&host).await;
        let (lock, _) = ClusterLock::acquire_on(&docker, &host, APP, "deploy", None, LONG)
            .await
            .expect("acquire");
        assert_eq!(config_id(node, &name).as_deref(), Some(lock.id()));
        let dropping = Instant::now();
        drop(lock);
        assert!(dropping.elapsed() < secs(5), "{:?}", dropping.elapsed());
    });
    assert_eq!(config_id(node, &name), None, "dropped in its runtime");

    // Dropped after the runtime that took it is gone (a panic unwinding out of main).
    let runtime = runtime();
    let lock = runtime.block_on(async {
        let docker = connect(&host).await;
        let (lock, _) = ClusterLock::acquire_on(&docker, &host, APP, "deploy", None, LONG)
            .await
            .expect("acquire");
        lock
    });
    drop(runtime);
    assert!(config_id(node, &name).is_some());
    drop(lock);
    assert_eq!(config_id(node, &name), None, "dropped after its runtime");
    eprintln!("drop: {:.1?}", started.elapsed());
}

/// What one contender got: the takeover it made, or why it was refused.
type Outcome = Result<Option<TakenOver>, Error>;

/// One contender per host, each a thread with its own runtime and connection, all calling
/// `acquire` at once (`command` is `deploy #<i>`). A contender with a delay talks to its
/// engine through a [`slow_link`] that holds back its removals that long. Every contender
/// has tried before the winner releases.
fn race(hosts: &[(String, Duration)], stale_after: Duration) -> Vec<Outcome> {
    let start = Arc::new(Barrier::new(hosts.len()));
    let tried = Arc::new(Barrier::new(hosts.len()));
    let contenders: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, (host, delay))| {
            let (host, delay) = (host.clone(), *delay);
            let (start, tried) = (start.clone(), tried.clone());
            std::thread::spawn(move || {
                block_on(async {
                    let (_link, host) = if delay.is_zero() {
                        (None, host)
                    } else {
                        let (dir, path) = slow_link(&host, delay).await;
                        (Some(dir), path)
                    };
                    let docker = connect(&host).await;
                    start.wait();
                    let command = format!("deploy #{i}");
                    let outcome =
                        ClusterLock::acquire(&docker, APP, &command, None, stale_after).await;
                    tried.wait();
                    match outcome {
                        Ok((lock, taken)) => {
                            lock.release().await.expect("release");
                            Ok(taken)
                        }
                        Err(e) => Err(e),
                    }
                })
            })
        })
        .collect();
    contenders
        .into_iter()
        .map(|c| c.join().expect("a contender panicked"))
        .collect()
}

/// The index of the only `Ok`; every other outcome is `Held` naming it.
#[track_caller]
fn one_winner(outcomes: &[Outcome]) -> usize {
    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|i| outcomes[*i].is_ok())
        .collect();
    assert_eq!(winners.len(), 1, "winners {winners:?} of {outcomes:?}");
    let winner = winners[0];
    for (i, outcome) in outcomes.iter().enumerate() {
        if i != winner {
            let e = outcome.as_ref().expect_err("one winner");
            assert_held_by(e, &format!("deploy #{winner}"));
        }
    }
    winner
}

/// `Held` naming `command` by this process, with the local lock's message and exit 3.
#[track_caller]
fn assert_held_by(e: &Error, command: &str) {
    match e {
        Error::Held {
            app,
            holder: Some(h),
            waited: None,
        } if app == APP && h.command == command => {}
        other => panic!("expected Held by `{command}`, got {other:?}"),
    }
    let Error::Held {
        holder: Some(h), ..
    } = e
    else {
        unreachable!()
    };
    let text = format!(
        "another operation holds the lock for shop: `dockmaster {command}` by {}@{} (pid {}) since {}",
        h.user, h.host, h.pid, h.since
    );
    assert_eq!(e.to_string(), text);
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, Error>) -> Error {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e,
    }
}

/// A lock config made by hand, as a dockmaster elsewhere that beat last at `heartbeat`
/// would have left it; its id.
async fn lock_by_hand(docker: &Docker, heartbeat: i64) -> String {
    let h = Holder {
        pid: 4242,
        user: "ci".into(),
        host: "elsewhere".into(),
        since: "2025-01-01T00:00:00Z".into(),
        command: "crashed deploy".into(),
    };
    let labels = HashMap::from([
        (LABEL_LOCK.to_string(), APP.to_string()),
        (LABEL_HEARTBEAT.to_string(), heartbeat.to_string()),
        (LABEL_PID.to_string(), h.pid.to_string()),
        (LABEL_USER.to_string(), h.user),
        (LABEL_HOST.to_string(), h.host),
        (LABEL_SINCE.to_string(), h.since),
        (LABEL_COMMAND.to_string(), h.command),
    ]);
    docker
        .create_config(ConfigSpec {
            name: Some(config_name(APP)),
            labels: Some(labels),
            data: Some("e30=".into()), // {}
            templating: None,
        })
        .await
        .expect("create a lock config by hand")
        .id
}

/// The id of config `name_or_id`, as the docker CLI sees it on `node`.
fn config_id(node: &Node, name_or_id: &str) -> Option<String> {
    let out = node.docker(&["config", "inspect", "--format", "{{.ID}}", name_or_id]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The heartbeat label of the app's lock on `node`.
#[track_caller]
fn heartbeat_label(node: &Node) -> i64 {
    let format = format!("{{{{index .Spec.Labels \"{LABEL_HEARTBEAT}\"}}}}");
    let out = node.docker_ok(&["config", "inspect", "--format", &format, &config_name(APP)]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("heartbeat label {out:?}: {e}"))
}

/// A socket of its own that passes everything between a client and the engine at `engine`
/// (`unix://…`), holding back each request that starts with `DELETE ` for `delay`: a slow
/// link to a real engine. Runs on the caller's runtime; returns its directory (remove it
/// last) and its address.
async fn slow_link(engine: &str, delay: Duration) -> (tempfile::TempDir, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::Builder::new()
        .prefix("dmlk")
        .tempdir()
        .expect("tempdir");
    let path = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind the slow link");
    let engine = engine.trim_start_matches("unix://").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let engine = engine.clone();
            tokio::spawn(async move {
                let server = tokio::net::UnixStream::connect(&engine)
                    .await
                    .expect("connect to the engine");
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = async {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        if buf[..n].starts_with(b"DELETE ") {
                            tokio::time::sleep(delay).await;
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    let address = format!("unix://{}", path.display());
    (dir, address)
}

async fn connect(host: &str) -> Docker {
    Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
        .expect("connect")
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("no engine at {host}: {e}"))
}

/// dockmaster's own kind of runtime: one thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
