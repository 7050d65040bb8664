//! Failpoints: named places in the server where a robustness test can make the process crash, stall or
//! see an I/O error, named after etcd's gofail points so that etcd's robustness scenarios translate
//! one to one. The list of points and where they sit is in `docs/failpoints.md`. This crate is the one
//! fault-injection mechanism of the server: crashes during a snapshot install, a defragmentation held
//! in its copy phase and a member cut off from its peers are all failpoints.
//!
//! # Turning them on
//!
//! Only through the environment, never a flag or an RPC, so production (which sets neither variable)
//! cannot trip one and nothing on the network can arm one:
//!
//! * [`ENV`] (`HEARTH_FAILPOINTS`): points armed from the start, read once, on the first [`init`] or
//!   the first hit, whichever comes first;
//! * [`FILE_ENV`] (`HEARTH_FAILPOINTS_FILE`): a file, same syntax, re-read whenever its content
//!   changes (it is polled every [`FILE_POLL`] by a thread of its own), so a test can arm and disarm
//!   points while the process runs. A point the file names takes its terms from the file; the others
//!   keep those of [`ENV`]. A missing or empty file names no point. A malformed content is logged and
//!   ignored (the previous content stays in force).
//!
//! Syntax (gofail's, minus probabilities):
//!
//! ```text
//! HEARTH_FAILPOINTS='raftAfterSave=20*off->abort;beforeCommit=sleep(50)'
//! point   = name "=" term ("->" term)*
//! term    = [count "*"] action
//! action  = off | print | sleep(<ms>) | pause | panic | abort | return[(ENOSPC|EIO)]
//! ```
//!
//! A term with a count applies to that many hits and then hands over to the next term; a term
//! without one applies forever. `20*off->abort` lets the point pass 20 times and aborts the process
//! at the 21st hit. `abort` is the simulated crash (`std::process::abort`: no destructors, no
//! flushing, exactly what a power cut leaves of the process's own state); `panic` panics the thread
//! that hit the point, which in Rust does not end the process. `pause` holds the thread that hit the
//! point until the point is armed with something else (through the file), as gofail's `pause`.
//! `return` matters only at points that stand for an I/O operation ([`hit_io`]): the operation fails
//! with that error (ENOSPC by default, the full-disk case); at other points it does nothing. A point
//! that is a state rather than an event (the peer network blackhole) is asked with [`is_on`]: it is
//! on while its current term is `return`, and asking consumes no count.
//!
//! # Cost when off
//!
//! [`hit`] is one relaxed atomic load and a branch: the variables' verdict is cached in a static the
//! first time, and the registry behind it is never consulted while neither variable is set. The
//! points stay compiled into every build, so the binary the tests crash is the binary that ships.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// The environment variable that arms failpoints from the start.
pub const ENV: &str = "HEARTH_FAILPOINTS";
/// The environment variable naming a file that arms failpoints at run time.
pub const FILE_ENV: &str = "HEARTH_FAILPOINTS_FILE";
/// How often the file named by [`FILE_ENV`] is read.
pub const FILE_POLL: Duration = Duration::from_millis(20);

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
static GLOBAL: OnceLock<Option<Failpoints>> = OnceLock::new();

/// Linux's errno values for the errors `return` can inject.
const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// A malformed [`ENV`] value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {ENV}: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Off,
    Print,
    Sleep(Duration),
    Pause,
    Panic,
    Abort,
    Return(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    /// Hits this term still applies to; `None` = all of them.
    left: Option<u64>,
    action: Action,
}

#[derive(Debug)]
struct Point {
    terms: Vec<Term>,
    at: usize,
}

impl Point {
    /// The action for one hit, advancing through counted terms.
    fn next(&mut self) -> Option<Action> {
        loop {
            let term = self.terms.get_mut(self.at)?;
            match &mut term.left {
                Some(0) => self.at += 1,
                Some(n) => {
                    *n -= 1;
                    return Some(term.action);
                }
                None => return Some(term.action),
            }
        }
    }

    /// The action the next hit would get, without counting a hit.
    fn peek(&self) -> Option<Action> {
        self.terms[self.at.min(self.terms.len())..]
            .iter()
            .find(|t| t.left != Some(0))
            .map(|t| t.action)
    }
}

/// A set of configured failpoints.
#[derive(Debug, Default)]
pub struct Registry {
    points: Mutex<HashMap<String, Point>>,
}

