//! Where generated programs run. In order of preference:
//! - `Bwrap`: bubblewrap with every namespace unshared (no network, own PID namespace, no
//!   IPC), all capabilities dropped, uid 65534, read-only system folders and Python, an empty
//!   private /tmp, no home and a cleared environment. Dies with graft.
//! - `Namespaces`: `unshare -rn -pf --kill-child`: no network and its own PID namespace (every
//!   process the program starts dies with it), but the file system is the user's own.
//! - `Limits`: resource limits and a process group only; the network is open, so it is used
//!   only when the user passed `--allow-network`.
//!
//! Every kind also gets resource limits set before exec and its own process group. When graft
//! runs as root, the program runs as uid/gid 65534 (nobody): the kernel exempts root from
//! RLIMIT_NPROC, so only then does the process limit stop a fork bomb.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    Bwrap,
    Namespaces,
    Limits,
}

/// The real interpreter (a pyenv shim or a venv's link cannot run with a cleared
/// environment or outside its home) and the prefix holding its standard library.
#[derive(Debug, Clone)]
pub struct Python {
    pub exe: PathBuf,
    pub prefix: PathBuf,
}

/// The user programs run as: nobody when graft is root, else graft's own user.
pub fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail.
    (unsafe { libc::geteuid() } == 0).then_some((65534, 65534))
}

/// Sets resource limits, then leaves root (run between fork and exec: only async-signal-safe
/// calls).
pub fn enter(limits: &[(libc::__rlimit_resource_t, u64)]) -> std::io::Result<()> {
    for &(res, v) in limits {
        let r = libc::rlimit {
            rlim_cur: v as libc::rlim_t,
            rlim_max: v as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some((uid, gid)) = run_as() {
        // SAFETY: plain syscalls; the group list is emptied before the ids change.
        let failed = unsafe {
            libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
        };
        if failed {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The interpreter programs run with, resolved once: `python3` on PATH when the program's
/// user can run it, else the system's /usr/bin/python3 (a pyenv under /root is not
/// reachable for nobody).
pub fn python() -> Option<&'static Python> {
    static PY: OnceLock<Option<Python>> = OnceLock::new();
    PY.get_or_init(|| {
        let on_path = probe(Command::new("python3"), false).map(|p| p.exe);
        let candidates = on_path
            .into_iter()
            .chain([PathBuf::from("/usr/bin/python3")]);
        candidates
            .into_iter()
            .find_map(|exe| probe(Command::new(exe), true))
    })
    .as_ref()
}

fn probe(mut cmd: Command, as_program_user: bool) -> Option<Python> {
    cmd.args([
        "-I",
        "-c",
        "import sys; print(sys.executable); print(sys.base_prefix)",
    ])
    .stdin(Stdio::null())
    .stderr(Stdio::null());
    if as_program_user {
        use std::os::unix::process::CommandExt;
        cmd.env_clear();
        // SAFETY: enter() makes only async-signal-safe calls.
        unsafe { cmd.pre_exec(|| enter(&[])) };
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let exe = PathBuf::from(lines.next()?);
    let prefix = PathBuf::from(lines.next()?);
    (exe.is_absolute() && prefix.is_absolute()).then_some(Python { exe, prefix })
}

impl Sandbox {
    /// The most isolating kind that works here; without network isolation, an error unless
    /// `allow_network`.
    pub fn detect(allow_network: bool) -> Result<Sandbox, String> {
        if Sandbox::Bwrap.works() {
            return Ok(Sandbox::Bwrap);
        }
        if Sandbox::Namespaces.works() {
            return Ok(Sandbox::Namespaces);
        }
        match allow_network {
            true => Ok(Sandbox::Limits),
            false => Err(
                "generated code cannot be cut off from the network here (neither \
                 `bwrap` nor `unshare -rn` works): install bubblewrap, or pass \
                 --allow-network to run it with the network open"
                    .into(),
            ),
        }
    }

    /// Whether this kind can start a program here (probed once per kind).
    pub fn works(self) -> bool {
        static PROBES: [OnceLock<bool>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        *PROBES[self as usize].get_or_init(|| {
            let Some(py) = python() else { return false };
            use std::os::unix::process::CommandExt;
            let dir = std::env::temp_dir();
            let mut cmd = self.command(py, &dir, &["-c", "pass"]);
            // SAFETY: enter() makes only async-signal-safe calls.
            unsafe { cmd.pre_exec(|| enter(&[])) };
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// The command running `py` with `args` inside this sandbox; `dir` holds the program and
    /// is shown read-only at /sandbox under bubblewrap. The caller runs `enter` before exec.
    pub fn command(self, py: &Python, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = match self {
            Sandbox::Bwrap => bwrap(py, dir),
            Sandbox::Namespaces => {
                let mut c = Command::new("unshare");
                c.args(["-r", "-n", "-p", "-f", "--kill-child", "--mount-proc"]);
                c.arg(&py.exe);
                c.current_dir(dir);
                c
            }
            Sandbox::Limits => {
                let mut c = Command::new(&py.exe);
                c.current_dir(dir);
                c
            }
        };
        cmd.arg("-I").args(args);
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        cmd
    }

    /// The folder the program's files appear in, as the sandboxed process sees it.
    pub fn dir_inside(self, dir: &Path) -> PathBuf {
        match self {
            Sandbox::Bwrap => PathBuf::from("/sandbox"),
            _ => dir.to_path_buf(),
        }
    }
}

fn bwrap(py: &Python, dir: &Path) -> Command {
    let mut c = Command::new("bwrap");
    c.args([
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]);
    c.args(["--cap-drop", "ALL"]);
    c.args(["--setenv", "PATH", "/usr/bin:/bin"]);
    c.args(["--ro-bind", "/usr", "/usr"]);
    for d in ["/bin", "/lib", "/lib64", "/lib32", "/sbin"] {
        c.args(["--ro-bind-try", d, d]);
    }
    if !py.prefix.starts_with("/usr") {
        c.arg("--ro-bind").arg(&py.prefix).arg(&py.prefix);
    }
    if let Some(bin) = py.exe.parent().filter(|b| !b.starts_with(&py.prefix)) {
        c.arg("--ro-bind").arg(bin).arg(bin);
    }
    c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    c.arg("--ro-bind").arg(dir).arg("/sandbox");
    c.args(["--chdir", "/tmp", "--"]);
    c.arg(&py.exe);
    c
}
