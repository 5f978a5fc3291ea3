//! Where the CLI finds its control plane and token: `--url`/`--token`,
//! then `OUTPOST_URL`/`OUTPOST_TOKEN`, then the file `outpost login`
//! writes (`$OUTPOST_CONFIG_DIR/config.toml`, else
//! `$XDG_CONFIG_HOME/outpost/config.toml`, else
//! `~/.config/outpost/config.toml`).

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Used when nothing names a control plane: what `outpost dev` serves.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// The saved login.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// Control plane URL.
    pub url: Option<String>,
    /// Bearer token (admin or tenant).
    pub token: Option<String>,
    /// CA file the control plane's certificate is verified against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The config file's path.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OUTPOST_CONFIG_DIR") {
        return Ok(PathBuf::from(dir).join("config.toml"));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("HOME is not set; set OUTPOST_CONFIG_DIR")?,
        )
        .join(".config"),
    };
    Ok(base.join("outpost").join("config.toml"))
}

/// The saved login, if any.
pub fn load() -> anyhow::Result<Saved> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves a login (the file is readable by its owner only: it holds a token).
pub fn save(saved: &Saved) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(saved).context("encoding the config")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
