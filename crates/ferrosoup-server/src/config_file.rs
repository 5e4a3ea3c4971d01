//! The `--config` TOML file as a layer of the command line: each key names a setting of
//! [`Config`] (its field name), and its value becomes that setting's default before clap
//! parses, so flags and environment variables still win (flags > env > file > defaults).
//! The keys are not listed here: they are the [`Config`] arguments themselves, so a setting
//! added there is a file key at once.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches};

use crate::config::{Cli, Config};

/// A parsed command line with its file layer.
pub struct Loaded {
    /// Flags, environment and file, merged.
    pub cli: Cli,
    /// What clap saw: where each value came from.
    pub matches: ArgMatches,
    /// The file read (if any) and the keys it set.
    pub file: Option<(PathBuf, BTreeSet<String>)>,
}

/// Why the command line and its file cannot be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// From clap: a bad flag or environment value, or `--help` / `--version`.
    Cli(clap::Error),
    /// The `--config` file: unreadable, not TOML, an unknown key or a bad value.
    File(String),
}

/// Parses `args` (the program name first) with the environment and the `--config` file.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // First pass: where the file is (and every flag checked once without it).
    let first = Cli::command()
        .try_get_matches_from(&args)
        .map_err(LoadError::Cli)?;
    let cli = Cli::from_arg_matches(&first).map_err(LoadError::Cli)?;
    let Some(path) = cli.config_file.clone() else {
        return Ok(Loaded {
            cli,
            matches: first,
            file: None,
        });
    };
    let table = read_table(&path).map_err(LoadError::File)?;
    let mut command = Cli::command();
    let mut keys = BTreeSet::new();
    for (key, value) in &table {
        let arg = setting(key).ok_or_else(|| LoadError::File(unknown_key(&path, key)))?;
        let values = string_values(value)
            .map_err(|e| LoadError::File(format!("{}: {key}: {e}", path.display())))?;
        check_value(&arg, &values)
            .map_err(|e| LoadError::File(format!("{}: {key} = {value}: {e}", path.display())))?;
        command = command.mut_arg(key, |a| a.default_values(values));
        keys.insert(key.clone());
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(LoadError::Cli)?;
    let cli = Cli::from_arg_matches(&matches).map_err(LoadError::Cli)?;
    Ok(Loaded {
        cli,
        matches,
        file: Some((path, keys)),
    })
}

/// The settings' arguments (those of [`Config`], in declaration order).
fn settings() -> clap::Command {
    Config::augment_args(clap::Command::new("settings"))
}

/// The argument of the setting named `key`.
fn setting(key: &str) -> Option<clap::Arg> {
    settings()
        .get_arguments()
        .find(|a| a.get_id().as_str() == key)
        .cloned()
}

fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The message for a key that names no setting, with the likely one when the key is an
/// environment variable's or a flag's spelling of it.
fn unknown_key(path: &Path, key: &str) -> String {
    let normalized = key.trim_start_matches('-').replace('-', "_").to_lowercase();
    let hint = setting(&normalized)
        .map(|a| format!(" (did you mean `{}`?)", a.get_id()))
        .unwrap_or_default();
    format!(
        "{}: unknown key `{key}`{hint}; `ferrosoup config print` lists the settings",
        path.display()
    )
}

/// A TOML value as the strings clap parses: a scalar is one string (split at commas like
/// an environment variable for the list settings), an array one string per element.
fn string_values(value: &toml::Value) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(_) => Err("a date is no setting's value".to_owned()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("expected a string, number or boolean".to_owned())
        }
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        toml::Value::Table(_) => {
            Err("a table is no setting's value (settings are top-level keys)".to_owned())
        }
        v => scalar(v).map(|s| vec![s]),
    }
}

/// Parses `values` as `arg` would (alone, without its environment variable), so that a bad
/// value is reported with the file and key rather than as a default of a flag.
fn check_value(arg: &clap::Arg, values: &[String]) -> Result<(), String> {
    if values.len() > 1 && !matches!(arg.get_action(), clap::ArgAction::Append) {
        return Err("expected one value, not a list".to_owned());
    }
    let probe = arg
        .clone()
        .env(None::<&'static str>)
        .default_values(values.to_vec());
    clap::Command::new("probe")
        .arg(probe)
        .try_get_matches_from(["probe"])
        .map(|_| ())
        .map_err(|e| first_line(&e.render().to_string()))
}

/// The first line of a clap error, without its `error: ` prefix.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Where a setting's effective value came from.
fn source(matches: &ArgMatches, file_keys: Option<&BTreeSet<String>>, id: &str) -> &'static str {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "environment",
        _ if file_keys.is_some_and(|k| k.contains(id)) => "file",
        _ => "default",
    }
}

/// The effective configuration as TOML, each setting under its help line with where its
/// value came from; secrets (settings whose environment values clap hides) are masked
/// and commented out, unset settings commented out.
pub fn render(loaded: &Loaded) -> Result<String, String> {
    let values = toml::Table::try_from(&loaded.cli.config).map_err(|e| e.to_string())?;
    let file_keys = loaded.file.as_ref().map(|(_, k)| k);
    let mut out = String::from(
        "# ferrosoup: effective configuration (flags > environment > file > defaults)\n",
    );
    if let Some((path, _)) = &loaded.file {
        out.push_str(&format!("# file: {}\n", path.display()));
    }
    for arg in settings().get_arguments() {
        let id = arg.get_id().as_str();
        let value = values.get(id).filter(|v| !is_empty(v));
        let from = source(&loaded.matches, file_keys, id);
        if arg.is_hide_set() && value.is_none() {
            continue;
        }
        out.push('\n');
        if let Some(help) = arg.get_help() {
            out.push_str(&format!("# {help}\n"));
        }
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        match value {
            None => out.push_str(&format!("# {id} =   (unset; env {env})\n")),
            Some(_) if arg.is_hide_env_values_set() => out.push_str(&format!(
                "# {id} = \"********\"   (set, from {from}; masked; env {env})\n"
            )),
            Some(v) => out.push_str(&format!("{id} = {v}   # from {from}; env {env}\n")),
        }
    }
    Ok(out)
}