impl Registry {
    /// Parses `name=terms;name=terms`. An empty string configures nothing.
    pub fn parse(spec: &str) -> Result<Registry, ParseError> {
        let mut points = HashMap::new();
        for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, terms) = item
                .split_once('=')
                .ok_or_else(|| ParseError(format!("{item:?} is not name=action")))?;
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ParseError(format!("bad failpoint name {name:?}")));
            }
            let terms = terms
                .split("->")
                .map(parse_term)
                .collect::<Result<Vec<_>, _>>()?;
            points.insert(name.to_string(), Point { terms, at: 0 });
        }
        Ok(Registry {
            points: Mutex::new(points),
        })
    }

    /// The configured failpoint names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Point>> {
        // The map is only ever updated by whole-value steps; a panic elsewhere cannot tear it.
        self.points.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some` (with the action, if any term is left) when the registry names the point.
    fn next(&self, name: &str) -> Option<Option<Action>> {
        self.lock().get_mut(name).map(Point::next)
    }

    fn peek(&self, name: &str) -> Option<Option<Action>> {
        self.lock().get(name).map(Point::peek)
    }
}

/// The two layers of configuration (see the crate doc) and what a paused point waits on.
#[derive(Debug, Default)]
struct Failpoints {
    start: Registry,
    runtime: Registry,
    /// Bumped at every change of the run-time layer; paused points wait for it.
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Failpoints {
    fn new(start: Registry) -> Failpoints {
        Failpoints {
            start,
            ..Default::default()
        }
    }

    fn names(&self) -> Vec<String> {
        let mut v = self.start.names();
        v.extend(self.runtime.names());
        v.sort();
        v.dedup();
        v
    }

    fn next(&self, name: &str) -> Option<Action> {
        match self.runtime.next(name) {
            Some(a) => a,
            None => self.start.next(name).flatten(),
        }
    }

    fn peek(&self, name: &str) -> Option<Action> {
        match self.runtime.peek(name) {
            Some(a) => a,
            None => self.start.peek(name).flatten(),
        }
    }

    /// Replaces the run-time layer and wakes every paused point to look again.
    fn rearm(&self, runtime: Registry) {
        let fresh = std::mem::take(&mut *runtime.lock());
        *self.runtime.lock() = fresh;
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Holds the caller while point `name` is armed with `pause`.
    fn pause(&self, name: &str) {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        while self.peek(name) == Some(Action::Pause) {
            generation = self
                .changed
                .wait(generation)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Runs point `name` once; `io` says whether `return` makes it fail.
    fn run(&self, name: &str, io: bool) -> io::Result<()> {
        let Some(action) = self.next(name) else {
            return Ok(());
        };
        match action {
            Action::Off => Ok(()),
            Action::Print => {
                tracing::warn!(failpoint = name, "failpoint reached");
                Ok(())
            }
            Action::Sleep(d) => {
                tracing::warn!(failpoint = name, sleep = ?d, "failpoint sleeps");
                std::thread::sleep(d);
                Ok(())
            }
            Action::Pause => {
                tracing::warn!("failpoint {name} pauses until it is re-armed");
                self.pause(name);
                tracing::warn!("failpoint {name} resumes");
                Ok(())
            }
            Action::Panic => panic!("failpoint {name} panicked"),
            Action::Abort => {
                // Straight to stderr: no logging layer may buffer the one line that says why.
                eprintln!("failpoint {name}: aborting the process");
                std::process::abort()
            }
            Action::Return(errno) if io => {
                tracing::warn!(failpoint = name, errno, "failpoint fails the operation");
                Err(io::Error::from_raw_os_error(errno))
            }
            Action::Return(_) => Ok(()),
        }
    }

    fn is_on(&self, name: &str) -> bool {
        matches!(self.peek(name), Some(Action::Return(_)))
    }
}

fn parse_term(t: &str) -> Result<Term, ParseError> {
    let t = t.trim();
    let bad = |why: &str| ParseError(format!("term {t:?}: {why}"));
    if t.contains('%') {
        return Err(bad("probabilities are not supported"));
    }
    let (left, rest) = match t.split_once('*') {
        Some((n, rest)) => {
            let n = n.trim().parse::<u64>().map_err(|_| bad("bad count"))?;
            (Some(n), rest.trim())
        }
        None => (None, t),
    };
    let (name, arg) = match rest.split_once('(') {
        Some((name, arg)) => {
            let arg = arg
                .strip_suffix(')')
                .ok_or_else(|| bad("missing ')'"))?
                .trim()
                .trim_matches('"');
            (name.trim(), Some(arg))
        }
        None => (rest, None),
    };
    let action = match (name, arg) {
        ("off", None) => Action::Off,
        ("print", None) => Action::Print,
        ("pause", None) => Action::Pause,
        ("panic", None) => Action::Panic,
        ("abort", None) => Action::Abort,
        ("sleep", Some(ms)) => Action::Sleep(Duration::from_millis(
            ms.parse().map_err(|_| bad("sleep takes milliseconds"))?,
        )),
        ("return", None) | ("return", Some("ENOSPC")) => Action::Return(ENOSPC),
        ("return", Some("EIO")) => Action::Return(EIO),
        ("return", Some(_)) => return Err(bad("return takes ENOSPC or EIO")),
        _ => return Err(bad("unknown action")),
    };
    Ok(Term { left, action })
}

/// What the environment configures: `None` when neither variable is set.
fn from_env() -> Result<Option<(Registry, Option<PathBuf>)>, ParseError> {
    let start = match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => Some(Registry::parse(&spec)?),
        Ok(_) | Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(ParseError("not UTF-8".into())),
    };
    let file = std::env::var_os(FILE_ENV)
        .filter(|f| !f.is_empty())
        .map(PathBuf::from);
    if start.is_none() && file.is_none() {
        return Ok(None);
    }
    Ok(Some((start.unwrap_or_default(), file)))
}

/// The file's content, "" when it does not exist (or cannot be read: a test writing it is not
/// a reason to stop the server).
fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Arms the run-time layer from `content`; false (and logged) if it does not parse.
fn rearm_from(fp: &Failpoints, path: &Path, content: &str) -> bool {
    match Registry::parse(content) {
        Ok(reg) => {
            let names = reg.names();
            fp.rearm(reg);
            tracing::warn!(file = %path.display(), failpoints = ?names, "failpoints re-armed from the file");
            true
        }
        Err(e) => {
            tracing::error!(file = %path.display(), "{e}; the file's previous content stays in force");
            false
        }
    }
}

/// Follows the file for the rest of the process.
fn follow(fp: &'static Failpoints, path: PathBuf, mut seen: String) {
    let spawned = std::thread::Builder::new()
        .name("failpoints".into())
        .spawn(move || loop {
            std::thread::sleep(FILE_POLL);
            let content = read_file(&path);
            if content != seen {
                rearm_from(fp, &path, &content);
                seen = content;
            }
        });
    if let Err(e) = spawned {
        eprintln!("cannot follow {}: {e}", FILE_ENV);
    }
}

fn publish(config: Option<(Registry, Option<PathBuf>)>) -> Option<&'static Failpoints> {
    let mut file = None;
    let fp = GLOBAL
        .get_or_init(|| {
            config.map(|(start, path)| {
                file = path;
                Failpoints::new(start)
            })
        })
        .as_ref();
    if let (Some(fp), Some(path)) = (fp, file) {
        // Armed before anything runs, so a point the file names at start is never missed.
        let content = read_file(&path);
        rearm_from(fp, &path, &content);
        follow(fp, path, content);
    }
    STATE.store(if fp.is_some() { ON } else { OFF }, Ordering::Release);
    fp
}

/// Reads [`ENV`] and [`FILE_ENV`] (once per process) and returns the names of the configured
/// failpoints. The server calls it at start so that a malformed value stops it with an error instead
/// of being ignored.
pub fn init() -> Result<Vec<String>, ParseError> {
    if let Some(fp) = GLOBAL.get() {
        return Ok(fp.as_ref().map(Failpoints::names).unwrap_or_default());
    }
    let config = from_env()?;
    Ok(publish(config).map(Failpoints::names).unwrap_or_default())
}

#[cold]
fn init_lazily() -> Option<&'static Failpoints> {
    if let Some(fp) = GLOBAL.get() {
        return fp.as_ref();
    }
    match from_env() {
        Ok(config) => publish(config),
        Err(e) => {
            eprintln!("{e}; failpoints stay off");
            publish(None)
        }
    }
}

fn global() -> Option<&'static Failpoints> {
    match STATE.load(Ordering::Acquire) {
        OFF => None,
        ON => GLOBAL.get().and_then(Option::as_ref),
        _ => init_lazily(),
    }
}

/// Whether any failpoint can be armed in this process.
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => init_lazily().is_some(),
    }
}

/// Failpoint `name`: may sleep, pause, panic or abort the process, as configured.
#[inline]
pub fn hit(name: &'static str) {
    if enabled() {
        hit_slow(name);
    }
}

#[cold]
fn hit_slow(name: &'static str) {
    if let Some(fp) = global() {
        let _ = fp.run(name, false);
    }
}

/// Failpoint `name` standing for an I/O operation: like [`hit`], and `return` makes it an error.
#[inline]
pub fn hit_io(name: &'static str) -> io::Result<()> {
    if enabled() {
        hit_io_slow(name)
    } else {
        Ok(())
    }
}

#[cold]
fn hit_io_slow(name: &'static str) -> io::Result<()> {
    match global() {
        Some(fp) => fp.run(name, true),
        None => Ok(()),
    }
}

/// Whether the state point `name` is on: its current term is `return`. Counts no hit, logs nothing
/// (it is asked for every peer message).
#[inline]
pub fn is_on(name: &'static str) -> bool {
    enabled() && global().is_some_and(|fp| fp.is_on(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(start: &str) -> Failpoints {
        Failpoints::new(Registry::parse(start).unwrap())
    }

    #[test]
    fn counted_terms_hand_over_in_order() {
        let r = layers("a=2*off->1*return->print; b = return(EIO)");
        assert_eq!(r.names(), ["a", "b"]);
        assert!(r.run("a", true).is_ok());
        assert!(r.run("a", true).is_ok());
        let e = r.run("a", true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        assert!(e.to_string().contains("No space left on device"), "{e}");
        // `print` has no count: it applies from now on.
        for _ in 0..5 {
            assert!(r.run("a", true).is_ok());
        }
        assert_eq!(r.run("b", true).unwrap_err().raw_os_error(), Some(EIO));
        assert!(
            r.run("b", false).is_ok(),
            "return is ignored at plain points"
        );
        assert!(r.run("unconfigured", true).is_ok());
    }

    #[test]
    fn exhausted_point_does_nothing() {
        let r = layers("a=1*return");
        assert!(r.run("a", true).is_err());
        assert!(r.run("a", true).is_ok());
    }

    #[test]
    fn sleep_and_panic() {
        let r = layers("s=sleep(1);p=panic");
        assert!(r.run("s", true).is_ok());
        let caught = std::panic::catch_unwind(|| r.run("p", false));
        assert!(caught.is_err());
    }

    #[test]
    fn parse_errors_name_the_term() {
        for bad in [
            "nameonly",
            "=off",
            "a b=off",
            "a=explode",
            "a=x*off",
            "a=sleep",
            "a=sleep(abc)",
            "a=sleep(5",
            "a=50%panic",
            "a=return(EBADF)",
        ] {
            let e = Registry::parse(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid HEARTH_FAILPOINTS"),
                "{e}"
            );
        }
        assert!(Registry::parse("").unwrap().names().is_empty());
        assert!(Registry::parse(" ; ").unwrap().names().is_empty());
        let r = Registry::parse("a=sleep(\"7\")").unwrap();
        assert_eq!(
            r.next("a"),
            Some(Some(Action::Sleep(Duration::from_millis(7))))
        );
    }

    #[test]
    fn run_time_layer_takes_precedence_and_falls_back() {
        let fp = layers("a=return;b=return");
        assert!(fp.is_on("a") && fp.is_on("b"));
        fp.rearm(Registry::parse("a=off;c=2*return->off").unwrap());
        assert_eq!(fp.names(), ["a", "b", "c"]);
        assert!(!fp.is_on("a"), "the file's terms win");
        assert!(
            fp.is_on("b"),
            "a point the file does not name keeps its start terms"
        );
        // Asking counts no hit; hitting does.
        assert!(fp.is_on("c") && fp.is_on("c"));
        assert!(fp.run("c", true).is_err());
        assert!(fp.run("c", true).is_err());
        assert!(!fp.is_on("c"));
        fp.rearm(Registry::default());
        assert!(
            fp.is_on("a"),
            "an emptied file gives the point back to the start terms"
        );
    }

    #[test]
    fn pause_holds_until_the_point_is_rearmed() {
        let fp = std::sync::Arc::new(layers("p=pause"));
        let (tx, rx) = std::sync::mpsc::channel();
        let held = fp.clone();
        let t = std::thread::spawn(move || {
            held.run("p", false).unwrap();
            tx.send(()).unwrap();
        });
        // Re-arming with pause again keeps it held.
        fp.rearm(Registry::parse("p=pause").unwrap());
        assert!(rx.try_recv().is_err());
        fp.rearm(Registry::parse("p=off").unwrap());
        rx.recv().unwrap();
        t.join().unwrap();
    }

    #[test]
    fn malformed_file_content_keeps_the_previous_arming() {
        let fp = layers("");
        assert!(rearm_from(&fp, Path::new("f"), "x=return"));
        assert!(!rearm_from(&fp, Path::new("f"), "x=explode"));
        assert!(fp.is_on("x"));
        assert!(rearm_from(&fp, Path::new("f"), ""));
        assert!(!fp.is_on("x"));
    }

    #[test]
    fn global_is_off_without_the_variable() {
        // The test runner never sets the variable for this crate's tests.
        if std::env::var_os(ENV).is_none() && std::env::var_os(FILE_ENV).is_none() {
            assert_eq!(init().unwrap(), Vec::<String>::new());
            assert!(!enabled());
            hit("raftBeforeSave");
            assert!(hit_io("walBeforeSync").is_ok());
            assert!(!is_on("blackholePeerNetwork"));
        }
    }
}
