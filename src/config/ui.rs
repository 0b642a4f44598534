//! `[ui]`: the dashboard at `/ui/`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, AdminSettings, AuthSettings, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUi {
    pub enabled: Option<bool>,
    pub vendor_dir: Option<PathBuf>,
    pub viewer_token: Option<String>,
}

/// The dashboard's settings.
#[derive(Debug, Clone, Default)]
pub struct UiSettings {
    /// Serve the dashboard at `/ui/` (off by default: a gateway exposes no page unless asked).
    pub enabled: bool,
    /// Where `npm ci --prefix web` put the player libraries; `None`: `web/node_modules` under
    /// the current directory, then under the source tree the binary was built from.
    pub vendor_dir: Option<PathBuf>,
    /// A viewer token the dashboard's player uses unless the operator types another: one of
    /// `auth.tokens`, handed only to callers holding the admin token (the demo sets it).
    pub viewer_token: Option<String>,
}

pub(super) fn validate(
    r: RawUi,
    auth: &AuthSettings,
    admin: &AdminSettings,
) -> Result<UiSettings, ConfigError> {
    let enabled = r.enabled.unwrap_or(false);
    if enabled && admin.token.is_none() {
        return Err(invalid(
            "ui.enabled",
            "the dashboard logs in with the admin token: set [admin] token",
        ));
    }
    if let Some(t) = &r.viewer_token {
        if !auth.tokens.iter().any(|k| k == t) {
            return Err(invalid(
                "ui.viewer_token",
                "must be one of auth.tokens (it is what the dashboard's player presents)",
            ));
        }
    }
    if r.vendor_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        return Err(invalid("ui.vendor_dir", "cannot be empty"));
    }
    Ok(UiSettings {
        enabled,
        vendor_dir: r.vendor_dir,
        viewer_token: r.viewer_token,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn off_by_default_and_checked_when_on() {
        let s = parse("").expect("empty config");
        assert!(!s.ui.enabled && s.ui.viewer_token.is_none() && s.ui.vendor_dir.is_none());
        let e = parse("[ui]\nenabled = true\n")
            .expect_err("no admin token")
            .to_string();
        assert!(e.starts_with("ui.enabled:"), "{e}");
        let s = parse(
            "[admin]\ntoken = \"a\"\n[auth]\ntokens = [\"v\"]\n[ui]\nenabled = true\nviewer_token = \"v\"\nvendor_dir = \"/opt/web\"\n",
        )
        .expect("valid");
        assert!(s.ui.enabled);
        assert_eq!(s.ui.viewer_token.as_deref(), Some("v"));
        assert_eq!(
            s.ui.vendor_dir.as_deref(),
            Some(std::path::Path::new("/opt/web"))
        );
        let e = parse("[auth]\ntokens = [\"v\"]\n[ui]\nviewer_token = \"w\"\n")
            .expect_err("not a viewer token")
            .to_string();
        assert!(e.starts_with("ui.viewer_token:"), "{e}");
        assert!(parse("[ui]\nvendor_dir = \"\"\n").is_err());
        assert!(parse("[ui]\nenable = true\n").is_err(), "unknown key");
    }
}
