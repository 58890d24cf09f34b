//! The command line, completed from the `--config` file of `segport serve`.
//!
//! The file's keys are the long names of `serve`'s flags, so there is one list of settings
//! (the flags, with their types, defaults and environment variables) and one set of value
//! checks: a value from the file is handed to clap as if it had been given as `--key=value`,
//! but only when neither that flag nor its environment variable was set. Precedence is thus
//! flag > environment > file > default. Values are never logged (the file may hold the
//! database URL and its password).

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};

use crate::cli::Cli;

const SERVE: &str = "serve";

/// Parses `args` (the program name first); a `serve` command takes what its flags and the
/// environment left unset from its `--config` file. Clap's own errors, `--help` and
/// `--version` come back as `clap::Error` inside the `anyhow::Error`.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let matches = Cli::command().try_get_matches_from(&args)?;
    let Some(serve) = matches.subcommand_matches(SERVE) else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(path) = serve.get_one::<std::path::PathBuf>("config") else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let extra = file_args(path, serve)?;
    let mut args = args;
    args.extend(extra);
    Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| anyhow::anyhow!("{}", e.render()))
        .with_context(|| format!("invalid setting in {}", path.display()))
}

/// The file's settings that no flag or environment variable overrides, as `--key=value`.
fn file_args(path: &Path, given: &clap::ArgMatches) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    // A TOML syntax error names its line and column; it never echoes a whole value.
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message()))
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let command = Cli::command();
    let Some(serve) = command.find_subcommand(SERVE) else { bail!("no serve command") };
    let settable: Vec<&clap::Arg> = serve
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "config" && l != "help"))
        .filter(|a| !a.is_hide_set())
        .collect();
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for (key, value) in &table {
        let Some(arg) = settable.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            unknown.push(key.as_str());
            continue;
        };
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) if matches!(arg.get_action(), ArgAction::SetTrue) => {
                if *b {
                    out.push(OsString::from(format!("--{key}")));
                }
                continue;
            }
            toml::Value::Boolean(b) => b.to_string(),
            _ => bail!(
                "{}: `{key}` must be a string, a number or a boolean, as on the command line",
                path.display()
            ),
        };
        out.push(OsString::from(format!("--{key}={text}")));
    }
    if !unknown.is_empty() {
        let known: Vec<&str> = settable.iter().filter_map(|a| a.get_long()).collect();
        bail!(
            "{}: unknown key{} {}; the keys are the long flags of `segport serve`: {}",
            path.display(),
            if unknown.len() == 1 { "" } else { "s" },
            unknown.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
            known.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cli::Command;

    fn serve(file: &str, args: &[&str]) -> anyhow::Result<crate::cli::ServeArgs> {
        let dir = std::env::temp_dir().join(format!("segport-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{n}.toml"));
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["segport".into(), "serve".into()];
        argv.push(format!("--config={}", path.display()).into());
        argv.extend(args.iter().map(OsString::from));
        let parsed = parse(argv);
        let _ = std::fs::remove_file(&path);
        match parsed?.command {
            Command::Serve(s) => Ok(*s),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset() {
        let s = serve(
            "worker-slots = 5\nlease = \"1m\"\nretention = \"30d\"\nlisten = \"127.0.0.1:9999\"\n",
            &["--worker-slots=3"],
        )
        .unwrap();
        assert_eq!(s.worker_slots, 3, "a flag beats the file");
        assert_eq!(s.worker.lease, std::time::Duration::from_secs(60));
        assert_eq!(s.worker.retention, Some(std::time::Duration::from_secs(30 * 86_400)));
        assert_eq!(s.listen.port(), 9999);
        // Unset in the file and on the command line: the default.
        assert_eq!(s.worker.heartbeat, std::time::Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let e = serve("lisen = \"0.0.0.0:1\"\nworker-slots = 2\n", &[]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("unknown key `lisen`"), "{text}");
        assert!(text.contains("listen"), "the known keys are listed: {text}");

        let e = serve("lease = \"soon\"\n", &[]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("--lease") && text.contains("soon"), "{text}");

        let e = serve("role = [\"api\"]\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("`role` must be"), "{e:#}");

        let e = serve("lease = \n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
    }

    #[test]
    fn secrets_in_the_file_are_not_echoed_in_errors() {
        let file = "database-url = \"postgres://u:hunter2@db/segport\"\nworker-slots = \"many\"\n";
        let text = format!("{:#}", serve(file, &[]).unwrap_err());
        assert!(text.contains("worker-slots") || text.contains("many"), "{text}");
        assert!(!text.contains("hunter2"), "the password leaked into: {text}");
    }
}
