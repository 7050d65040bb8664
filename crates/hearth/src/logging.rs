//! Logging as etcd's `--logger=zap` does it (`server/embed/config_logging.go`, `client/pkg/logutil`):
//! `--log-level`, `--log-outputs` (`default`/`stderr`, `stdout`, `systemd/journal`, file paths, several at
//! once), `--log-format` (`json`, etcd 3.6's default, or `console`), `--enable-log-rotation` with
//! `--log-rotation-config-json`.
//!
//! Every `tracing` event of the process becomes one line. In JSON the fields are zap's, in zap's order:
//! `level` (`debug`, `info`, `warn`, `error`), `ts` (ISO 8601 with microseconds, as etcd's encoder writes
//! it; always UTC here, so it ends in `Z`), `caller` (`dir/file.rs:line`, zap's short caller), `msg`, then
//! the event's own fields at the top level, their names with dashes for underscores (`client_url` is
//! logged as etcd's `client-url`; a `tracing` field name cannot hold a dash). `console` is zap's console layout (tab-separated `ts`,
//! `level`, `caller`, `msg`, then the fields as one JSON object).
//!
//! Colour: etcd never colours its logs. Hearth colours only the level word of `console` lines written to
//! a terminal (`std::io::IsTerminal`, decided per output); a file, a pipe and JSON never get escape codes.
//!
//! Design: one `tracing_subscriber` layer formats each event once and writes the line to each output
//! under that output's own lock, so lines from different threads never interleave. Writes are
//! unbuffered (one `write` per line): a crash loses no line already logged, at one syscall per line,
//! which is etcd's trade-off too. A failed write is dropped (there is nowhere left to report it).
//! `systemd/journal` speaks journald's native protocol on its datagram socket, as etcd does (priority
//! from the level, `SYSLOG_IDENTIFIER`, `PACKAGE`); if a send fails the line goes to stderr, etcd's
//! fallback. Rotation follows lumberjack, etcd's rotating writer: the file is renamed to
//! `<name>-<UTC time>.<ext>` when a write would take it past `maxsize` megabytes, and backups beyond
//! `maxbackups` or older than `maxage` days are removed; `compress` and `localtime` are refused.
//! `RUST_LOG`, when set, overrides `--log-level` with `tracing`'s filter syntax (for debugging Hearth).

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::flags::Values;

/// journald's socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Console,
}

/// One `--log-outputs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Stderr,
    Stdout,
    Journal,
    File(PathBuf),
}

/// lumberjack's settings (`--log-rotation-config-json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rotation {
    pub max_size_mb: u64,
    pub max_age_days: u64,
    pub max_backups: u64,
}

/// Everything the logger is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// The least severe level written.
    pub level: Level,
    pub format: Format,
    pub outputs: Vec<Output>,
    pub rotation: Option<Rotation>,
}

impl Default for LogConfig {
    /// etcd's logger before its flags are known: info, JSON, stderr.
    fn default() -> Self {
        LogConfig {
            level: Level::INFO,
            format: Format::Json,
            outputs: vec![Output::Stderr],
            rotation: None,
        }
    }
}

/// zap's level names (etcd's `--log-level`), mapped onto `tracing`'s levels: `dpanic`, `panic` and `fatal`
/// keep only errors, the most severe `tracing` has.
pub(crate) fn parse_level(s: &str) -> Result<Level, String> {
    Ok(match s {
        "debug" | "DEBUG" => Level::DEBUG,
        "info" | "INFO" | "" => Level::INFO,
        "warn" | "WARN" => Level::WARN,
        "error" | "ERROR" | "dpanic" | "DPANIC" | "panic" | "PANIC" | "fatal" | "FATAL" => {
            Level::ERROR
        }
        other => return Err(format!("unrecognized level: {other:?}")),
    })
}

