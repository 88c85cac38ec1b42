//! The proxy's image, built locally from the running dockmaster binary — nothing pulled.
//!
//! The image is `FROM scratch` with this executable and exactly the shared libraries it has
//! loaded (read from /proc/self/maps), plus glibc's name-service modules so the proxy can
//! resolve app containers by name through Docker's DNS. The release build is static
//! (`.cargo/config.toml`): it has no shared library mapped, and the image holds the binary
//! alone (glibc ≥ 2.34 has the `files` and `dns` name services built in, also when linked
//! statically). Its tag is derived from the binary, so a new dockmaster version builds a
//! new image once and an unchanged one reuses it.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::error::{self, Error, Result};
use crate::engine::Engine;

pub const REPOSITORY: &str = "dockmaster-proxy";

/// The image ref for this binary, building it if the engine does not have it yet.
pub async fn ensure(engine: &Engine) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::NoExecutable {
        reason: e.to_string(),
    })?;
    let meta = std::fs::metadata(&exe).map_err(|e| Error::ExecutableUnreadable {
        path: exe.clone(),
        reason: e.to_string(),
    })?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    exe.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    let image = format!(
        "{REPOSITORY}:{}-{:012x}",
        env!("CARGO_PKG_VERSION"),
        h.finish() & 0xffff_ffff_ffff
    );
    if engine.image_id(&image).await?.is_some() {
        return Ok(image);
    }
    let context = context_tar(&exe).map_err(|e| Error::ProxyPack {
        reason: e.to_string(),
    })?;
    let opts = BuildImageOptionsBuilder::default()
        .t(&image)
        .rm(true)
        .forcerm(true)
        .build();
    // Sent in slices of the one buffer: a single 12 MiB body is copied once more on its
    // way to the socket, which made the proxy build the peak memory of a first deploy.
    let context = bytes::Bytes::from(context);
    let slices: Vec<bytes::Bytes> = (0..context.len())
        .step_by(256 * 1024)
        .map(|at| context.slice(at..context.len().min(at + 256 * 1024)))
        .collect();
    let body = bollard::body_stream(futures_util::stream::iter(slices));
    let mut stream = engine.docker().build_image(opts, None, Some(body));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            let (status, reason) = error::status_and_message(e);
            Error::ProxyImageFailed {
                image: image.clone(),
                status,
                reason,
            }
        })?;
        if let Some(detail) = info.error_detail {
            return Err(Error::ProxyImageFailed {
                image: image.clone(),
                status: None,
                reason: detail.message.unwrap_or_default(),
            });
        }
    }
    remove_unused_older(engine, &image).await;
    Ok(image)
}

/// Proxy images of other dockmaster builds that no container uses any more. Best effort:
/// the engine refuses to remove an image a container uses, and that is the point.
async fn remove_unused_older(engine: &Engine, current: &str) {
    let Ok(images) = engine.repository_images(REPOSITORY).await else {
        return;
    };
    // Only images at least an hour old: another dockmaster build may have just made one
    // for a switch it is about to do.
    let hour_ago = jiff::Timestamp::now().as_second() - 3600;
    for img in images {
        if img.repo_tags.iter().any(|t| t == current) || img.created > hour_ago {
            continue;
        }
        for tag in &img.repo_tags {
            if let Err(e) = engine.untag(tag).await {
                tracing::debug!(%tag, %e, "older proxy image kept");
            }
        }
    }
}

