//! Child processes of the tests: spawning a long-lived child that dies with the test process,
//! waiting with a timeout, stopping with a grace period, and hooks that run at exit.
//!
//! Not here: what the processes are (see `server` and `mount`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Sends `sig` to `child` unless it has already been reaped (so never to a recycled PID).
pub fn signal(child: &mut Child, sig: i32) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: plain kill(2) on a child of ours that has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; returns once the child is reaped.
pub fn terminate(child: &mut Child, grace: Duration) {
    signal(child, libc::SIGTERM);
    if wait_timeout(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Whether `program args` runs here and exits 0.
pub fn command_works(program: &str, args: &[&str]) -> bool {
    quiet_status(Command::new(program).args(args))
}

/// Runs `cmd` with no input and no output and says whether it exited 0.
pub fn quiet_status(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Points `cmd`'s stdout and stderr at new files (files, not pipes: a daemon that keeps the
/// descriptors open must not hang a test that waits for the end of a pipe).
pub fn output_to_files(cmd: &mut Command, stdout: &Path, stderr: &Path) {
    cmd.stdin(Stdio::null())
        .stdout(File::create(stdout).expect("create stdout file"))
        .stderr(File::create(stderr).expect("create stderr file"));
}

/// The whole of a log file as text ("" if it cannot be read).
pub fn read_text(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// The last `lines` lines of `text`, framed with a title for a failure message.
pub fn tail_lines(title: &str, text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "--- {title}, last {} lines ---\n{}\n--- end ---",
        all.len() - start,
        all[start..].join("\n")
    )
}

/// A running child process owned by a keeper thread (see [`spawn_kept`]).
///
/// The process may only be signalled while the `Mutex<Child>` is held and `try_wait` says it
/// has not been reaped, so a signal can never reach a recycled PID.
pub struct KeptChild {
    pid: u32,
    child: Arc<Mutex<Child>>,
    /// Dropping this lets the keeper thread end.
    release: Option<mpsc::Sender<()>>,
}

impl KeptChild {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle for an exit hook; use it only with `try_lock`.
    pub fn shared(&self) -> Arc<Mutex<Child>> {
        self.child.clone()
    }

    pub fn has_exited(&self) -> Option<ExitStatus> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        c.try_wait().ok().flatten()
    }

    /// SIGTERM, a short grace period, then SIGKILL; waits until the process is reaped.
    pub fn stop(&mut self, grace: Duration) {
        {
            let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
            signal(&mut c, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.has_exited().is_none() {
            thread::sleep(Duration::from_millis(50));
        }
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(c);
        self.release.take();
    }
}

/// Spawns `make()`'s command from a dedicated thread that lives as long as the child is
/// wanted. The child gets SIGKILL when that thread ends (PR_SET_PDEATHSIG follows the thread
/// that forked, not the process), so a test thread that finishes cannot take a shared child
/// down, while a test process that dies takes it with it. The child also gets its own
/// process group, so a terminal's Ctrl-C reaches it only through the parent's death.
pub fn spawn_kept(make: impl FnOnce() -> Command + Send + 'static) -> io::Result<KeptChild> {
    let (result_tx, result_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("child-keeper".into())
        .spawn(move || {
            let mut cmd = make();
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setpgid(0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(child) => {
                    let _ = result_tx.send(Ok(Arc::new(Mutex::new(child))));
                    // Wait until released (the sender is dropped) or forever.
                    let _ = release_rx.recv();
                }
                Err(e) => {
                    let _ = result_tx.send(Err(e));
                }
            }
        })?;
    let child = result_rx
        .recv()
        .map_err(|_| io::Error::other("keeper thread died"))??;
    let pid = child.lock().unwrap().id();
    Ok(KeptChild {
        pid,
        child,
        release: Some(release_tx),
    })
}

/// What to do at exit for something that may never be dropped (the shared server). Hooks run
/// from `atexit`, so they must not block: take locks with `try_lock` only.
type ExitHook = Box<dyn FnOnce() + Send>;

fn exit_hooks() -> &'static Mutex<BTreeMap<u64, ExitHook>> {
    static HOOKS: OnceLock<Mutex<BTreeMap<u64, ExitHook>>> = OnceLock::new();
    HOOKS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

extern "C" fn run_exit_hooks() {
    let Ok(mut hooks) = exit_hooks().try_lock() else {
        return;
    };
    for (_, hook) in std::mem::take(&mut *hooks) {
        hook();
    }
}

/// Registers `hook` to run when the test process exits, under `id` (see [`cancel_at_exit`]).
pub fn at_exit(id: u64, hook: ExitHook) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(run_exit_hooks);
        }
    });
    exit_hooks().lock().unwrap().insert(id, hook);
}

/// Drops the exit hook registered under `id`, once its owner has cleaned up by itself.
pub fn cancel_at_exit(id: u64) {
    exit_hooks().lock().unwrap().remove(&id);
}
