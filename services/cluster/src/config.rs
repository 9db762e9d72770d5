//! The optional configuration file: `--config FILE` (or `PONDER_CONFIG`) names a TOML
//! file whose keys are the command's own long flags, e.g.
//!
//! ```toml
//! listen = "0.0.0.0:50051"
//! max-queries = 128
//! etcd = ["http://etcd-0:2379", "http://etcd-1:2379"]
//! status-addresses = true
//! ```
//!
//! Precedence: a flag on the command line, then its `PONDER_*` variable, then the file,
//! then the default (docs/cluster.md, "Configuration file"). A key that is no flag of the
//! command is an error naming it, so a typo never goes unnoticed.
//!
//! Why through clap rather than a serde struct: every setting already is a clap flag
//! with its validation, default and variable; the file adds values as if they were
//! typed, only for flags that the command line and environment left unset (clap's
//! `value_source` tells), so there is one definition of each setting.

use clap::parser::ValueSource;
use clap::{ArgAction, Parser};
use std::ffi::OsString;
use std::path::Path;

/// The flag and variable that name the file.
pub const CONFIG_FLAG: &str = "config";
pub const CONFIG_ENV: &str = "PONDER_CONFIG";

/// Parses the process's arguments as `T` with its configuration file applied; exits
/// with clap's usage status (2) and a message on error, like `T::parse()`.
pub fn parse<T: Parser>() -> T {
    parse_from(std::env::args_os())
}

/// [`parse`] over `argv` (its first item is the program name).
pub fn parse_from<T: Parser>(argv: impl IntoIterator<Item = impl Into<OsString>>) -> T {
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    match try_parse_from::<T>(&argv) {
        Ok(t) => t,
        Err(e) => e.exit(),
    }
}

/// [`parse_from`] without exiting.
pub fn try_parse_from<T: Parser>(argv: &[OsString]) -> Result<T, clap::Error> {
    let mut cmd = T::command();
    let matches = cmd.try_get_matches_from_mut(argv.iter().cloned())?;
    let file = matches
        .try_get_one::<std::path::PathBuf>(CONFIG_FLAG)
        .ok()
        .flatten()
        .cloned();
    let Some(file) = file else {
        return T::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd));
    };
    let extra = from_file(&cmd, &matches, &file)
        .map_err(|m| cmd.error(clap::error::ErrorKind::InvalidValue, m))?;
    let mut full = argv.to_vec();
    full.extend(extra);
    let matches = cmd.try_get_matches_from_mut(full)?;
    T::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// The arguments the file adds: `--key=value` for each key whose flag the command line
/// and environment left unset.
fn from_file(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
    file: &Path,
) -> Result<Vec<OsString>, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("--config {}: {e}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("--config {}: {e}", file.display()))?;
    let mut extra = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != CONFIG_FLAG)
            .ok_or_else(|| {
                format!(
                    "--config {}: {key:?} is not a flag of {} (keys are the long flags, e.g. \
                     max-queries)",
                    file.display(),
                    cmd.get_name()
                )
            })?;
        let given = matches.value_source(arg.get_id().as_str());
        if matches!(
            given,
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{long}");
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let text = scalar(v).ok_or_else(|| {
                format!(
                    "--config {}: {key} must be a string, number or boolean (or a list of them)",
                    file.display()
                )
            })?;
            if switch {
                match v {
                    toml::Value::Boolean(true) => extra.push(OsString::from(&flag)),
                    toml::Value::Boolean(false) => {}
                    _ => {
                        return Err(format!(
                            "--config {}: {key} is a switch: true or false",
                            file.display()
                        ))
                    }
                }
            } else {
                extra.push(OsString::from(format!("{flag}={text}")));
            }
        }
    }
    Ok(extra)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long, env = "PONDER_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[arg(long, env = "PONDER_TEST_CONFIG_QUERIES", default_value_t = 64)]
        max_queries: usize,
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        #[arg(long)]
        status_addresses: bool,
        #[arg(long, default_value = "default")]
        cluster: String,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let argv: Vec<OsString> = std::iter::once("test")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        try_parse_from::<Args>(&argv)
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_unset() {
        let f = file(
            "max-queries = 128\netcd = [\"http://a:2379\", \"http://b:2379\"]\n\
             status_addresses = true\ncluster = \"prod\"\n",
        );
        let path = f.path().to_str().unwrap();
        let a = parse(&["--config", path]).unwrap();
        assert_eq!(a.max_queries, 128);
        assert_eq!(a.etcd, ["http://a:2379", "http://b:2379"]);
        assert!(a.status_addresses);
        assert_eq!(a.cluster, "prod");
        // The command line wins over the file.
        let a = parse(&["--config", path, "--max-queries", "7", "--cluster", "dev"]).unwrap();
        assert_eq!((a.max_queries, a.cluster.as_str()), (7, "dev"));
        // No file: the defaults.
        assert_eq!(parse(&[]).unwrap().max_queries, 64);
    }

    #[test]
    fn a_key_that_is_no_flag_or_a_bad_value_is_an_error_naming_it() {
        let f = file("max-querys = 5\n");
        let e = parse(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("\"max-querys\" is not a flag"),
            "{e}"
        );
        let f = file("max-queries = \"many\"\n");
        let e = parse(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("many"), "{e}");
        let f = file("status-addresses = \"yes\"\n");
        let e = parse(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("switch"), "{e}");
        let e = parse(&["--config", "/nonexistent/ponder.toml"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ponder.toml"), "{e}");
    }
}
