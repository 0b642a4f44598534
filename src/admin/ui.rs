//! The dashboard's static files at `/ui/`: our own page (`web/dashboard/`, embedded in the binary
//! at compile time) and the two player libraries, read at request time from where
//! `npm ci --prefix web` installed them (pinned in `web/package-lock.json`, never copied into
//! the repository).
//!
//! Only the names listed here are served, each mapped to a fixed file: no part of the request
//! path ever becomes part of a file system path, so there is nothing to traverse. The page needs
//! no credential (it holds none); it asks the operator for the admin token and calls the admin
//! API with it.

use std::path::{Path, PathBuf};

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, Body};
use crate::error::GatewayError;

/// Our own files, embedded: (name under `/ui/`, content, Content-Type).
const OWN: &[(&str, &str, &str)] = &[
    (
        "index.html",
        include_str!("../../web/dashboard/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "app.js",
        include_str!("../../web/dashboard/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "style.css",
        include_str!("../../web/dashboard/style.css"),
        "text/css; charset=utf-8",
    ),
];

/// The player libraries: (name under `/ui/vendor/`, package, file inside the npm install dir).
const VENDOR: &[(&str, &str, &str)] = &[
    ("hls.min.js", "hls.js", "hls.js/dist/hls.min.js"),
    ("mpegts.js", "mpegts.js", "mpegts.js/dist/mpegts.js"),
];

/// Largest vendor file served: the pinned builds are well under 1 MiB; anything much bigger is
/// not what we installed, and is not read into memory.
pub const MAX_VENDOR_BYTES: u64 = 4 * 1024 * 1024;

/// What the page may do: scripts, styles and media from the gateway only (MSE hands the video
/// element `blob:` URLs, hls.js runs its worker from one), connections to the gateway only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Whether `path` is the dashboard's.
pub fn handles(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Where the player libraries are looked for.
#[derive(Debug, Clone)]
pub struct VendorDirs(Vec<PathBuf>);

impl VendorDirs {
    /// `configured`, or `web/node_modules` under the current directory and then under the
    /// source tree this binary was built from.
    pub fn new(configured: Option<&Path>) -> Self {
        Self(match configured {
            Some(d) => vec![d.to_path_buf()],
            None => vec![
                PathBuf::from("web/node_modules"),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules"),
            ],
        })
    }

    /// The installed file for a vendor entry, if any directory has it.
    fn find(&self, rel: &str) -> Option<PathBuf> {
        self.0.iter().map(|d| d.join(rel)).find(|p| p.is_file())
    }

    /// Which player libraries are installed, by package name (for the page's hint).
    pub fn installed(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (_, pkg, rel) in VENDOR {
            m.insert((*pkg).to_string(), self.find(rel).is_some().into());
        }
        m.into()
    }
}

fn with_headers(
    mut resp: Response<Body>,
    ctype: &'static str,
    cache: &'static str,
) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    resp
}

/// `/ui` → `/ui/`, so the page's relative links resolve under it.
pub fn redirect_to_index() -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    r
}

/// Serves `/ui/<name>` (`name` empty: the page).
pub async fn serve(name: &str, vendor: &VendorDirs) -> Result<Response<Body>, GatewayError> {
    let name = if name.is_empty() { "index.html" } else { name };
    if let Some((_, text, ctype)) = OWN.iter().find(|(n, _, _)| *n == name) {
        // Small and built into the binary: revalidate every time, so an upgrade shows at once.
        return Ok(with_headers(Response::new(full(*text)), ctype, "no-cache"));
    }
    let Some(vname) = name.strip_prefix("vendor/") else {
        return Err(GatewayError::NoRoute);
    };
    let (_, pkg, rel) = VENDOR
        .iter()
        .find(|(n, _, _)| *n == vname)
        .ok_or(GatewayError::NoRoute)?;
    let path = vendor.find(rel).ok_or(GatewayError::NotInstalled(pkg))?;
    let bytes = read_bounded(&path).await.map_err(|e| {
        tracing::warn!(file = %path.display(), error = %e, "player library unreadable");
        GatewayError::NotInstalled(pkg)
    })?;
    // Pinned by the lockfile, so stable for a while; an `npm ci` to another version shows
    // within the hour.
    Ok(with_headers(
        Response::new(full(bytes)),
        "text/javascript; charset=utf-8",
        "public, max-age=3600",
    ))
}

async fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::new();
    f.take(MAX_VENDOR_BYTES + 1).read_to_end(&mut buf).await?;
    if buf.len() as u64 > MAX_VENDOR_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_VENDOR_BYTES} bytes"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_listed_names_are_served() {
        let dirs = VendorDirs::new(Some(Path::new("/nonexistent")));
        for bad in [
            "../Cargo.toml",
            "vendor/../../Cargo.toml",
            "vendor/hls.js/dist/hls.min.js",
            "index.htm",
            "vendor/",
        ] {
            assert!(
                matches!(serve(bad, &dirs).await, Err(GatewayError::NoRoute)),
                "{bad}"
            );
        }
        let page = serve("", &dirs).await.expect("index");
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(matches!(
            serve("vendor/hls.min.js", &dirs).await,
            Err(GatewayError::NotInstalled("hls.js"))
        ));
        assert_eq!(dirs.installed()["mpegts.js"], false);
    }

    #[tokio::test]
    async fn vendor_files_are_bounded() {
        let dir = std::env::temp_dir().join(format!("sg-ui-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("mpegts.js/dist")).expect("mkdir");
        std::fs::create_dir_all(dir.join("hls.js/dist")).expect("mkdir");
        std::fs::write(dir.join("mpegts.js/dist/mpegts.js"), "var mpegts;").expect("write");
        let big = std::fs::File::create(dir.join("hls.js/dist/hls.min.js")).expect("create");
        big.set_len(MAX_VENDOR_BYTES + 1).expect("grow");
        let dirs = VendorDirs::new(Some(&dir));
        let ok = serve("vendor/mpegts.js", &dirs).await.expect("served");
        assert_eq!(ok.headers()[header::CACHE_CONTROL], "public, max-age=3600");
        assert!(serve("vendor/hls.min.js", &dirs).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