/// etcd's `setupLogging` checks, with its messages.
pub(crate) fn config_from(values: &Values) -> Result<LogConfig, String> {
    match values.str("logger").as_str() {
        "zap" => {}
        "capnslog" => return Err("--logger=capnslog is removed in v3.5".into()),
        other => return Err(format!("unknown logger option {other:?}")),
    }
    let mut names = values.list("log-outputs");
    if names.is_empty() {
        names = vec!["default".into()];
    }
    if names.len() > 1 && names.iter().any(|n| n == "default") {
        return Err("multi logoutput for \"default\" is not supported yet".into());
    }
    let rotation = if values.bool("enable-log-rotation") {
        Some(rotation_from(
            &names,
            &values.str("log-rotation-config-json"),
        )?)
    } else {
        None
    };
    let journal = names.iter().any(|n| n == "systemd/journal");
    if journal && names.len() > 1 {
        return Err(format!(
            "running with systemd/journal but other '--log-outputs' values ({}) are configured with 'default'; override 'default' value with something else",
            go_list(&names)
        ));
    }
    let outputs = names
        .iter()
        .map(|n| match n.as_str() {
            "default" | "stderr" => Output::Stderr,
            "stdout" => Output::Stdout,
            "systemd/journal" => Output::Journal,
            path => Output::File(PathBuf::from(path)),
        })
        .collect();
    let format = match values.str("log-format").as_str() {
        "json" | "" => Format::Json,
        "console" => Format::Console,
        other => {
            return Err(format!(
                "unknown log format: {other}, supported values json, console"
            ))
        }
    };
    Ok(LogConfig {
        level: parse_level(&values.str("log-level"))?,
        format,
        outputs,
        rotation,
    })
}

fn go_list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// etcd's `setupLogRotation`: exactly one file among the outputs, and lumberjack's JSON settings.
fn rotation_from(outputs: &[String], json: &str) -> Result<Rotation, String> {
    let files = outputs
        .iter()
        .filter(|o| !matches!(o.as_str(), "default" | "stderr" | "stdout"))
        .count();
    if (outputs.len() == 1 && files == 0) || files > 1 {
        return Err(
            "--log-outputs requires a single file path when --log-rotate-config-json is defined"
                .into(),
        );
    }
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("improperly formatted log rotation config: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("invalid log rotation config: not a JSON object")?;
    let num = |k: &str| -> Result<u64, String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("invalid log rotation config: {k} must be a non-negative integer")
            }),
        }
    };
    let flag = |k: &str| -> Result<bool, String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("invalid log rotation config: {k} must be a boolean")),
        }
    };
    if flag("compress")? {
        return Err("--log-rotation-config-json: compress=true is not supported yet".into());
    }
    if flag("localtime")? {
        return Err("--log-rotation-config-json: localtime=true is not supported yet".into());
    }
    let max_size_mb = match num("maxsize")? {
        0 => 100,
        n => n,
    };
    Ok(Rotation {
        max_size_mb,
        max_age_days: num("maxage")?,
        max_backups: num("maxbackups")?,
    })
}