fn context_tar(exe: &Path) -> std::io::Result<Vec<u8>> {
    let libs = shared_libraries()?;
    tracing::debug!(
        static_exe = libs.is_empty(),
        libs = libs.len(),
        "proxy image context"
    );
    // Sized up front: the binary is most of it (~12 MiB), and growing the buffer by
    // doubling would hold two copies at once, the peak memory of a first deploy.
    let size: u64 = std::iter::once(exe)
        .chain(libs.iter().map(PathBuf::as_path))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len().div_ceil(512) * 512 + 512)
        .sum();
    let mut tar = tar::Builder::new(Vec::with_capacity(size as usize + 16 * 1024));
    // The proxy runs as nobody (65534) where the ports allow it: its state directory is
    // that user's, and /tmp is writable by all, as on any system.
    let dockerfile = "FROM scratch\nCOPY rootfs/ /\nCOPY --chown=65534:65534 state/ /var/lib/dockmaster-proxy/\nLABEL dev.dockmaster.role=proxy-image\nENTRYPOINT [\"/dockmaster\"]\n";
    append_bytes(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
    append_bytes(
        &mut tar,
        "rootfs/etc/nsswitch.conf",
        b"hosts: files dns\n",
        0o644,
    )?;
    append_bytes(&mut tar, "state/.keep", b"", 0o644)?;
    append_dir(&mut tar, "rootfs/tmp", 0o1777)?;
    append_bytes(&mut tar, "rootfs/tmp/.keep", b"", 0o644)?;
    append_file(&mut tar, exe, Path::new("rootfs/dockmaster"))?;
    for lib in &libs {
        let rel = lib.strip_prefix("/").unwrap_or(lib);
        append_file(&mut tar, lib, &Path::new("rootfs").join(rel))?;
    }
    tar.into_inner()
}

/// The shared libraries this process needs in the image: those it has mapped, the program
/// interpreter under the name the binary asks for, and glibc's name-service modules. None
/// for a static executable (nothing ending in `.so…` is mapped).
fn shared_libraries() -> std::io::Result<BTreeSet<PathBuf>> {
    let mut libs: BTreeSet<PathBuf> = BTreeSet::new();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        if let Some(path) = line.split_whitespace().nth(5)
            && path.starts_with('/')
            && path.contains(".so")
        {
            libs.insert(PathBuf::from(path));
        }
    }
    // The program interpreter is mapped under its real path (e.g. /usr/lib/…) but the
    // binary names it by its conventional one (/lib64/ld-linux-x86-64.so.2): add that too.
    let interps: Vec<PathBuf> = libs
        .iter()
        .filter(|l| {
            l.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
        })
        .cloned()
        .collect();
    for interp in interps {
        if let Some(name) = interp.file_name() {
            for dir in ["/lib64", "/lib"] {
                let p = Path::new(dir).join(name);
                if p.exists() {
                    libs.insert(p);
                }
            }
        }
    }
    // glibc loads these only when it first resolves a name: include them if present.
    let lib_dirs: BTreeSet<PathBuf> = libs
        .iter()
        .filter_map(|l| l.parent().map(Path::to_path_buf))
        .collect();
    for dir in lib_dirs {
        for name in ["libnss_dns.so.2", "libnss_files.so.2", "libresolv.so.2"] {
            let p = dir.join(name);
            if p.is_file() {
                libs.insert(p);
            }
        }
    }
    Ok(libs)
}

/// A plain regular-file entry (the tar crate would write a sparse entry for a sparse file,
/// which the engine's legacy builder rejects), following symlinks.
fn append_file(tar: &mut tar::Builder<Vec<u8>>, src: &Path, dst: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(src)?;
    let len = file.metadata()?.len();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, dst, file)
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, format!("{path}/"), std::io::empty())
}

fn append_bytes(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, path, Cursor::new(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(Cursor::new(tar));
        let mut names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    /// The tests are built like the release (static, `.cargo/config.toml`): the image is
    /// the binary and the few files dockmaster writes. A dynamic build gets its libraries.
    #[test]
    fn a_static_executable_goes_alone_a_dynamic_one_with_its_libraries() {
        let exe = std::env::current_exe().unwrap();
        let names = entries(&context_tar(&exe).unwrap());
        let libs = shared_libraries().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        if maps.contains(".so") {
            assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
            assert!(!libs.is_empty());
        } else {
            assert!(libs.is_empty(), "{libs:?}");
            assert_eq!(
                names,
                [
                    "Dockerfile",
                    "rootfs/dockmaster",
                    "rootfs/etc/nsswitch.conf",
                    "rootfs/tmp/",
                    "rootfs/tmp/.keep",
                    "state/.keep",
                ]
            );
        }
    }
}
