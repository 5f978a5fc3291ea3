//! Where the CLI finds its control plane and token: `--url`/`--token`,
//! then `OUTPOST_URL`/`OUTPOST_TOKEN`, then the login `outpost login`
//! saved under the chosen profile (`--profile`/`OUTPOST_PROFILE`, else
//! the file's `current`, else `default`) in
//! `$OUTPOST_CONFIG_DIR/config.toml`, else
//! `$XDG_CONFIG_HOME/outpost/config.toml`, else
//! `~/.config/outpost/config.toml`.
//!
//! ```toml
//! current = "staging"
//! [profile.default]
//! url = "https://cp.example.com"
//! token = "opt_…"
//! [profile.staging]
//! url = "https://cp.staging.example.com"
//! token = "opt_…"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Used when nothing names a control plane: what `outpost dev` serves.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// The profile used when neither `--profile` nor the file chooses one.
pub const DEFAULT_PROFILE: &str = "default";

/// One saved login.
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

/// The config file: saved logins by profile name.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used when no `--profile` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Saved logins.
    #[serde(
        default,
        rename = "profile",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub profiles: BTreeMap<String, Saved>,
    // A file written before profiles existed held one login at the top
    // level: it is read as the `default` profile and written back in the
    // new shape by the next save.
    #[serde(default, skip_serializing)]
    url: Option<String>,
    #[serde(default, skip_serializing)]
    token: Option<String>,
    #[serde(default, skip_serializing)]
    ca_file: Option<PathBuf>,
}

impl ConfigFile {
    /// The profile to use: `chosen` (the flag or `OUTPOST_PROFILE`), else
    /// the file's current one, else `default`.
    pub fn profile_name(&self, chosen: Option<&str>) -> String {
        chosen
            .or(self.current.as_deref())
            .unwrap_or(DEFAULT_PROFILE)
            .to_string()
    }

    /// The login saved under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Saved> {
        self.profiles.get(name)
    }

    fn migrate(&mut self) {
        if self.url.is_some() || self.token.is_some() {
            let legacy = Saved {
                url: self.url.take(),
                token: self.token.take(),
                ca_file: self.ca_file.take(),
            };
            self.profiles
                .entry(DEFAULT_PROFILE.to_string())
                .or_insert(legacy);
        }
    }
}

/// A profile name: 1-63 characters of a-z, 0-9, '-' and '_' (it is a
/// TOML table key and is printed in tables).
pub fn check_profile_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("profile name {name:?} must be 1-63 characters of a-z, 0-9, '-' and '_'");
    }
    Ok(())
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

/// The config file (empty if there is none).
pub fn load() -> anyhow::Result<ConfigFile> {
    let path = path()?;
    let mut file: ConfigFile = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    file.migrate();
    Ok(file)
}

/// Writes the config file (readable by its owner only: it holds tokens),
/// replacing it whole so a crash leaves the old file or the new one.
pub fn save(file: &ConfigFile) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = path()?;
    let dir = path.parent().context("the config path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string(file).context("encoding the config")?;
    let temp = path.with_extension("toml.new");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options
        .open(&temp)
        .with_context(|| format!("writing {}", temp.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_before_profiles_is_the_default_profile() {
        let mut file: ConfigFile =
            toml::from_str("url = \"https://cp.example\"\ntoken = \"opt_x\"\n").unwrap();
        file.migrate();
        let saved = file.get(DEFAULT_PROFILE).expect("migrated");
        assert_eq!(saved.url.as_deref(), Some("https://cp.example"));
        assert_eq!(saved.token.as_deref(), Some("opt_x"));
        let text = toml::to_string(&file).unwrap();
        assert!(text.starts_with("[profile.default]\n"), "{text}");
    }

    #[test]
    fn the_flag_wins_over_the_current_profile() {
        let file = ConfigFile {
            current: Some("staging".into()),
            ..ConfigFile::default()
        };
        assert_eq!(file.profile_name(Some("prod")), "prod");
        assert_eq!(file.profile_name(None), "staging");
        assert_eq!(ConfigFile::default().profile_name(None), "default");
    }

    #[test]
    fn profile_names_are_checked() {
        for bad in ["", "Prod", "a b", "x.y", "a]b", &"x".repeat(64)] {
            assert!(check_profile_name(bad).is_err(), "{bad:?}");
        }
        check_profile_name("prod-eu_1").unwrap();
    }
}