/// An empty string or list counts as unset (as the settings treat them).
fn is_empty(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.is_empty(),
        toml::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file under the system's temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> TempFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ferrosoup-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write the test file");
        TempFile(path)
    }

    fn load_ok(args: &[&str]) -> Loaded {
        match load(args.iter().copied()) {
            Ok(l) => l,
            Err(LoadError::Cli(e)) => panic!("{e}"),
            Err(LoadError::File(e)) => panic!("{e}"),
        }
    }

    fn file_error(args: &[&str]) -> String {
        match load(args.iter().copied()) {
            Err(LoadError::File(e)) => e,
            Err(LoadError::Cli(e)) => panic!("a clap error, not the file's: {e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    // Precedence against the environment is tested on the real binary (tests/config.rs):
    // these tests must not depend on the variables of the process that runs them.

    #[test]
    fn file_values_fill_settings_and_flags_win() {
        let f = file(
            "max_rooms = 7\nsession_grace = 3\nannounced_ip = [\"192.0.2.1\", \"192.0.2.2\"]\n\
             ice_consent_timeout = 12.5\nfault_injection = true\nlog_format = \"json\"\n",
        );
        let l = load_ok(&["ferrosoup", "--config", &f.arg(), "--session-grace", "9"]);
        let c = &l.cli.config;
        assert_eq!(c.max_rooms, 7);
        assert_eq!(c.session_grace, 9, "the flag wins over the file");
        assert_eq!(c.announced_ip.len(), 2);
        assert_eq!(c.ice_consent_timeout, 12.5);
        assert!(c.fault_injection);
        assert_eq!(c.log_format, crate::config::LogFormat::Json);
        let keys = &l.file.as_ref().expect("file").1;
        assert!(keys.contains("max_rooms") && keys.len() == 6);
        assert_eq!(source(&l.matches, Some(keys), "max_rooms"), "file");
        assert_eq!(source(&l.matches, Some(keys), "session_grace"), "flag");
    }

    #[test]
    fn the_config_flag_works_after_a_subcommand_too() {
        let f = file("max_peers_per_room = 3\n");
        let l = load_ok(&["ferrosoup", "config", "print", "--config", &f.arg()]);
        assert_eq!(l.cli.config.max_peers_per_room, 3);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let f = file("port = 3000\nmax_romos = 4\n");
        let e = file_error(&["ferrosoup", "--config", &f.arg()]);
        assert!(e.contains("unknown key `max_romos`"), "{e}");
        let f = file("MAX_ROOMS = 4\n");
        let e = file_error(&["ferrosoup", "--config", &f.arg()]);
        assert!(e.contains("did you mean `max_rooms`?"), "{e}");
    }

    #[test]
    fn a_bad_value_names_the_file_and_key() {
        let f = file("max_rooms = \"many\"\n");
        let e = file_error(&["ferrosoup", "--config", &f.arg()]);
        assert!(
            e.contains("max_rooms = \"many\"") && e.contains("invalid"),
            "{e}"
        );
        let f = file("port = [1, 2]\n");
        let e = file_error(&["ferrosoup", "--config", &f.arg()]);
        assert!(e.contains("port") && e.contains("one value"), "{e}");
        let f = file("[limits]\nmax_rooms = 1\n");
        let e = file_error(&["ferrosoup", "--config", &f.arg()]);
        assert!(e.contains("unknown key `limits`"), "{e}");
        let f = file("port = \n");
        let e = file_error(&["ferrosoup", "--config", &f.arg()]);
        assert!(e.contains(&f.arg()), "{e}");
        let e = file_error(&["ferrosoup", "--config", "/nonexistent/ferrosoup.toml"]);
        assert!(e.contains("/nonexistent/ferrosoup.toml"), "{e}");
    }

    #[test]
    fn print_masks_secrets_and_reads_back() {
        let f = file(
            "auth_secret = \"a-secret-of-at-least-thirty-two-bytes!\"\nturn_secret = \"turn-s3cret\"\n\
             turn_urls = [\"turn:turn.example.com:3478\"]\nmax_rooms = 5\n",
        );
        let l = load_ok(&["ferrosoup", "--config", &f.arg()]);
        let text = render(&l).expect("renders");
        assert!(
            !text.contains("thirty-two") && !text.contains("turn-s3cret"),
            "{text}"
        );
        assert!(text.contains("# auth_secret = \"********\""), "{text}");
        assert!(text.contains("# turn_secret = \"********\""), "{text}");
        assert!(text.contains("max_rooms = 5   # from file"), "{text}");
        assert!(text.contains("# num_workers =   (unset"), "{text}");
        // What it prints is a valid file that gives the same settings (secrets aside).
        let again = file(&text);
        let l2 = load_ok(&["ferrosoup", "--config", &again.arg()]);
        assert_eq!(l2.cli.config.max_rooms, 5);
        assert_eq!(l2.cli.config.turn_urls, l.cli.config.turn_urls);
        assert_eq!(l2.cli.config.auth_secret, None);
    }
}
