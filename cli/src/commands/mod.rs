//! One function per command; they talk to the control plane through
//! [`Client`] and print a table (or, with `--json`, the API's JSON).

mod apps;
mod cache;
pub(crate) mod deploy;
mod fleet;
mod login;
pub(crate) mod plan;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::args::{Cli, Command};
use crate::client::Client;
use crate::config;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON for scripts instead of tables.
    pub json: bool,
    /// No progress bars or spinners (also off when stderr is not a
    /// terminal).
    pub quiet: bool,
}

impl Out {
    /// Whether to draw progress on stderr: a person is watching it.
    pub fn progress(&self) -> bool {
        use std::io::IsTerminal as _;
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }
}

impl Out {
    /// Prints `value` as JSON (with `--json`) or runs `human`.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce()) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("API values serialize")
            );
        } else {
            human();
        }
    }
}

/// Prints rows under headers, columns padded to fit.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Dev(dev) => return crate::dev::run(dev).await,
        Command::New(cmd) => return crate::project::new(cmd),
        Command::Build(cmd) => return crate::project::build_command(cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "outpost", &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                // `outpost completions bash | head` is not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing the completion script"),
            };
        }
        _ => {}
    }
    let file = config::load()?;
    if let Some(name) = &cli.profile {
        config::check_profile_name(name)?;
    }
    let profile = file.profile_name(cli.profile.as_deref());
    match cli.command {
        Command::Logout => return login::logout(file, &profile, out),
        Command::Profiles(cmd) => return login::profiles(file, cmd, out),
        _ => {}
    }
    let saved = match file.get(&profile) {
        Some(saved) => saved.clone(),
        // Only the implicit default may be missing: a profile someone
        // named that holds nothing is a typo, not "use the defaults".
        None if profile == config::DEFAULT_PROFILE || matches!(cli.command, Command::Login) => {
            config::Saved::default()
        }
        None => bail!(
            "no login is saved under profile {profile}; `outpost login --profile {profile} --url URL --token TOKEN` saves one"
        ),
    };
    let cli_url_given = cli.url.is_some();
    let url = cli
        .url
        .or(saved.url)
        .unwrap_or_else(|| config::DEFAULT_URL.to_string());
    let source = match (&cli.token, &saved.token) {
        (Some(_), _) => Some(login::TokenSource::Given),
        (None, Some(_)) => Some(login::TokenSource::Saved(profile.clone())),
        (None, None) => None,
    };
    let token = cli.token.or(saved.token);
    // A CA saved with another URL is not this one's.
    let ca_file = match (cli.ca_file, cli_url_given) {
        (Some(file), _) => Some(file),
        (None, false) => saved.ca_file,
        (None, true) => None,
    };
    let client = Client::new(&url, token.clone(), ca_file.as_deref())?;
    match cli.command {
        Command::Login => login::login(&client, token, ca_file, file, &profile, out).await,
        Command::Whoami => login::whoami(&client, source, out).await,
        Command::Tenants(cmd) => fleet::tenants(&client, cmd, out).await,
        Command::Tokens(cmd) => fleet::tokens(&client, cmd, out).await,
        Command::Nodes(args) => fleet::nodes(&client, args.command, out).await,
        Command::Apps(cmd) => apps::apps(&client, cmd, out).await,
        Command::Env(cmd) => apps::env(&client, cmd, out).await,
        Command::Secrets(cmd) => apps::secrets(&client, cmd, out).await,
        Command::Certs(cmd) => apps::certs(&client, cmd, out).await,
        Command::Deploy(cmd) => deploy::deploy(&client, cmd, out).await,
        Command::Deployments { app } => deploy::deployments(&client, &app, out).await,
        Command::Rollback(cmd) => deploy::rollback(&client, cmd, out).await,
        Command::Logs(cmd) => deploy::logs(&client, cmd, out).await,
        Command::Cache(crate::args::Cache::Purge(cmd)) => cache::purge(&client, cmd, out).await,
        Command::Dev(_)
        | Command::New(_)
        | Command::Build(_)
        | Command::Completions { .. }
        | Command::Logout
        | Command::Profiles(_) => {
            unreachable!("handled above")
        }
    }
}

/// Unix seconds as a time relative to now, for tables: `just now`,
/// `5 min ago`, `3 h ago`, `12 days ago`, `in 89 days` (`--json` keeps
/// the exact value).
pub fn ago(unix: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    ago_at(unix, now)
}

fn ago_at(unix: i64, now: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    let (secs, future) = if unix > now {
        (unix - now, true)
    } else {
        (now - unix, false)
    };
    let span = match secs {
        0..10 => return "just now".into(),
        10..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..172_800 => format!("{} h", secs / 3_600),
        _ => format!("{} days", secs / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM` UTC.
pub fn when(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_render_in_utc() {
        assert_eq!(super::when(0), "-");
        assert_eq!(super::when(1_795_644_752), "2026-11-25 22:12");
        assert_eq!(super::when(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn times_in_tables_are_relative() {
        let now = 1_795_644_752;
        for (then, want) in [
            (0, "-"),
            (now - 3, "just now"),
            (now - 42, "42 s ago"),
            (now - 5 * 60 - 7, "5 min ago"),
            (now - 3 * 3600, "3 h ago"),
            (now - 12 * 86_400, "12 days ago"),
            (now + 89 * 86_400 + 5, "in 89 days"),
        ] {
            assert_eq!(super::ago_at(then, now), want);
        }
    }
}
