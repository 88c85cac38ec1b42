//! Disk use as the engine counts it (`GET /system/df`): per image its size and the part it
//! shares with other images, and the total size of all layers on disk.
//!
//! Asked over plain HTTP on the engine's socket: bollard's model of this endpoint follows
//! the newest API (`ImageUsage`), while engines up to API 1.51 (Debian's 20.10 speaks 1.41)
//! answer with `LayersSize` and `Images`; both shapes are read here.

use std::collections::HashMap;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::error::{Error, Result};
use crate::engine::Engine;

#[derive(Clone, Copy, Debug, Default)]
pub struct ImageUsage {
    pub size: i64,
    /// Bytes in layers other images use too (so removing this image alone does not free them).
    pub shared: i64,
    /// Containers (running or not) created from it.
    pub containers: i64,
}

impl ImageUsage {
    /// What removing this image alone would free.
    pub fn unique(&self) -> i64 {
        (self.size - self.shared.max(0)).max(0)
    }
}

#[derive(Debug, Default)]
pub struct DiskUsage {
    /// All image layers on disk, each counted once.
    pub layers_size: i64,
    pub images: HashMap<String, ImageUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    layers_size: Option<i64>,
    images: Option<Vec<RawImage>>,
    image_usage: Option<RawUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawUsage {
    total_size: Option<i64>,
    items: Option<Vec<RawImage>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawImage {
    id: String,
    size: Option<i64>,
    shared_size: Option<i64>,
    containers: Option<i64>,
}

impl Engine {
    /// Whether the engine's disk-usage count walks every volume and container too: engines
    /// before API 1.42 (Docker 23.0; Debian 12's docker.io 20.10 speaks 1.41) ignore
    /// `type=image`, so the count takes as long as reading every file in every volume.
    pub fn disk_count_walks_volumes(&self) -> bool {
        let v = self.docker().client_version();
        (v.major_version, v.minor_version) < (1, 42)
    }

    /// The disk-usage count if the engine gives it within `wait`, else `None`: for a
    /// listing that must answer promptly whatever the volumes hold.
    pub async fn disk_usage_within(&self, wait: std::time::Duration) -> Result<Option<DiskUsage>> {
        match tokio::time::timeout(wait, self.disk_usage()).await {
            Ok(usage) => usage.map(Some),
            Err(_) => Ok(None),
        }
    }

    pub async fn disk_usage(&self) -> Result<DiskUsage> {
        let v = self.docker().client_version();
        let path = format!(
            "/v{}.{}/system/df?type=image",
            v.major_version, v.minor_version
        );
        // The engine computes one disk usage at a time and refuses a second meanwhile
        // ("a disk usage operation is already running"): wait for it, within bounds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let body = loop {
            match raw_get(&path).await {
                // The refusal is an HTTP 500 like any other failure of the count: its text
                // is the only thing that tells "busy, ask again" from "broken".
                Err(Error::DiskUsageUnavailable {
                    status: Some(500),
                    reason,
                    ..
                }) if reason.contains("already running")
                    && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let raw: Raw = serde_json::from_slice(&body).map_err(|e| Error::DiskUsageUnreadable {
            reason: e.to_string(),
        })?;
        let (layers, items) = match (raw.images, raw.image_usage) {
            (Some(images), _) => (raw.layers_size.unwrap_or(0), images),
            (None, Some(u)) => (u.total_size.unwrap_or(0), u.items.unwrap_or_default()),
            (None, None) => (raw.layers_size.unwrap_or(0), vec![]),
        };
        Ok(DiskUsage {
            layers_size: layers,
            images: items
                .into_iter()
                .map(|i| {
                    (
                        i.id,
                        ImageUsage {
                            size: i.size.unwrap_or(0),
                            shared: i.shared_size.unwrap_or(0),
                            containers: i.containers.unwrap_or(0),
                        },
                    )
                })
                .collect(),
        })
    }
}

/// GET a path on the engine given by `DOCKER_HOST` (unix or tcp), as the CLI finds it.
pub(crate) async fn raw_get(path: &str) -> Result<Vec<u8>> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let fail = |e: &dyn std::fmt::Display| Error::DiskUsageUnavailable {
        host: host.clone(),
        status: None,
        reason: e.to_string(),
    };
    let req = hyper::Request::get(path)
        .header("Host", "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    let resp = if let Some(sock) = host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(|e| fail(&e))?;
        send(stream, req).await
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(&e))?;
        send(stream, req).await
    } else {
        return Err(fail(
            &"only unix:// and tcp:// engines are supported for this",
        ));
    };
    resp.map_err(|(status, reason)| Error::DiskUsageUnavailable {
        host: host.clone(),
        status,
        reason,
    })
}

/// The body of a successful answer; else the HTTP status (when the engine answered) and
/// what went wrong.
async fn send<S>(
    stream: S,
    req: hyper::Request<Empty<Bytes>>,
) -> std::result::Result<Vec<u8>, (Option<u16>, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let no_answer = |e: hyper::Error| (None, e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(no_answer)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(no_answer)?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(no_answer)?
        .to_bytes();
    if !status.is_success() {
        return Err((
            Some(status.as_u16()),
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    Ok(body.to_vec())
}
