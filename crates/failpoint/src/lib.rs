//! Failpoints: named places in the server where a robustness test can make the process crash, stall or
//! see an I/O error, named after etcd's gofail points so that etcd's robustness scenarios translate
//! one to one. The list of points and where they sit is in `docs/failpoints.md`.
//!
//! # Turning them on
//!
//! Only through the environment variable [`ENV`] (`HEARTH_FAILPOINTS`), read once, on the first
//! [`init`] or the first hit, whichever comes first. Nothing else (no flag, no RPC) can arm a
//! failpoint, so production, which never sets the variable, cannot trip one. Syntax (gofail's,
//! minus probabilities):
//!
//! ```text
//! HEARTH_FAILPOINTS='raftAfterSave=20*off->abort;beforeCommit=sleep(50)'
//! point   = name "=" term ("->" term)*
//! term    = [count "*"] action
//! action  = off | print | sleep(<ms>) | panic | abort | return[(ENOSPC|EIO)]
//! ```
//!
//! A term with a count applies to that many hits and then hands over to the next term; a term
//! without one applies forever. `20*off->abort` lets the point pass 20 times and aborts the process
//! at the 21st hit. `abort` is the simulated crash (`std::process::abort`: no destructors, no
//! flushing, exactly what a power cut leaves of the process's own state); `panic` panics the thread
//! that hit the point, which in Rust does not end the process. `return` matters only at points that
//! stand for an I/O operation ([`hit_io`]): the operation fails with that error (ENOSPC by default,
//! the full-disk case); at other points it does nothing.
//!
//! # Cost when off
//!
//! [`hit`] is one relaxed atomic load and a branch: the variable's verdict is cached in a static the
//! first time, and the registry behind it is never consulted while no point is configured. The
//! points stay compiled into every build, so the binary the tests crash is the binary that ships.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The environment variable that configures failpoints.
pub const ENV: &str = "HEARTH_FAILPOINTS";

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
static GLOBAL: OnceLock<Option<Registry>> = OnceLock::new();

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
}

/// A set of configured failpoints.
#[derive(Debug)]
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

    fn next(&self, name: &str) -> Option<Action> {
        self.lock().get_mut(name)?.next()
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

fn from_env() -> Result<Option<Registry>, ParseError> {
    match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => Registry::parse(&spec).map(Some),
        Ok(_) => Ok(None),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ParseError("not UTF-8".into())),
    }
}

fn publish(reg: Option<Registry>) -> Option<&'static Registry> {
    let reg = GLOBAL.get_or_init(|| reg).as_ref();
    STATE.store(if reg.is_some() { ON } else { OFF }, Ordering::Release);
    reg
}

/// Reads [`ENV`] (once per process) and returns the names of the configured failpoints. The server
/// calls it at start so that a malformed value stops it with an error instead of being ignored.
pub fn init() -> Result<Vec<String>, ParseError> {
    if let Some(reg) = GLOBAL.get() {
        return Ok(reg.as_ref().map(Registry::names).unwrap_or_default());
    }
    let reg = from_env()?;
    Ok(publish(reg).map(Registry::names).unwrap_or_default())
}

#[cold]
fn init_lazily() -> Option<&'static Registry> {
    if let Some(reg) = GLOBAL.get() {
        return reg.as_ref();
    }
    match from_env() {
        Ok(reg) => publish(reg),
        Err(e) => {
            eprintln!("{e}; failpoints stay off");
            publish(None)
        }
    }
}

fn registry() -> Option<&'static Registry> {
    match STATE.load(Ordering::Acquire) {
        OFF => None,
        ON => GLOBAL.get().and_then(Option::as_ref),
        _ => init_lazily(),
    }
}

/// Whether any failpoint is configured.
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => init_lazily().is_some(),
    }
}

/// Failpoint `name`: may sleep, panic or abort the process, as configured.
#[inline]
pub fn hit(name: &'static str) {
    if enabled() {
        hit_slow(name);
    }
}

#[cold]
fn hit_slow(name: &'static str) {
    if let Some(reg) = registry() {
        let _ = reg.run(name, false);
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
    match registry() {
        Some(reg) => reg.run(name, true),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_terms_hand_over_in_order() {
        let r = Registry::parse("a=2*off->1*return->print; b = return(EIO)").unwrap();
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
        let r = Registry::parse("a=1*return").unwrap();
        assert!(r.run("a", true).is_err());
        assert!(r.run("a", true).is_ok());
    }

    #[test]
    fn sleep_and_panic() {
        let r = Registry::parse("s=sleep(1);p=panic").unwrap();
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
        assert_eq!(r.next("a"), Some(Action::Sleep(Duration::from_millis(7))));
    }

    #[test]
    fn global_is_off_without_the_variable() {
        // The test runner never sets the variable for this crate's tests.
        if std::env::var_os(ENV).is_none() {
            assert_eq!(init().unwrap(), Vec::<String>::new());
            assert!(!enabled());
            hit("raftBeforeSave");
            assert!(hit_io("walBeforeSync").is_ok());
        }
    }
}