/// Installs the logger for the whole process. Fails (installing nothing) if an output cannot be opened.
pub(crate) fn install(cfg: &LogConfig) -> Result<(), String> {
    let layer = ZapLayer::new(cfg)?;
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => tracing_subscriber::EnvFilter::new(s),
        _ => tracing_subscriber::EnvFilter::new(cfg.level.as_str().to_lowercase()),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

/// Installs etcd's logger of last resort (info, JSON, stderr).
pub(crate) fn install_default() {
    let _ = install(&LogConfig::default());
}

/// Fields for [`crate::notice`]: carried through `tracing` as one `zap_fields` field, merged back into
/// the line's top level by the layer.
pub(crate) fn fields_json(fields: &[(&'static str, String)]) -> String {
    serde_json::to_string(fields).unwrap_or_default()
}

/// The field that carries [`fields_json`].
const ZAP_FIELDS: &str = "zap_fields";

/// Where one output's lines go.
enum Sink {
    Stderr { color: bool },
    Stdout { color: bool },
    File(Mutex<File>),
    Rotating(Mutex<Rotator>),
    Journal(UnixDatagram),
}

struct ZapLayer {
    format: Format,
    sinks: Vec<Sink>,
    identifier: String,
}

impl ZapLayer {
    fn new(cfg: &LogConfig) -> Result<ZapLayer, String> {
        let mut sinks = Vec::new();
        let mut seen: Vec<&Output> = Vec::new();
        for o in &cfg.outputs {
            // zap merges duplicate output paths.
            if seen.contains(&o) {
                continue;
            }
            seen.push(o);
            sinks.push(match o {
                Output::Stderr => Sink::Stderr {
                    color: std::io::stderr().is_terminal(),
                },
                Output::Stdout => Sink::Stdout {
                    color: std::io::stdout().is_terminal(),
                },
                Output::Journal => Sink::Journal(
                    connect_journal(Path::new(JOURNAL_SOCKET))
                        .map_err(|e| format!("can't find journal ({e})"))?,
                ),
                Output::File(p) => match &cfg.rotation {
                    Some(r) => Sink::Rotating(Mutex::new(
                        Rotator::open(p, r.clone()).map_err(|e| open_error(p, &e))?,
                    )),
                    None => Sink::File(Mutex::new(open_log(p).map_err(|e| open_error(p, &e))?)),
                },
            });
        }
        let identifier = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "hearth".into());
        Ok(ZapLayer {
            format: cfg.format,
            sinks,
            identifier,
        })
    }
}

fn open_error(p: &Path, e: &std::io::Error) -> String {
    format!("open {}: {e}", p.display())
}

fn open_log(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

fn connect_journal(path: &Path) -> std::io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(path)?;
    Ok(s)
}

/// zap's level word.
fn level_word(l: &Level) -> &'static str {
    match *l {
        Level::TRACE | Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// journald's priority for a level (etcd's mapping).
fn priority(l: &Level) -> u8 {
    match *l {
        Level::TRACE | Level::DEBUG => 7,
        Level::INFO => 6,
        Level::WARN => 4,
        Level::ERROR => 3,
    }
}

/// zap's short caller: the file's directory and name, with Cargo's `src` left out
/// (`crates/server/src/raft_node.rs` → `server/raft_node.rs`).
fn short_caller(file: &str, line: u32) -> String {
    let parts: Vec<&str> = file
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != "src")
        .collect();
    let tail = &parts[parts.len().saturating_sub(2)..];
    format!("{}:{line}", tail.join("/"))
}

/// ISO 8601 in UTC with microseconds, etcd's `2006-01-02T15:04:05.000000Z0700`.
fn timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Collects an event's message and fields in their order.
#[derive(Default)]
struct Collect {
    msg: String,
    fields: Vec<(String, serde_json::Value)>,
}

impl Collect {
    fn put(&mut self, field: &Field, v: serde_json::Value) {
        if field.name() == "message" {
            self.msg = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else if field.name() == ZAP_FIELDS {
            if let serde_json::Value::String(s) = &v {
                if let Ok(pairs) = serde_json::from_str::<Vec<(String, String)>>(s) {
                    for (k, v) in pairs {
                        self.fields.push((k, serde_json::Value::String(v)));
                    }
                }
            }
        } else {
            // zap's field names use dashes; tracing's cannot.
            self.fields.push((field.name().replace('_', "-"), v));
        }
    }
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The line for one event (with its newline); `color` only matters for `console`.
fn format_line(
    format: Format,
    level: &Level,
    ts: &str,
    caller: &str,
    c: &Collect,
    color: bool,
) -> String {
    match format {
        Format::Json => {
            let mut s = format!(
                "{{\"level\":{},\"ts\":{},\"caller\":{},\"msg\":{}",
                json_str(level_word(level)),
                json_str(ts),
                json_str(caller),
                json_str(&c.msg)
            );
            for (k, v) in &c.fields {
                s.push(',');
                s.push_str(&json_str(k));
                s.push(':');
                s.push_str(&v.to_string());
            }
            s.push_str("}\n");
            s
        }
        Format::Console => {
            let word = level_word(level);
            let word = if color {
                let code = match *level {
                    Level::ERROR => "31",
                    Level::WARN => "33",
                    Level::INFO => "34",
                    _ => "35",
                };
                format!("\x1b[{code}m{word}\x1b[0m")
            } else {
                word.to_string()
            };
            let mut s = format!("{ts}\t{word}\t{caller}\t{}", c.msg);
            if !c.fields.is_empty() {
                let obj: Vec<String> = c
                    .fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", json_str(k), v))
                    .collect();
                s.push_str(&format!("\t{{{}}}", obj.join(",")));
            }
            s.push('\n');
            s
        }
    }
}

impl<S: Subscriber> Layer<S> for ZapLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut c = Collect::default();
        event.record(&mut c);
        let ts = timestamp(SystemTime::now());
        let caller = match (meta.file(), meta.line()) {
            (Some(f), Some(l)) => short_caller(f, l),
            _ => meta.target().to_string(),
        };
        let level = meta.level();
        let plain = format_line(self.format, level, &ts, &caller, &c, false);
        for sink in &self.sinks {
            match sink {
                Sink::Stderr { color } => {
                    let line = if *color && self.format == Format::Console {
                        format_line(self.format, level, &ts, &caller, &c, true)
                    } else {
                        plain.clone()
                    };
                    let _ = std::io::stderr().lock().write_all(line.as_bytes());
                }
                Sink::Stdout { color } => {
                    let line = if *color && self.format == Format::Console {
                        format_line(self.format, level, &ts, &caller, &c, true)
                    } else {
                        plain.clone()
                    };
                    let _ = std::io::stdout().lock().write_all(line.as_bytes());
                }
                Sink::File(f) => {
                    if let Ok(mut f) = f.lock() {
                        let _ = f.write_all(plain.as_bytes());
                    }
                }
                Sink::Rotating(r) => {
                    if let Ok(mut r) = r.lock() {
                        let _ = r.write(plain.as_bytes());
                    }
                }
                Sink::Journal(sock) => {
                    let package = caller.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
                    let dgram = journal_datagram(
                        priority(level),
                        &self.identifier,
                        package,
                        plain.as_bytes(),
                    );
                    if sock.send(&dgram).is_err() {
                        let _ = std::io::stderr().lock().write_all(plain.as_bytes());
                    }
                }
            }
        }
    }
}

/// One journald native-protocol datagram; `MESSAGE` in the binary-safe form (the line has a newline).
fn journal_datagram(priority: u8, identifier: &str, package: &str, line: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(line.len() + 96);
    b.extend_from_slice(format!("PRIORITY={priority}\n").as_bytes());
    b.extend_from_slice(format!("SYSLOG_IDENTIFIER={identifier}\n").as_bytes());
    b.extend_from_slice(format!("PACKAGE={package}\n").as_bytes());
    b.extend_from_slice(b"MESSAGE\n");
    b.extend_from_slice(&(line.len() as u64).to_le_bytes());
    b.extend_from_slice(line);
    b.push(b'\n');
    b
}

/// A size-rotated log file, lumberjack's way.
struct Rotator {
    path: PathBuf,
    file: File,
    size: u64,
    cfg: Rotation,
}

impl Rotator {
    fn open(path: &Path, cfg: Rotation) -> std::io::Result<Rotator> {
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        Ok(Rotator {
            path: path.to_path_buf(),
            file,
            size,
            cfg,
        })
    }

    fn max_bytes(&self) -> u64 {
        self.cfg.max_size_mb.saturating_mul(1024 * 1024)
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes() {
            self.rotate(SystemTime::now())?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `name.ext` → `name-<time>.ext`.
    fn backup_name(&self, t: SystemTime) -> PathBuf {
        let (stem, ext) = split_name(&self.path);
        let t = time::OffsetDateTime::from(t);
        let stamp = format!(
            "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        self.path.with_file_name(format!("{stem}-{stamp}{ext}"))
    }

    fn rotate(&mut self, now: SystemTime) -> std::io::Result<()> {
        std::fs::rename(&self.path, self.backup_name(now))?;
        self.file = open_log(&self.path)?;
        self.size = 0;
        self.remove_old(now);
        Ok(())
    }

    /// Removes backups beyond `maxbackups` (newest kept) and older than `maxage` days.
    fn remove_old(&self, now: SystemTime) {
        let (stem, ext) = split_name(&self.path);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = format!("{stem}-");
        let mut backups: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stamp = name.strip_prefix(&prefix)?.strip_suffix(ext.as_str())?;
                // The stamp sorts as the time it names.
                (stamp.len() == 23).then(|| (stamp.to_string(), e.path()))
            })
            .collect();
        backups.sort_by(|a, b| b.0.cmp(&a.0));
        let cutoff = (self.cfg.max_age_days > 0).then(|| {
            let t = now
                .checked_sub(Duration::from_secs(self.cfg.max_age_days * 86_400))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            self.backup_name(t)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        for (i, (stamp, path)) in backups.iter().enumerate() {
            let too_many = self.cfg.max_backups > 0 && i as u64 >= self.cfg.max_backups;
            let too_old = cutoff
                .as_ref()
                .is_some_and(|c| format!("{prefix}{stamp}{ext}") < *c);
            if too_many || too_old {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// `dir/name.ext` → (`name`, `.ext`).
fn split_name(p: &Path) -> (String, String) {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse_args, Command};
    use crate::notice::Notices;

    fn values(a: &[&str]) -> Values {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        match parse_args(&a, &mut Notices::default()).unwrap() {
            Command::Run(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn etcds_logging_flags_and_errors() {
        let c = config_from(&values(&[])).unwrap();
        assert_eq!(c, LogConfig::default());
        let c = config_from(&values(&[
            "--log-outputs=stdout,/tmp/x.log",
            "--log-level=warn",
            "--log-format=console",
        ]))
        .unwrap();
        assert_eq!(c.level, Level::WARN);
        assert_eq!(c.format, Format::Console);
        assert_eq!(
            c.outputs,
            [Output::File("/tmp/x.log".into()), Output::Stdout]
        );
        let err = |a: &[&str]| config_from(&values(a)).unwrap_err();
        assert_eq!(
            err(&["--logger=capnslog"]),
            "--logger=capnslog is removed in v3.5"
        );
        assert_eq!(err(&["--logger=x"]), "unknown logger option \"x\"");
        assert_eq!(err(&["--log-level=loud"]), "unrecognized level: \"loud\"");
        assert_eq!(
            err(&["--log-format=xml"]),
            "unknown log format: xml, supported values json, console"
        );
        assert_eq!(
            err(&["--log-outputs=default,stdout"]),
            "multi logoutput for \"default\" is not supported yet"
        );
        assert!(err(&["--log-outputs=systemd/journal,stdout"])
            .starts_with("running with systemd/journal"));
        assert_eq!(
            err(&["--enable-log-rotation"]),
            "--log-outputs requires a single file path when --log-rotate-config-json is defined"
        );
        assert!(err(&[
            "--enable-log-rotation",
            "--log-outputs=/a",
            "--log-rotation-config-json={"
        ])
        .starts_with("improperly formatted log rotation config"));
        assert_eq!(
            config_from(&values(&[
                "--enable-log-rotation",
                "--log-outputs=/a,stderr",
                "--log-rotation-config-json={\"maxsize\":1,\"maxbackups\":2}"
            ]))
            .unwrap()
            .rotation,
            Some(Rotation {
                max_size_mb: 1,
                max_age_days: 0,
                max_backups: 2
            })
        );
    }

    #[test]
    fn json_lines_have_zaps_fields_in_zaps_order() {
        let c = Collect {
            msg: "serving \"client\" requests".into(),
            fields: vec![
                ("address".into(), "127.0.0.1:2379".into()),
                ("count".into(), 3.into()),
            ],
        };
        let line = format_line(
            Format::Json,
            &Level::WARN,
            "2024-01-02T03:04:05.000006Z",
            "server/lib.rs:1",
            &c,
            true,
        );
        assert_eq!(
            line,
            "{\"level\":\"warn\",\"ts\":\"2024-01-02T03:04:05.000006Z\",\"caller\":\"server/lib.rs:1\",\"msg\":\"serving \\\"client\\\" requests\",\"address\":\"127.0.0.1:2379\",\"count\":3}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "serving \"client\" requests");
    }

    #[test]
    fn console_lines_are_coloured_only_when_asked() {
        let c = Collect {
            msg: "m".into(),
            fields: vec![("k".into(), "v".into())],
        };
        let plain = format_line(Format::Console, &Level::INFO, "T", "a/b.rs:1", &c, false);
        assert_eq!(plain, "T\tinfo\ta/b.rs:1\tm\t{\"k\":\"v\"}\n");
        assert!(!plain.contains('\x1b'));
        let colored = format_line(Format::Console, &Level::INFO, "T", "a/b.rs:1", &c, true);
        assert!(colored.contains("\x1b[34minfo\x1b[0m"));
    }

    #[test]
    fn callers_timestamps_and_levels() {
        assert_eq!(
            short_caller("crates/server/src/raft_node.rs", 7),
            "server/raft_node.rs:7"
        );
        assert_eq!(
            short_caller("crates/server/src/v3rpc/watch.rs", 7),
            "v3rpc/watch.rs:7"
        );
        assert_eq!(short_caller("main.rs", 1), "main.rs:1");
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_level("fatal"), Ok(Level::ERROR));
        assert_eq!(parse_level("DEBUG"), Ok(Level::DEBUG));
    }

    #[test]
    fn journal_datagrams_use_the_binary_safe_message() {
        let d = journal_datagram(4, "hearth", "server", b"{}\n");
        let mut want = b"PRIORITY=4\nSYSLOG_IDENTIFIER=hearth\nPACKAGE=server\nMESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"{}\n\n");
        assert_eq!(d, want);
        // And a journal socket receives it.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("journal");
        let server = UnixDatagram::bind(&sock).unwrap();
        let client = connect_journal(&sock).unwrap();
        client.send(&d).unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &d[..]);
    }

    #[test]
    fn rotation_renames_past_maxsize_and_keeps_maxbackups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.log");
        let mut r = Rotator::open(
            &path,
            Rotation {
                max_size_mb: 1,
                max_age_days: 0,
                max_backups: 2,
            },
        )
        .unwrap();
        let line = vec![b'x'; 400 * 1024];
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for i in 0..4 {
            r.write(&line).unwrap();
            r.write(&line).unwrap();
            // Rotate at chosen times so the backups have distinct names.
            r.rotate(t0 + Duration::from_secs(i)).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "member-2023-11-14T22-13-22.000.log",
                "member-2023-11-14T22-13-23.000.log",
                "member.log"
            ]
        );
        // A write that would pass maxsize rotates first.
        r.write(&line).unwrap();
        r.write(&line).unwrap();
        r.write(&line).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024 * 1024);
    }
}
